/**
 * What the targeting rules make of the fleet (docs/coordinator.md "Rules"):
 * rules are ordered; an agent under rule control is placed by the first
 * rule whose `--where` its operator labels match (the rule's graph, and its
 * pin if it has one); matching none, it follows nothing (it keeps running
 * what it runs, and gets nothing new). Pure functions of rows: the commands
 * (rule-commands.ts, commands.ts enrollAgent) turn their answers into
 * `agent.place` events, so replay applies recorded placements and never
 * re-derives them.
 */
import { FerryError } from '../../protocol/errors.js';
import type { KeyId } from '../../protocol/identity.js';
import type { ConfigId } from '../../protocol/config.js';
import type { EventDraft, FollowUp } from './events.js';
import { labelsMatch, parseWhere, type WhereClause } from './selectors.js';
import type { AgentRow, RuleRow } from './state.js';

/** A rule with its clauses parsed. */
export interface ParsedRule {
  row: RuleRow;
  where: WhereClause[];
}

/** Where the rules put an agent: a rule's name and what it says, or nothing (no rule matches). */
export interface Placement {
  rule: string | null;
  graph: string | null;
  configId: ConfigId | null;
}

const NOWHERE: Placement = { rule: null, graph: null, configId: null };

/**
 * A rule's clauses, parsed; refuses (INVALID) a clause that does not
 * parse, and one on anything but operator labels: an agent's facts and
 * fields (name, type, system) are its own word or change without an
 * operator, and a rule decides what a machine runs and so what it may read.
 */
export function parseRuleWhere(where: readonly string[]): WhereClause[] {
  const clauses = parseWhere(where);
  for (const clause of clauses) {
    if (clause.source !== 'labels') throw new FerryError('INVALID', `--where ${JSON.stringify(clause.text)}: a rule selects on operator labels only (labels.KEY…)`);
  }
  return clauses;
}

/**
 * The active rules, first tried first, parsed. Each parsed when it was
 * added; one that no longer does (a later, stricter parser) is left out:
 * it matches nothing rather than everything.
 */
export function orderedRules(rows: readonly RuleRow[]): ParsedRule[] {
  return rows
    .filter((row) => !row.removed)
    .sort((a, b) => a.position - b.position)
    .flatMap((row) => {
      try {
        return [{ row, where: parseRuleWhere(row.where) }];
      } catch {
        return [];
      }
    });
}

/** Where the first rule matching `labels` puts an agent (NOWHERE: none matches). */
export function placementFor(rules: readonly ParsedRule[], labels: Readonly<Record<string, string>>): Placement {
  const rule = rules.find((candidate) => labelsMatch(labels, candidate.where));
  return rule ? { rule: rule.row.id, graph: rule.row.follow, configId: rule.row.pin } : NOWHERE;
}

/** The agent.place event putting `agentId` at `placement`. */
export function placeDraft(agentId: string, placement: Placement): EventDraft<'agent.place'> {
  return { action: 'agent.place', subject: agentId, payload: { agentId: agentId as KeyId, ...placement } };
}

/** Whether the rules act on an agent: under rule control, and not refused or revoked (nothing is served to those). */
export function ruleControlled(agent: AgentRow): boolean {
  return agent.control === 'rules' && (agent.status === 'enrolled' || agent.status === 'enrolling');
}

/**
 * The agent.place follow-ups (recorded by the coordinator) that bring the
 * rule-controlled agents among `agents` to where `rules` put them, given
 * each one's labels (`labelsOf`: after a relabel, the new ones). Agents
 * already there get none.
 */
export function placementFollowUps(agents: readonly AgentRow[], rules: readonly ParsedRule[], labelsOf: (agent: AgentRow) => Readonly<Record<string, string>> = (agent) => agent.labels): FollowUp[] {
  const followUps: FollowUp[] = [];
  for (const agent of agents) {
    if (!ruleControlled(agent)) continue;
    const placement = placementFor(rules, labelsOf(agent));
    if (placement.rule === agent.rule && placement.graph === agent.desiredGraph && placement.configId === agent.pinnedConfig) continue;
    followUps.push({ by: 'coordinator', draft: placeDraft(agent.id, placement) });
  }
  return followUps;
}
