/**
 * The fleet as the viewer and `ferry audit replay` show it at one position:
 * agents (status, facts, desired and current config, phase), graphs (head,
 * configs, head moves), and per-config aggregates of how the agents that
 * should run each config are doing. Computed from replayed state tables with
 * the API's own read helpers (desiredConfigOf, configOutcome), so the viewer
 * counts exactly as `ferry config show` does.
 */
import { configOutcome, desiredConfigOf, type ConfigSummary } from '../api/queries.js';
import type { AgentRow, ConfigRow, MemoryStateStore } from '../domain/state.js';
import type { ConfigAggregate, FleetAgent, FleetConfig, FleetGraph, FleetView, TimelineEntry } from '../../protocol/api/viewer-views.js';

export interface FleetViewOptions {
  /** Agents to skip / to show (default: all). */
  agentOffset?: number;
  agentLimit?: number | null;
  /** Only agents whose name contains it, whose id starts with it, or whose status, phase or graph it is. */
  agentQuery?: string;
  /** Configs and head moves per graph (default: all). */
  historyLimit?: number | null;
  /** Config aggregates, keys and tokens (default: all). */
  listLimit?: number | null;
}

function configView(config: ConfigRow, head: boolean): FleetConfig {
  const body = config.body as { message?: unknown; author?: unknown; targets?: unknown };
  return {
    id: config.id,
    graph: config.graph,
    seq: config.seq,
    parents: config.parents,
    forced: config.forced,
    message: typeof body.message === 'string' ? body.message : '',
    author: typeof body.author === 'string' ? body.author : '',
    targets: body.targets && typeof body.targets === 'object' ? (body.targets as Record<string, string>) : {},
    head,
  };
}

function agentMatches(agent: AgentRow, query: string): boolean {
  const q = query.toLowerCase();
  return agent.name.toLowerCase().includes(q) || agent.id.startsWith(q) || agent.status === q || agent.phase === q || agent.desiredGraph === q;
}

const limited = <T>(items: T[], limit: number | null | undefined): T[] => (limit === null || limit === undefined ? items : items.slice(0, limit));

/**
 * The view of `store` (the state at some position). `headMovesOf` lists a
 * graph's head moves up to that position (ReplayIndex.headMovesOf).
 * Reads the store's rows without changing them.
 */
export function fleetView(store: MemoryStateStore, headMovesOf: (graph: string, limit: number) => TimelineEntry[], options: FleetViewOptions = {}): FleetView {
  const { tables } = store;
  const agents = [...tables.agents.values()].sort((a, b) => a.enrolledSeq - b.enrolledSeq || (a.id < b.id ? -1 : 1));
  const agentsByStatus: Record<string, number> = {};
  const summaries = new Map<string, ConfigSummary>();
  const desired = new Map<string, string | null>();
  for (const agent of agents) {
    agentsByStatus[agent.status] = (agentsByStatus[agent.status] ?? 0) + 1;
    const configId = desiredConfigOf(store, agent);
    desired.set(agent.id, configId);
    if (agent.status !== 'enrolled' || configId === null) continue;
    const summary = summaries.get(configId) ?? { succeeded: 0, failed: 0, pending: 0, unreported: 0 };
    summary[configOutcome(agent, configId)]++;
    summaries.set(configId, summary);
  }
  const matching = options.agentQuery ? agents.filter((agent) => agentMatches(agent, options.agentQuery!)) : agents;
  const offset = Math.max(0, options.agentOffset ?? 0);
  const page = options.agentLimit === null || options.agentLimit === undefined ? matching.slice(offset) : matching.slice(offset, offset + options.agentLimit);
  const rows: FleetAgent[] = page.map((agent) => ({
    id: agent.id,
    name: agent.name,
    type: agent.type,
    status: agent.status,
    labels: agent.labels,
    system: agent.system,
    desiredGraph: agent.desiredGraph,
    pinnedConfig: agent.pinnedConfig,
    desiredConfig: desired.get(agent.id) ?? null,
    currentConfig: agent.currentConfig,
    phase: agent.phase,
    lastError: agent.lastError,
    health: agent.health,
    healthReason: agent.healthReason,
    healthConfig: agent.healthConfig,
    healthAt: agent.healthAt,
    recordedPresence: agent.recordedPresence,
    retrySeq: agent.retrySeq,
    stopRequested: agent.stopRequested,
    control: agent.control,
    rule: agent.rule,
    factsRevision: agent.factsRevision,
    facts: store.get('agentFacts', `${agent.id}#${agent.factsRevision}`)?.facts ?? null,
    enrolledSeq: agent.enrolledSeq,
    updatedSeq: agent.updatedSeq,
  }));

  const heads = new Set([...tables.graphs.values()].map((graph) => graph.head));
  const byGraph = new Map<string, ConfigRow[]>();
  for (const config of tables.configs.values()) {
    const list = byGraph.get(config.graph) ?? [];
    list.push(config);
    byGraph.set(config.graph, list);
  }
  const historyLimit = options.historyLimit ?? null;
  const graphs: FleetGraph[] = [...tables.graphs.values()]
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map((graph) => {
      const configs = (byGraph.get(graph.id) ?? []).sort((a, b) => b.seq - a.seq);
      return {
        id: graph.id,
        head: graph.head,
        updatedSeq: graph.updatedSeq,
        configCount: configs.length,
        history: limited(configs, historyLimit).map((config) => configView(config, config.id === graph.head)),
        headMoves: headMovesOf(graph.id, historyLimit ?? Number.MAX_SAFE_INTEGER).map((entry) => ({
          seq: entry.seq,
          wallTime: entry.wallTime,
          action: entry.action,
          from: entry.headMove!.from,
          to: entry.headMove!.to,
        })),
      };
    });

  const aggregated = new Set([...summaries.keys(), ...heads]);
  const aggregates: ConfigAggregate[] = [...aggregated]
    .map((id) => tables.configs.get(id))
    .filter((config): config is ConfigRow => config !== undefined)
    .sort((a, b) => b.seq - a.seq)
    .map((config) => ({ ...configView(config, heads.has(config.id)), summary: summaries.get(config.id) ?? { succeeded: 0, failed: 0, pending: 0, unreported: 0 } }));

  return {
    counts: {
      keys: tables.keys.size,
      tokens: tables.tokens.size,
      agents: tables.agents.size,
      agentFacts: tables.agentFacts.size,
      graphs: tables.graphs.size,
      configs: tables.configs.size,
      agentsByStatus,
    },
    agents: { total: agents.length, matching: matching.length, offset, rows },
    graphs,
    configs: { total: aggregates.length, rows: limited(aggregates, options.listLimit) },
    keys: limited([...tables.keys.values()].sort((a, b) => a.addedSeq - b.addedSeq), options.listLimit),
    tokens: limited(
      [...tables.tokens.values()].sort((a, b) => a.createdSeq - b.createdSeq).map(({ secretHash: _hidden, ...token }) => token),
      options.listLimit,
    ),
  };
}
