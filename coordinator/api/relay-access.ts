/**
 * Site relays as the coordinator decides them (docs/relays.md): which
 * agents use which relay (`relays assign --where`), what a relay may read
 * (the desired configs of the agents it serves: ClosureAccess.configsOf),
 * and the offer an agent's desired answer carries (its relays and a grant
 * for its desired config, signed).
 *
 * Everything here derives from audited state (the relays table, agents'
 * operator labels and fields, pins and graph heads): never from what an
 * agent or a relay reports.
 */
import { signProof } from '../../protocol/coordinator-proofs.js';
import { FerryError } from '../../protocol/errors.js';
import type { KeyId } from '../../protocol/identity.js';
import { MAX_RELAYS_PER_AGENT, RELAY_GRANT_TTL_MS, relayGrantMessage, relayOfferMessage, type RelayOffer } from '../../protocol/relays.js';
import type { Coordinator } from '../coordinator.js';
import type { AgentRow, RelayRow } from '../domain/state.js';
import { agentMatches, desiredConfigOf, parseWhere, type WhereClause } from './queries.js';

/**
 * Refuses (INVALID) relay clauses that do not parse, and clauses on what is
 * not the coordinator's decision: `facts.*` (the agent's word: an agent
 * could place itself behind a relay, and so widen what that relay reads)
 * and `presence` (changes without an event, so a relay's reach would too).
 */
export function checkRelayWhere(where: readonly string[]): void {
  for (const clause of parseWhere(where)) {
    if (clause.source === 'facts' || clause.source === 'presence') {
      throw new FerryError('INVALID', `--where ${clause.source}…: a relay is assigned by operator labels (labels.k=v) and agent fields only`);
    }
  }
}

const noPresence = (): string => '';

interface RelayCache {
  seq: number;
  /** The assigned, enrolled relays, oldest enrollment first: read once per event, not per desired answer. */
  assigned?: RelayRow[];
  clauses: Map<string, WhereClause[]>;
  configs: Map<string, string[]>;
}
const caches = new WeakMap<Coordinator, RelayCache>();

/** Parsed clauses and computed reaches, kept until the next event (state changes only with one). */
function cacheOf(coordinator: Coordinator): RelayCache {
  let cache = caches.get(coordinator);
  if (!cache || cache.seq !== coordinator.lastSeq) {
    cache = { seq: coordinator.lastSeq, clauses: new Map(), configs: new Map() };
    caches.set(coordinator, cache);
  }
  return cache;
}

function clausesOf(coordinator: Coordinator, relay: RelayRow): WhereClause[] {
  const cache = cacheOf(coordinator);
  let clauses = cache.clauses.get(relay.id);
  if (!clauses) {
    clauses = parseWhere(relay.where);
    cache.clauses.set(relay.id, clauses);
  }
  return clauses;
}

/** Whether `relay` serves `agent`: enrolled, assigned (no clause: nobody), and every clause matches an enrolled agent. */
function serves(coordinator: Coordinator, relay: RelayRow, agent: AgentRow): boolean {
  if (relay.status !== 'enrolled' || relay.where.length === 0 || agent.status !== 'enrolled') return false;
  return agentMatches(coordinator.state, agent, clausesOf(coordinator, relay), noPresence);
}

/** The relays that serve `agent`, oldest enrollment first, at most MAX_RELAYS_PER_AGENT. */
export function relaysOf(coordinator: Coordinator, agent: AgentRow): RelayRow[] {
  const cache = cacheOf(coordinator);
  cache.assigned ??= coordinator.state
    .all('relays')
    .filter((relay) => relay.status === 'enrolled' && relay.where.length > 0)
    .sort((a, b) => a.enrolledSeq - b.enrolledSeq);
  if (cache.assigned.length === 0) return [];
  return cache.assigned.filter((relay) => serves(coordinator, relay, agent)).slice(0, MAX_RELAYS_PER_AGENT);
}

/**
 * The configs relay `relayId` may read: the desired configs of the
 * enrolled agents it serves (none for a revoked or unassigned relay).
 * Computed once per audit event.
 */
export function relayConfigs(coordinator: Coordinator, relayId: string): string[] {
  const cache = cacheOf(coordinator);
  const found = cache.configs.get(relayId);
  if (found) return found;
  const relay = coordinator.state.get('relays', relayId);
  const configs = new Set<string>();
  if (relay && relay.status === 'enrolled' && relay.where.length > 0) {
    for (const agent of coordinator.state.all('agents')) {
      if (!serves(coordinator, relay, agent)) continue;
      const desired = desiredConfigOf(coordinator.state, agent);
      if (desired) configs.add(desired);
    }
  }
  const list = [...configs];
  cache.configs.set(relayId, list);
  return list;
}

/**
 * What an agent's desired answer says of relays: its relays and a grant for
 * `configId`, under a proof bound to the agent and `challenge`; undefined
 * when no relay serves it or it has no config to fetch.
 */
export function relayOffer(coordinator: Coordinator, agent: AgentRow, configId: string | null, challenge: string): RelayOffer | undefined {
  if (configId === null) return undefined;
  const relays = relaysOf(coordinator, agent);
  if (relays.length === 0) return undefined;
  const expiresAt = coordinator.now() + RELAY_GRANT_TTL_MS;
  const grant = { agentId: agent.id as KeyId, configId, expiresAt, proof: signProof(coordinator.identity, relayGrantMessage(agent.id, configId, expiresAt)) };
  const endpoints = relays.map((relay) => ({ id: relay.id as KeyId, url: relay.url, fingerprint: relay.fingerprint }));
  return { relays: endpoints, grant, proof: signProof(coordinator.identity, relayOfferMessage(agent.id, challenge, { relays: endpoints, grant })) };
}
