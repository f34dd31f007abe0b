/**
 * The fleet now, as the live page shows it: per graph, its head and the
 * head's rollout (counted as `ferry config show` counts, with the API's
 * own helpers, desiredConfigOf and configOutcome), with the phases,
 * presence and health of the agents it counts; per agent, presence and
 * last seen derived now (db/agent-presence.ts), health as last recorded,
 * and fetch progress as its last activity report said.
 *
 * Unlike the rest of the viewer this is not replayed from the log: the
 * coordinator's state tables, its presence and the agents' activity, read
 * now. `fleetNow` reads everything once; `liveFleetPage` cuts one client's
 * page from it, so a stream per browser costs a filter and a slice, not a
 * read of the fleet.
 */
import type { Coordinator } from '../coordinator.js';
import { agentActivities, type AgentActivity } from '../api/agent-activity.js';
import { readFleetAgents, type AgentReading } from '../api/fleet-reading.js';
import { configOutcome, type ConfigSummary } from '../api/queries.js';
import type { LiveAgent, LiveFleet, LiveGraph, LivePhase } from '../../protocol/api/viewer-views.js';
import type { Presence } from '../../protocol/api/views.js';

/** Graphs the live page lists, at most (by name); the count says how many more there are. */
export const MAX_LIVE_GRAPHS = 200;
/** Agents per page when the query names no limit. */
export const DEFAULT_LIVE_AGENT_LIMIT = 100;

/** One agent, with what is derived for it now and its last activity report. */
interface AgentNow extends AgentReading {
  activity: AgentActivity | undefined;
}

/** Everything the live page can show, read once (see liveFleetPage). */
export interface FleetNow {
  seq: number;
  at: number;
  thresholds: LiveFleet['thresholds'];
  /** In enrollment order, as the replayed fleet lists them. */
  agents: AgentNow[];
  counts: LiveFleet['counts'];
  graphs: LiveGraph[];
}

/** Which agents a client asks for (viewer-routes.ts LiveQuery). */
export interface LiveFleetQuery {
  agentOffset?: number | undefined;
  agentLimit?: number | undefined;
  agentQuery?: string | undefined;
}

const increment = <K extends string>(counts: Partial<Record<K, number>>, key: K): void => {
  counts[key] = (counts[key] ?? 0) + 1;
};

/**
 * Reads the coordinator's fleet now. Reads only; throws what the database
 * throws (a closed coordinator: the caller stops asking first).
 */
export function fleetNow(coordinator: Coordinator): FleetNow {
  const state = coordinator.state;
  const activities = agentActivities(coordinator);
  const agents: AgentNow[] = readFleetAgents(coordinator).map((agent) => ({ ...agent, activity: activities.get(agent.row.id) }));

  const counts: LiveFleet['counts'] = { agents: agents.length, byStatus: {}, byPresence: {}, byHealth: { healthy: 0, degraded: 0, unchecked: 0 } };
  /** Per config some enrolled agent should run: the agents it counts. */
  const byDesired = new Map<string, AgentNow[]>();
  const following = new Map<string, number>();
  for (const agent of agents) {
    increment(counts.byStatus, agent.row.status);
    if (agent.row.status !== 'enrolled') continue;
    increment(counts.byPresence, agent.presence);
    // The reducer forgets an agent's health when it runs another config: health speaks of the one running.
    counts.byHealth[agent.row.health ?? 'unchecked']++;
    if (agent.row.desiredGraph) following.set(agent.row.desiredGraph, (following.get(agent.row.desiredGraph) ?? 0) + 1);
    if (agent.desired === null) continue;
    const list = byDesired.get(agent.desired) ?? [];
    list.push(agent);
    byDesired.set(agent.desired, list);
  }

  const graphs: LiveGraph[] = state
    .all('graphs')
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map((graph) => {
      const head = state.get('configs', graph.head);
      const rollout: ConfigSummary = { succeeded: 0, failed: 0, pending: 0, unreported: 0 };
      const phases: Partial<Record<LivePhase, number>> = {};
      const presence: Partial<Record<Presence, number>> = {};
      const fetching = { agents: 0, bytesDone: 0, bytesTotal: 0 };
      let degraded = 0;
      for (const agent of byDesired.get(graph.head) ?? []) {
        rollout[configOutcome(agent.row, graph.head)]++;
        increment(phases, agent.row.phase ?? 'none');
        increment(presence, agent.presence);
        if (agent.row.health === 'degraded') degraded++;
        if (agent.row.phase === 'fetching') {
          fetching.agents++;
          if (agent.activity?.configId === graph.head) {
            fetching.bytesDone += agent.activity.bytesDone;
            fetching.bytesTotal += agent.activity.bytesTotal;
          }
        }
      }
      const message = (head?.body as { message?: unknown } | undefined)?.message;
      return {
        id: graph.id,
        head: graph.head,
        headSeq: head?.seq ?? 0,
        headMessage: typeof message === 'string' ? message : '',
        updatedSeq: graph.updatedSeq,
        following: following.get(graph.id) ?? 0,
        rollout,
        phases,
        presence,
        degraded,
        fetching,
      };
    });

  const { staleAfterMs, offlineAfterMs } = coordinator.presence.thresholds;
  return { seq: coordinator.audit.lastSeq, at: coordinator.now(), thresholds: { staleAfterMs, offlineAfterMs }, agents, counts, graphs };
}

/** Whether `agent` matches a query: a part of its name, a prefix of its id, or its status, phase, graph, presence or health. */
function agentMatches(agent: AgentNow, query: string): boolean {
  const q = query.trim().toLowerCase();
  const { row } = agent;
  return (
    row.name.toLowerCase().includes(q) ||
    row.id.startsWith(q) ||
    row.status === q ||
    (row.phase ?? 'none') === q ||
    row.desiredGraph === q ||
    agent.presence === q ||
    row.health === q
  );
}

function liveAgent({ row, presence, lastSeen, desired, activity }: AgentNow): LiveAgent {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    system: row.system,
    desiredGraph: row.desiredGraph,
    pinnedConfig: row.pinnedConfig,
    desiredConfig: desired as LiveAgent['desiredConfig'],
    currentConfig: row.currentConfig,
    phase: row.phase,
    lastError: row.lastError,
    health: row.health,
    healthReason: row.healthReason,
    healthConfig: row.healthConfig,
    healthAt: row.healthAt,
    recordedPresence: row.recordedPresence,
    lastSeen,
    presence,
    activity: activity
      ? { phase: activity.phase, configId: activity.configId, bytesDone: activity.bytesDone, bytesTotal: activity.bytesTotal, objectsDone: activity.objectsDone, objectsTotal: activity.objectsTotal, at: activity.at }
      : null,
  };
}

/**
 * One client's view of `now`: every count and up to MAX_LIVE_GRAPHS graphs,
 * and the page of agents its query asks for (DEFAULT_LIVE_AGENT_LIMIT
 * without a limit; the route bounds it, MAX_LIVE_AGENT_LIMIT). Reads `now`
 * without changing it.
 */
export function liveFleetPage(now: FleetNow, query: LiveFleetQuery = {}): LiveFleet {
  const text = query.agentQuery?.trim();
  const matching = text ? now.agents.filter((agent) => agentMatches(agent, text)) : now.agents;
  const offset = Math.max(0, query.agentOffset ?? 0);
  const limit = query.agentLimit ?? DEFAULT_LIVE_AGENT_LIMIT;
  return {
    seq: now.seq,
    at: now.at,
    thresholds: now.thresholds,
    counts: now.counts,
    graphs: { total: now.graphs.length, rows: now.graphs.slice(0, MAX_LIVE_GRAPHS) },
    agents: { total: now.agents.length, matching: matching.length, offset, rows: matching.slice(offset, offset + limit).map(liveAgent) },
  };
}
