/** Read-side helpers over the state tables: agent filters, desired configs, per-config summaries. */
import { clauseHolds, lookupPath, type WhereClause } from '../domain/selectors.js';
import type { AgentRow, StateStore } from '../domain/state.js';
import { rolloutConfigFor } from '../domain/rollouts.js';
import type { SqliteStateStore } from '../domain/sqlite-state.js';
import { type ConfigSummary } from '../../protocol/api/views.js';

export { parseWhere, type WhereClause } from '../domain/selectors.js';

/**
 * Agents matching every clause: an agent field, an operator label
 * (`labels.k`: only the labels operators gave, never facts.labels), a
 * reported fact (`facts.k`) of the agent's latest facts revision, or its
 * presence as `presenceOf` says it now.
 */
export function listAgents(state: SqliteStateStore, where: readonly WhereClause[], presenceOf: (agentId: string) => string): AgentRow[] {
  return state.all('agents').filter((agent) => agentMatches(state, agent, where, presenceOf));
}

/** Whether `agent` matches every clause (listAgents' test, for one agent: an alert's `--where`). */
export function agentMatches(state: StateStore, agent: AgentRow, where: readonly WhereClause[], presenceOf: (agentId: string) => string): boolean {
  const facts = where.some((clause) => clause.source === 'facts') ? state.get('agentFacts', `${agent.id}#${agent.factsRevision}`)?.facts : undefined;
  return where.every((clause) => {
    if (clause.source === 'presence') return clauseHolds(clause, presenceOf(agent.id));
    return clauseHolds(clause, lookupPath(clause.source === 'facts' ? facts : clause.source === 'labels' ? agent.labels : agent, clause.path));
  });
}

/**
 * The config an agent should run: its pin, else the head of the graph it
 * follows as a staged rollout of that head lets it (domain/rollouts.ts
 * rolloutConfigFor: the head once released, else the rollout's base).
 */
export function desiredConfigOf(state: StateStore, agent: AgentRow): string | null {
  if (agent.pinnedConfig) return agent.pinnedConfig;
  if (!agent.desiredGraph) return null;
  const graph = state.get('graphs', agent.desiredGraph);
  return graph ? rolloutConfigFor(state, graph, agent.id) : null;
}

/** How the agents that should run a config are doing: a wire shape (configs.show, graphs.show answer it). */
export type { ConfigSummary };

/**
 * Where an enrolled agent that should run `configId` stands in that
 * config's summary. Running it counts as succeeded, also after rolling back
 * to it from a later config that failed.
 */
export function configOutcome(agent: AgentRow, configId: string): keyof ConfigSummary {
  if (agent.currentConfig === configId && (agent.phase === 'active' || agent.phase === 'rolled-back')) return 'succeeded';
  if (agent.phase === 'failed' || agent.phase === 'rolled-back') return 'failed';
  if (agent.phase === null) return 'unreported';
  return 'pending';
}

/** How the agents that should run `configId` are doing. */
export function summarizeConfig(state: SqliteStateStore, configId: string): ConfigSummary {
  const summary: ConfigSummary = { succeeded: 0, failed: 0, pending: 0, unreported: 0 };
  for (const agent of state.all('agents')) {
    if (agent.status !== 'enrolled' || desiredConfigOf(state, agent) !== configId) continue;
    summary[configOutcome(agent, configId)]++;
  }
  return summary;
}
