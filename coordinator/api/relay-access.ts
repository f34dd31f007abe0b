/**
 * Site relays as the coordinator decides them (docs/relays.md): which
 * agents use which relay (`relays assign --where`), what a relay may read
 * (the desired configs of the agents it serves, and of every relay that
 * fetches from it, transitively: ClosureAccess.configsOf), the offer an
 * agent's desired answer carries (its relays and a grant for its desired
 * config, signed), and the upstream offer a relay's prefetch answer
 * carries (the relay it fetches from and grants there, signed).
 *
 * Everything here derives from audited state (the relays table, agents'
 * operator labels and fields, pins and graph heads): never from what an
 * agent or a relay reports.
 */
import { signProof } from '../../protocol/coordinator-proofs.js';
import { FerryError } from '../../protocol/errors.js';
import type { KeyId } from '../../protocol/identity.js';
import { MAX_RELAY_CHAIN, MAX_RELAYS_PER_AGENT, RELAY_GRANT_TTL_MS, relayGrantMessage, relayOfferMessage, type RelayEndpoint, type RelayGrant, type RelayOffer } from '../../protocol/relays.js';
import type { Coordinator } from '../coordinator.js';
import { SystemSchema } from '../../protocol/config.js';
import { MAX_RELAY_PREFETCH_CONFIGS, relayPrefetchDigest, upstreamOfferMessage, type PrefetchTarget, type RelayPrefetchAnswer, type UpstreamOffer } from '../../protocol/relay-prefetch.js';
import type { ConfigBody } from '../domain/events.js';
import { factsRowId, type AgentRow, type RelayRow } from '../domain/state.js';
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

/** What a relay reaches: the configs it may read, and the closures to prefetch (each config for its agents' systems). */
interface RelayReach {
  configs: string[];
  /** Keyed `<configId>.<system>`, unsorted and unbounded: what the relays it serves as an upstream add to theirs. */
  targets: Map<string, PrefetchTarget>;
  prefetch: RelayPrefetchAnswer;
}

interface RelayCache {
  seq: number;
  /** The assigned, enrolled relays, oldest enrollment first: read once per event, not per desired answer. */
  assigned?: RelayRow[];
  clauses: Map<string, WhereClause[]>;
  reaches: Map<string, RelayReach>;
}
const caches = new WeakMap<Coordinator, RelayCache>();

/** Parsed clauses and computed reaches, kept until the next event (state changes only with one). */
function cacheOf(coordinator: Coordinator): RelayCache {
  let cache = caches.get(coordinator);
  if (!cache || cache.seq !== coordinator.lastSeq) {
    cache = { seq: coordinator.lastSeq, clauses: new Map(), reaches: new Map() };
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
 * The relays an agent's desired answer names (relaysOf), as one string
 * of their ids: what an agent's watch compares to answer at once when they
 * change (an assignment or revocation).
 */
export function relayEndpointsKey(coordinator: Coordinator, agent: AgentRow): string {
  return relaysOf(coordinator, agent)
    .map((relay) => relay.id)
    .join(',');
}

/**
 * The configs relay `relayId` may read: the desired configs of the
 * enrolled agents it serves, and those of every enrolled relay whose
 * upstream it is (transitively: each reads its own agents' and its
 * downstream relays'). None for a revoked relay. Computed once per audit
 * event.
 */
export function relayConfigs(coordinator: Coordinator, relayId: string): string[] {
  return reachOf(coordinator, relayId).configs;
}

/**
 * What relay `relayId` is to prefetch (`GET /v1/relay/prefetch`): each
 * config it may read (relayConfigs), for each system its agents of that
 * config report (their facts: the agent's word, which only chooses which
 * target of a config the relay may read anyway is fetched first; a system
 * the config has no target for is skipped), and every closure of the
 * relays fetching from it (so an upstream relay holds what its sites will
 * ask for). Sorted, at most MAX_RELAY_PREFETCH_CONFIGS. Computed once per
 * audit event. The digest covers its upstream relay (upstreamOf) too.
 */
export function relayPrefetch(coordinator: Coordinator, relayId: string): RelayPrefetchAnswer {
  return reachOf(coordinator, relayId).prefetch;
}

function reachOf(coordinator: Coordinator, relayId: string, depth = 0): RelayReach {
  const cache = cacheOf(coordinator);
  const found = cache.reaches.get(relayId);
  if (found) return found;
  const relay = coordinator.state.get('relays', relayId);
  const configs = new Set<string>();
  const targets = new Map<string, PrefetchTarget>();
  if (relay && relay.status === 'enrolled' && depth < MAX_RELAY_CHAIN) {
    // What the relays fetching from it read, it reads (commands.ts keeps the chains acyclic and short; `depth` bounds it anyway).
    for (const downstream of coordinator.state.all('relays')) {
      if (downstream.upstream !== relayId || downstream.status !== 'enrolled') continue;
      const below = reachOf(coordinator, downstream.id, depth + 1);
      for (const configId of below.configs) configs.add(configId);
      for (const [key, target] of below.targets) targets.set(key, target);
    }
  }
  if (relay && relay.status === 'enrolled' && relay.where.length > 0) {
    for (const agent of coordinator.state.all('agents')) {
      if (!serves(coordinator, relay, agent)) continue;
      const desired = desiredConfigOf(coordinator.state, agent);
      if (!desired) continue;
      configs.add(desired);
      const system = SystemSchema.safeParse(coordinator.state.get('agentFacts', factsRowId(agent.id, agent.factsRevision))?.facts.system);
      const body = coordinator.state.get('configs', desired)?.body as ConfigBody | undefined;
      if (system.success && body?.targets[system.data] !== undefined) targets.set(`${desired}.${system.data}`, { configId: desired as PrefetchTarget['configId'], system: system.data });
    }
  }
  const sorted = [...targets.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, target]) => target);
  const named = sorted.slice(0, MAX_RELAY_PREFETCH_CONFIGS);
  const upstream = upstreamOf(coordinator, relayId);
  const reach = { configs: [...configs], targets, prefetch: { digest: relayPrefetchDigest(named, upstream), configs: named, truncated: sorted.length > named.length } };
  cache.reaches.set(relayId, reach);
  return reach;
}

/**
 * The relay `relayId` fetches from before the coordinator, as it is told of
 * it: set (relays upstream), and both enrolled; undefined otherwise (a
 * revoked upstream leaves its downstream relays on the coordinator).
 */
export function upstreamOf(coordinator: Coordinator, relayId: string): RelayEndpoint | undefined {
  const relay = coordinator.state.get('relays', relayId);
  if (relay?.status !== 'enrolled' || relay.upstream === null) return undefined;
  const upstream = coordinator.state.get('relays', relay.upstream);
  if (upstream?.status !== 'enrolled') return undefined;
  return { id: upstream.id as KeyId, url: upstream.url, fingerprint: upstream.fingerprint };
}

/**
 * What relay `relayId`'s prefetch answer says of its upstream relay: the
 * relay (upstreamOf), a grant per config `relayId` may read (relayConfigs,
 * sorted, at most MAX_RELAY_PREFETCH_CONFIGS) naming `relayId`'s own key,
 * and the proof over both bound to `relayId` and `challenge`; undefined
 * when it has none. The upstream relay checks these grants exactly as an
 * agent's (a request signed by the key the grant names), and may read
 * these configs itself (its reach includes its downstream relays').
 */
export function upstreamOffer(coordinator: Coordinator, relayId: string, challenge: string): UpstreamOffer | undefined {
  const relay = upstreamOf(coordinator, relayId);
  if (!relay) return undefined;
  const expiresAt = coordinator.now() + RELAY_GRANT_TTL_MS;
  const grants: RelayGrant[] = [...relayConfigs(coordinator, relayId)]
    .sort()
    .slice(0, MAX_RELAY_PREFETCH_CONFIGS)
    .map((configId) => ({ agentId: relayId as KeyId, configId, expiresAt, proof: signProof(coordinator.identity, relayGrantMessage(relayId, configId, expiresAt)) }));
  return { relay, grants, proof: signProof(coordinator.identity, upstreamOfferMessage(relayId, challenge, { relay, grants })) };
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
