/**
 * Targeting rules on the wire (docs/coordinator.md "Rules"): their names
 * and bounds. A rule places the agents whose operator labels its `--where`
 * selects on a graph (optionally pinned to one of its configs); rules are
 * ordered and the first that matches an agent wins.
 */
import { z } from 'zod';
import { MAX_WHERE_CLAUSE_LENGTH, MAX_WHERE_CLAUSES } from './where.js';

/** Rule names: like graph names, 1-63 of [a-z0-9._-]. */
export const RuleNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'rule names are 1-63 of [a-z0-9._-]');
export type RuleName = z.infer<typeof RuleNameSchema>;

/** Rules at once: each is tried for every enrollment and relabel, and every rule change re-places the fleet. */
export const MAX_RULES = 64;

/** A rule's `--where`, as given (syntax checked by the coordinator's parser: coordinator/domain/selectors.ts). */
export const RuleWhereSchema = z
  .array(z.string().max(MAX_WHERE_CLAUSE_LENGTH, `a --where clause is at most ${MAX_WHERE_CLAUSE_LENGTH} characters`))
  .max(MAX_WHERE_CLAUSES, `at most ${MAX_WHERE_CLAUSES} --where clauses`);

/** The order of the rules after a change: every active rule's name, first tried first. */
export const RuleOrderSchema = z.array(RuleNameSchema).max(MAX_RULES);
