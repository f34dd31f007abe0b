/** Read-side helpers over the state tables: agent filters, desired configs, per-config summaries. */
import { getTableColumns } from 'drizzle-orm';
import { agents } from '../db/schema.js';
import { FerryError } from '../../protocol/errors.js';
import type { AgentRow, StateStore } from '../domain/state.js';
import { rolloutConfigFor } from '../domain/rollouts.js';
import type { SqliteStateStore } from '../domain/sqlite-state.js';
import { PresenceSchema, type ConfigSummary } from '../../protocol/api/views.js';

/**
 * One `--where` clause, by where its value comes from:
 * - `agent`: a field the coordinator keeps (`status`, `name`, `system`…);
 * - `labels`: an operator label, given by the enrollment token — the agent
 *   cannot set these, so they are what deployments target;
 * - `facts`: what the agent reports about itself (`facts.cpus`,
 *   `facts.labels.site`): selectable, but only when the clause says so;
 * - `presence`: online, stale or offline, derived now (db/agent-presence.ts).
 */
export interface WhereClause {
  source: 'agent' | 'labels' | 'facts' | 'presence';
  path: string[];
  value: string;
}

const WHERE = /^([A-Za-z0-9_.\/-]+)=(.*)$/;

/** Fields a clause may name on their own: the agents table's columns, but `labels` (it needs a key). */
const AGENT_FIELDS: ReadonlySet<string> = new Set(Object.keys(getTableColumns(agents)).filter((field) => field !== 'labels'));

/**
 * Parses `--where key=value` clauses (`system=aarch64-linux`,
 * `labels.site=barn-3`, `facts.cpus=4`). Refuses (INVALID) a clause that is
 * not key=value, and a bare key that is no agent field: it used to fall back
 * to the agent's facts, so `site=prod` could select machines that merely
 * claim it; now the clause says `labels.site` (the operator's) or
 * `facts.site` (the agent's word). A label key may contain dots
 * (`labels.example.com/site`): everything after `labels.` is the key.
 */
export function parseWhere(clauses: readonly string[]): WhereClause[] {
  return clauses.map((clause) => {
    const match = WHERE.exec(clause);
    if (!match) throw new FerryError('INVALID', `--where '${clause}' is not key=value`);
    const key = match[1]!;
    const value = match[2]!;
    const [head, ...rest] = key.split('.');
    if ((head === 'labels' || head === 'facts') && rest.length > 0 && rest.every((part) => part !== '')) {
      return head === 'labels' ? { source: 'labels', path: [rest.join('.')], value } : { source: 'facts', path: rest, value };
    }
    if (key === 'presence') {
      if (!PresenceSchema.safeParse(value).success) throw new FerryError('INVALID', `--where '${clause}': presence is ${PresenceSchema.options.join(', ')}`);
      return { source: 'presence', path: [], value };
    }
    if (rest.length === 0 && AGENT_FIELDS.has(key)) return { source: 'agent', path: [key], value };
    throw new FerryError(
      'INVALID',
      `--where '${clause}': '${key}' is not an agent field (${[...AGENT_FIELDS, 'presence'].join(', ')}); ` +
        `name an operator label (labels.${key}=…) or a fact the agent reports (facts.${key}=…)`,
    );
  });
}

function lookup(value: unknown, path: readonly string[]): unknown {
  let current = value;
  for (const key of path) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

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
  return where.every(({ source, path, value }) => {
    if (source === 'presence') return presenceOf(agent.id) === value;
    const found = lookup(source === 'facts' ? facts : source === 'labels' ? agent.labels : agent, path);
    return found !== undefined && found !== null && String(found) === value;
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
