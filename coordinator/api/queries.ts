/** Read-side helpers over the state tables: agent filters, desired configs, per-config summaries. */
import { CommandError } from '../domain/commands.js';
import type { AgentRow, StateStore } from '../domain/state.js';
import type { SqliteStateStore } from '../domain/sqlite-state.js';

export interface WhereClause {
  path: string[];
  value: string;
}

const WHERE = /^([A-Za-z0-9_.\/-]+)=(.*)$/;

/** Parses `--where key=value` clauses (`system=aarch64-linux`, `labels.site=barn-3`, `facts.cpus=4`). */
export function parseWhere(clauses: readonly string[]): WhereClause[] {
  return clauses.map((clause) => {
    const match = WHERE.exec(clause);
    if (!match) throw new CommandError('INVALID', `--where '${clause}' is not key=value`);
    return { path: match[1]!.split('.'), value: match[2]! };
  });
}

function lookup(value: unknown, path: readonly string[]): unknown {
  let current = value;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/**
 * Agents matching every clause. A clause names an agent field (`status`,
 * `type`, `name`, `system`…), a label (`labels.k`), or a reported fact
 * (`facts.k`, or just `k` when it is not an agent field).
 */
export function listAgents(state: SqliteStateStore, where: readonly WhereClause[]): AgentRow[] {
  return state.all('agents').filter((agent) => {
    const facts = where.length > 0 ? state.get('agentFacts', `${agent.id}#${agent.factsRevision}`)?.facts : undefined;
    return where.every(({ path, value }) => {
      let found: unknown;
      if (path[0] === 'facts') found = lookup(facts, path.slice(1));
      else if (path[0] === 'labels') found = lookup(agent.labels, path.slice(1));
      else if (path.length === 1 && path[0]! in agent) found = (agent as Record<string, unknown>)[path[0]!];
      else found = lookup(facts, path);
      return found !== undefined && found !== null && String(found) === value;
    });
  });
}

/** The config an agent should run: its pin, else the head of the graph it follows. */
export function desiredConfigOf(state: StateStore, agent: AgentRow): string | null {
  if (agent.pinnedConfig) return agent.pinnedConfig;
  if (agent.desiredGraph) return state.get('graphs', agent.desiredGraph)?.head ?? null;
  return null;
}

export interface ConfigSummary {
  succeeded: number;
  failed: number;
  pending: number;
  unreported: number;
}

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
