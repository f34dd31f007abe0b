/**
 * The fleet's vocabulary on the wire: roles, labels, facts and deployment
 * phases. One schema each, for the API's inputs and replies (api/routes.ts)
 * and for the audit events that record them (coordinator/domain/events.ts
 * re-exports these), so what an agent may send and what the log accepts
 * on replay cannot drift apart.
 */
import { z } from 'zod';
import { SystemSchema } from '../config.js';
import { jsonBoundsViolation, MAX_FACTS_DEPTH, MAX_FACTS_JSON_LENGTH, MAX_STORED_JSON_DEPTH, stringifyJson } from '../json-bounds.js';

/** `relay`: a site relay (docs/relays.md), enrolled with a relay token, never added as a key. */
export const RoleSchema = z.enum(['admin', 'operator', 'pusher', 'viewer', 'agent', 'relay']);
export type Role = z.infer<typeof RoleSchema>;
/** Who an event is attributed to: a key's role, or the coordinator itself. */
export const ActorRoleSchema = z.union([RoleSchema, z.literal('coordinator')]);
export type ActorRole = z.infer<typeof ActorRoleSchema>;

const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._\/-]{0,62}$/;
/** A label's key: 1-63 of [A-Za-z0-9._/-], starting with a letter or digit. */
export const LabelKeySchema = z.string().regex(LABEL_KEY, 'label keys are 1-63 of [A-Za-z0-9._/-]');
export const LabelsSchema = z
  .record(LabelKeySchema, z.string().max(256))
  .refine((labels) => Object.keys(labels).length <= 64, 'at most 64 labels');


/** The fields of an agent's facts: a few well-known ones, validated, plus custom ones (free-form JSON). */
const FactsFieldsSchema = z
  .object({
    system: SystemSchema,
    hostname: z.string().min(1).max(253),
    os: z.string().max(256).optional(),
    kernel: z.string().max(256).optional(),
    cpus: z.number().int().min(1).max(4096).optional(),
    memoryBytes: z.number().int().nonnegative().optional(),
    diskBytes: z.number().int().nonnegative().optional(),
    machineId: z.string().max(64).optional(),
    addresses: z.array(z.string().max(64)).max(64).optional(),
    agentVersion: z.string().max(64).optional(),
    /** How many generations the agent keeps when it collects garbage after a deployment (`agent run --keep-generations`). */
    keepGenerations: z.number().int().min(1).max(10_000).optional(),
    labels: LabelsSchema.optional(),
  })
  .catchall(z.unknown());

/**
 * What is wrong with the bounds of `facts`, if anything: nesting first,
 * with the iterative check (stops at maxDepth), then the size, measured by
 * encoding them, which is safe only once the depth is known to be bounded.
 */
function factsBoundsIssue(facts: Record<string, unknown>, maxDepth: number): string | undefined {
  const violation = jsonBoundsViolation(facts, { maxDepth });
  if (violation) return violation.message;
  if (stringifyJson(facts).length > MAX_FACTS_JSON_LENGTH) return `facts are limited to ${MAX_FACTS_JSON_LENGTH / 1024} KiB of JSON`;
  return undefined;
}

/** Facts as an agent reports them (enrollment, facts reports): at most MAX_FACTS_DEPTH deep and MAX_FACTS_JSON_LENGTH of JSON. */
export const FactsSchema = FactsFieldsSchema.superRefine((facts, context) => {
  const issue = factsBoundsIssue(facts, MAX_FACTS_DEPTH);
  if (issue) context.addIssue({ code: 'custom', message: issue });
});

/**
 * Facts as events record them (agent.enroll, agent.facts), checked on
 * replay and in exported logs: the same fields and size, nested up to
 * MAX_STORED_JSON_DEPTH rather than MAX_FACTS_DEPTH, because logs recorded
 * before that bound hold deeper facts, and a log must always replay.
 */
export const RecordedFactsSchema = FactsFieldsSchema.superRefine((facts, context) => {
  const issue = factsBoundsIssue(facts, MAX_STORED_JSON_DEPTH);
  if (issue) context.addIssue({ code: 'custom', message: issue });
});
export type Facts = z.infer<typeof FactsSchema>;
/** Facts as an agent sends them (what FactsSchema accepts). */
export type ReportedFacts = z.input<typeof FactsSchema>;

/**
 * How an agent's running config fares under its periodic health check
 * (a config's `health.intervalSeconds`): `degraded` once the check failed
 * `unhealthyAfter` times in a row, `healthy` again after it passes.
 */
export const HealthSchema = z.enum(['healthy', 'degraded']);
export type Health = z.infer<typeof HealthSchema>;
/** Presence as the audit log records it: going offline and coming back (stale is derived only, never an event). */
export const RecordedPresenceSchema = z.enum(['online', 'offline']);
export type RecordedPresence = z.infer<typeof RecordedPresenceSchema>;

/** `stopped`: told to stop (`agents assign … --none --stop`), the agent ran the config's deactivate command and has no generation active. */
export const PhaseSchema = z.enum(['pending', 'fetching', 'activating', 'active', 'failed', 'rolled-back', 'stopped']);
export type Phase = z.infer<typeof PhaseSchema>;
/** Where an agent stands with the coordinator: waiting for approval, admitted, refused, or no longer admitted. */
export const AgentStatusSchema = z.enum(['enrolling', 'enrolled', 'rejected', 'revoked']);
export type AgentStatus = z.infer<typeof AgentStatusSchema>;
/** Where an agent got the config it reports on, when not from the coordinator's desired answer. */
export const ReportSourceSchema = z.literal('bundle');
