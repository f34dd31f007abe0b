/**
 * The reducer: applies one audit event to the state tables. The same code
 * serves the live coordinator (inside the transaction that appends the
 * event), replay into an empty database, and the viewer's replay in memory.
 * It trusts nothing: payloads are validated, and an event that does not fit
 * the state (a forged or reordered log) is refused with a ReducerError.
 */
import { parsePayload, type Action, type AuditEvent, type PayloadOf } from './events.js';
import { factsRowId, type AgentRow, type StateStore } from './state.js';
import { rolloutInProgress } from '../../protocol/rollout-policy.js';
import { batchSettled, releaseKey } from './rollouts.js';
import { paramLayerId } from '../../protocol/api/params.js';
import type { RolloutRow } from './state.js';

export class ReducerError extends Error {
  override readonly name = 'ReducerError';
  readonly code = 'EVENT_DOES_NOT_APPLY';
  constructor(
    readonly seq: number,
    message: string,
  ) {
    super(`event ${seq} does not apply: ${message}`);
  }
}

type Handler<A extends Action> = (store: StateStore, payload: PayloadOf<A>, event: AuditEvent) => void;

function need<T>(value: T | undefined, event: AuditEvent, what: string): T {
  if (value === undefined) throw new ReducerError(event.seq, `${what} does not exist`);
  return value;
}

const HANDLERS: { [A in Action]: Handler<A> } = {
  'coordinator.init': () => undefined,
  // Store paths live in the castore; a push changes no fleet state.
  'store.push': () => undefined,
  // addKey refuses re-adding a revoked key; the reducer still applies such an event, because logs
  // written before that refusal may hold one, and replay must rebuild what the coordinator did then.
  'key.add': (store, p, e) => store.put('keys', { id: p.keyId, role: p.role, label: p.label, revoked: false, addedSeq: e.seq, revokedSeq: null }),
  'key.revoke': (store, p, e) => store.put('keys', { ...need(store.get('keys', p.keyId), e, `key ${p.keyId}`), revoked: true, revokedSeq: e.seq }),
  'token.create': (store, p, e) =>
    store.put('tokens', {
      id: p.tokenId,
      secretHash: p.secretHash,
      label: p.label,
      expiresAt: p.expiresAt,
      usesLeft: p.uses,
      autoApprove: p.autoApprove,
      labels: p.labels,
      revoked: false,
      createdSeq: e.seq,
      relay: p.relay === true,
      follow: p.follow ?? null,
      pin: p.pin ?? null,
      rule: p.rule ?? null,
    }),
  'token.revoke': (store, p, e) => store.put('tokens', { ...need(store.get('tokens', p.tokenId), e, `token ${p.tokenId}`), revoked: true }),
  'agent.enroll': (store, p, e) => {
    const token = need(store.get('tokens', p.tokenId), e, `token ${p.tokenId}`);
    if (token.usesLeft < 1) throw new ReducerError(e.seq, `token ${p.tokenId} has no uses left`);
    if (token.relay) throw new ReducerError(e.seq, `token ${p.tokenId} enrolls relays, not agents`);
    store.put('tokens', { ...token, usesLeft: token.usesLeft - 1 });
    store.put('agents', {
      id: p.agentId,
      name: p.name,
      type: p.type,
      status: p.status,
      labels: p.labels,
      tokenId: p.tokenId,
      factsRevision: 1,
      system: p.facts.system,
      desiredGraph: null,
      pinnedConfig: null,
      currentConfig: null,
      phase: null,
      lastError: null,
      // Rules place a new agent (the events that do follow this one); a token naming a graph assigns it explicitly.
      control: 'rules',
      rule: null,
      health: null,
      healthReason: null,
      healthConfig: null,
      healthAt: null,
      recordedPresence: null,
      retrySeq: null,
      stopRequested: false,
      enrolledSeq: e.seq,
      updatedSeq: e.seq,
    });
    store.put('agentFacts', { id: factsRowId(p.agentId, 1), agentId: p.agentId, revision: 1, facts: p.facts, hlc: e.hlc, seq: e.seq });
  },
  'agent.approve': (store, p, e) => setAgent(store, e, p.agentId, { status: 'enrolled' }),
  'agent.reject': (store, p, e) => setAgent(store, e, p.agentId, { status: 'rejected' }),
  'agent.revoke': (store, p, e) => setAgent(store, e, p.agentId, { status: 'revoked' }),
  'agent.facts': (store, p, e) => {
    const agent = need(store.get('agents', p.agentId), e, `agent ${p.agentId}`);
    const revision = agent.factsRevision + 1;
    store.put('agentFacts', { id: factsRowId(p.agentId, revision), agentId: p.agentId, revision, facts: p.facts, hlc: p.hlc, seq: e.seq });
    store.put('agents', { ...agent, factsRevision: revision, system: p.facts.system, updatedSeq: e.seq });
  },
  // An operator's own assignment or pin takes the agent out of the rules' hands (docs/coordinator.md "Rules").
  'agent.assign': (store, p, e) => setAgent(store, e, p.agentId, { desiredGraph: p.graph, stopRequested: p.stop === true, control: 'manual', rule: null }),
  'agent.pin': (store, p, e) => setAgent(store, e, p.agentId, { pinnedConfig: p.configId, stopRequested: false, control: 'manual', rule: null }),
  'agent.retry': (store, p, e) => setAgent(store, e, p.agentId, { retrySeq: e.seq }),
  // What a GC removed is in the castore, outside the fleet state (as a push's additions are).
  'store.gc': () => undefined,
  'agent.label': (store, p, e) => setAgent(store, e, p.agentId, { labels: p.labels }),
  'agent.place': (store, p, e) => setAgent(store, e, p.agentId, { desiredGraph: p.graph, pinnedConfig: p.configId, control: 'rules', rule: p.rule }),
  'agent.report': (store, p, e) => {
    const agent = need(store.get('agents', p.agentId), e, `agent ${p.agentId}`);
    // What the agent says it runs: shown, summarized, never a grant of read access (ClosureAccess).
    // A rolled-back report names the config the agent went back to (`running`; absent in older logs,
    // which keep what they replayed to): after a probation rollback, the config reported active no longer runs.
    // A stopped agent runs nothing.
    const currentConfig = p.phase === 'active' ? p.configId : p.phase === 'stopped' ? null : p.running !== undefined ? p.running : agent.currentConfig;
    const sameHealth = currentConfig !== null && currentConfig === agent.healthConfig;
    store.put('agents', {
      ...agent,
      phase: p.phase,
      lastError: p.error,
      currentConfig,
      // Health is of one config: another one running starts unknown until the agent checks it.
      ...(sameHealth ? {} : { health: null, healthReason: null, healthConfig: null }),
      updatedSeq: e.seq,
    });
    if (p.configId !== null && agent.desiredGraph !== null) {
      const outcome = p.phase === 'active' ? 'active' : p.phase === 'failed' || p.phase === 'rolled-back' ? 'failed' : null;
      if (outcome) noteRolloutOutcome(store, e, agent.desiredGraph, p.configId, p.agentId, outcome);
    }
  },
  'agent.health': (store, p, e) => {
    const agent = setAgent(store, e, p.agentId, { health: p.health, healthReason: p.reason, healthConfig: p.configId, healthAt: e.wallTime });
    if (p.health === 'degraded' && agent.desiredGraph !== null) noteRolloutOutcome(store, e, agent.desiredGraph, p.configId, p.agentId, 'failed');
  },
  'agent.presence': (store, p, e) => setAgent(store, e, p.agentId, { recordedPresence: p.presence }),
  'config.submit': (store, p, e) => {
    for (const parent of p.body.parents) need(store.get('configs', parent), e, `parent config ${parent}`);
    store.put('configs', { id: p.id, graph: p.body.graph, parents: p.body.parents, body: { ...p.body, signature: p.signature }, forced: p.forced, seq: e.seq });
    store.put('graphs', { id: p.body.graph, head: p.id, updatedSeq: e.seq });
    startRollout(store, e, p.body.graph, p.id, p.previousHead);
  },
  'graph.rollback': (store, p, e) => {
    const graph = need(store.get('graphs', p.graph), e, `graph ${p.graph}`);
    const target = need(store.get('configs', p.to), e, `config ${p.to}`);
    if (target.graph !== p.graph) throw new ReducerError(e.seq, `config ${p.to} is not in graph ${p.graph}`);
    store.put('graphs', { ...graph, head: p.to, updatedSeq: e.seq });
    endRolloutByRollback(store, e, p.graph, p.to);
  },
  'alert.add': (store, p, e) => {
    if (store.get('alerts', p.alertId)) throw new ReducerError(e.seq, `alert ${p.alertId} already exists`);
    store.put('alerts', { id: p.alertId, kinds: p.kinds, where: p.where, target: p.target, urlDigest: p.urlDigest, removed: false, createdSeq: e.seq, removedSeq: null });
  },
  'alert.remove': (store, p, e) => {
    const alert = need(store.get('alerts', p.alertId), e, `alert ${p.alertId}`);
    if (alert.removed) throw new ReducerError(e.seq, `alert ${p.alertId} was removed already`);
    store.put('alerts', { ...alert, removed: true, removedSeq: e.seq });
  },
  'relay.enroll': (store, p, e) => {
    const token = need(store.get('tokens', p.tokenId), e, `token ${p.tokenId}`);
    if (token.usesLeft < 1) throw new ReducerError(e.seq, `token ${p.tokenId} has no uses left`);
    if (!token.relay) throw new ReducerError(e.seq, `token ${p.tokenId} enrolls agents, not relays`);
    if (store.get('relays', p.relayId) || store.get('agents', p.relayId)) throw new ReducerError(e.seq, `key ${p.relayId} is enrolled already`);
    store.put('tokens', { ...token, usesLeft: token.usesLeft - 1 });
    store.put('relays', { id: p.relayId, name: p.name, tokenId: p.tokenId, url: p.url, fingerprint: p.fingerprint, where: [], status: 'enrolled', upstream: null, enrolledSeq: e.seq, updatedSeq: e.seq });
  },
  'relay.assign': (store, p, e) => {
    const relay = need(store.get('relays', p.relayId), e, `relay ${p.relayId}`);
    store.put('relays', { ...relay, where: p.where, updatedSeq: e.seq });
  },
  'relay.revoke': (store, p, e) => {
    const relay = need(store.get('relays', p.relayId), e, `relay ${p.relayId}`);
    store.put('relays', { ...relay, status: 'revoked', updatedSeq: e.seq });
  },
  'relay.upstream': (store, p, e) => {
    const relay = need(store.get('relays', p.relayId), e, `relay ${p.relayId}`);
    if (p.upstream !== null) need(store.get('relays', p.upstream), e, `relay ${p.upstream}`);
    store.put('relays', { ...relay, upstream: p.upstream, updatedSeq: e.seq });
  },
  'rollout.policy': (store, p, e) => {
    const row = store.get('rollouts', p.graph);
    if (row && rolloutInProgress(row.status)) throw new ReducerError(e.seq, `the rollout on ${p.graph} is ${row.status}`);
    store.put('rollouts', row ? { ...row, policy: p.policy, updatedSeq: e.seq } : { ...EMPTY_ROLLOUT, id: p.graph, policy: p.policy, updatedSeq: e.seq });
  },
  'rollout.advance': (store, p, e) => {
    const row = rolloutOf(store, e, p.graph, p.configId);
    if (row.status !== 'running') throw new ReducerError(e.seq, `the rollout on ${p.graph} is ${row.status}, not running`);
    if (p.batch !== row.batch && p.batch !== row.batch + 1) throw new ReducerError(e.seq, `batch ${p.batch} does not follow batch ${row.batch}`);
    const released = row.released + p.agents.length;
    if (p.target < released && p.agents.length > 0) throw new ReducerError(e.seq, `batch ${p.batch} releases ${released} agents, beyond its target ${p.target}`);
    for (const agentId of p.agents) {
      need(store.get('agents', agentId), e, `agent ${agentId}`);
      const id = releaseKey(p.configId, agentId);
      if (store.get('rolloutReleases', id)) throw new ReducerError(e.seq, `agent ${agentId} was released already`);
      store.put('rolloutReleases', { id, graph: p.graph, configId: p.configId, agentId, batch: p.batch, outcome: 'pending', seq: e.seq });
    }
    putRollout(store, e, { ...row, batch: p.batch, target: p.target, released, settledAt: null });
  },
  'rollout.halt': (store, p, e) => {
    const row = rolloutOf(store, e, p.graph, p.configId);
    if (row.status !== 'running' && row.status !== 'paused') throw new ReducerError(e.seq, `the rollout on ${p.graph} is ${row.status}`);
    putRollout(store, e, { ...row, status: 'halted', reason: p.reason });
  },
  'rollout.pause': (store, p, e) => {
    const row = rolloutOf(store, e, p.graph, p.configId);
    if (row.status !== 'running') throw new ReducerError(e.seq, `the rollout on ${p.graph} is ${row.status}, not running`);
    putRollout(store, e, { ...row, status: 'paused' });
  },
  'rollout.resume': (store, p, e) => {
    const row = rolloutOf(store, e, p.graph, p.configId);
    if (row.status !== 'paused' && row.status !== 'halted') throw new ReducerError(e.seq, `the rollout on ${p.graph} is ${row.status}`);
    putRollout(store, e, { ...row, status: 'running', reason: null, acceptedFailures: p.acceptedFailures });
  },
  'rollout.abort': (store, p, e) => {
    const row = rolloutOf(store, e, p.graph, p.configId);
    if (!rolloutInProgress(row.status)) throw new ReducerError(e.seq, `the rollout on ${p.graph} is ${row.status}`);
    if (p.base !== row.base) throw new ReducerError(e.seq, `the rollout's base is ${row.base}, not ${p.base}`);
    putRollout(store, e, { ...row, status: 'aborted', reason: 'aborted by an operator' });
    const graph = need(store.get('graphs', p.graph), e, `graph ${p.graph}`);
    // Back to the base for everyone, as graph.rollback; a first config has none, and rolloutConfigFor holds its agents at nothing.
    if (p.base !== null && graph.head !== p.base) store.put('graphs', { ...graph, head: p.base, updatedSeq: e.seq });
  },
  'rollout.complete': (store, p, e) => {
    const row = rolloutOf(store, e, p.graph, p.configId);
    if (row.status !== 'running' || !batchSettled(row)) throw new ReducerError(e.seq, `the rollout on ${p.graph} is not settled and running`);
    putRollout(store, e, { ...row, status: 'complete' });
  },
  'secret.set': (store, p, e) => {
    const previous = store.get('secrets', p.name);
    if (p.version !== (previous?.version ?? 0) + 1) throw new ReducerError(e.seq, `secret ${p.name} version ${p.version} does not follow ${previous?.version ?? 'none'}`);
    store.put('secrets', {
      id: p.name,
      version: p.version,
      recipients: p.recipients,
      setter: p.setter,
      selector: p.selector,
      ciphertextSha256: p.ciphertextSha256,
      ciphertextBytes: p.ciphertextBytes,
      removed: false,
      updatedSeq: e.seq,
    });
  },
  'secret.remove': (store, p, e) => {
    const secret = need(store.get('secrets', p.name), e, `secret ${p.name}`);
    if (secret.removed) throw new ReducerError(e.seq, `secret ${p.name} was removed already`);
    store.put('secrets', { ...secret, removed: true, updatedSeq: e.seq });
  },
  'rule.add': (store, p, e) => {
    const existing = store.get('rules', p.name);
    if (existing && !existing.removed) throw new ReducerError(e.seq, `rule ${p.name} already exists`);
    if (!p.order.includes(p.name)) throw new ReducerError(e.seq, `the order does not name rule ${p.name}`);
    store.put('rules', { id: p.name, where: p.where, follow: p.follow, pin: p.pin, position: -1, removed: false, createdSeq: e.seq, updatedSeq: e.seq });
    reorder(store, p.order, e);
  },
  'rule.remove': (store, p, e) => {
    const rule = need(store.get('rules', p.name), e, `rule ${p.name}`);
    if (rule.removed) throw new ReducerError(e.seq, `rule ${p.name} was removed already`);
    if (p.order.includes(p.name)) throw new ReducerError(e.seq, `the order still names rule ${p.name}`);
    store.put('rules', { ...rule, removed: true, position: -1, updatedSeq: e.seq });
    reorder(store, p.order, e);
  },
  'rule.move': (store, p, e) => {
    if (!p.order.includes(p.name)) throw new ReducerError(e.seq, `the order does not name rule ${p.name}`);
    reorder(store, p.order, e);
  },
  'param.set': (store, p, e) => {
    const id = paramLayerId(p.layer);
    const previous = store.get('params', id);
    // A layer set again after it was emptied counts as new: groups apply in the order they were (re)created.
    const alive = previous !== undefined && Object.keys(previous.values).length > 0;
    store.put('params', { id, layer: p.layer, values: { ...(alive ? previous.values : {}), ...p.values }, createdSeq: alive ? previous.createdSeq : e.seq, updatedSeq: e.seq });
  },
  'param.unset': (store, p, e) => {
    const id = paramLayerId(p.layer);
    const previous = need(store.get('params', id), e, `parameter layer ${id}`);
    const values = { ...previous.values };
    for (const key of p.keys) {
      if (!(key in values)) throw new ReducerError(e.seq, `parameter ${key} is not set in layer ${id}`);
      delete values[key];
    }
    // An emptied layer keeps its row (rows are never deleted); it applies nothing and counts toward no bound.
    store.put('params', { ...previous, values, updatedSeq: e.seq });
  },
};

/** A graph's rollouts row before any rollout: a policy only. */
const EMPTY_ROLLOUT: Omit<RolloutRow, 'id' | 'updatedSeq'> = {
  policy: null,
  configId: null,
  base: null,
  status: null,
  batch: -1,
  target: 0,
  released: 0,
  active: 0,
  failed: 0,
  acceptedFailures: 0,
  settledAt: null,
  reason: null,
  startedSeq: null,
};

function rolloutOf(store: StateStore, event: AuditEvent, graph: string, configId: string): RolloutRow {
  const row = need(store.get('rollouts', graph), event, `rollout on ${graph}`);
  if (row.configId !== configId) throw new ReducerError(event.seq, `the rollout on ${graph} is of ${row.configId ?? 'nothing'}, not ${configId}`);
  return row;
}

/** Stores a rollout row, marking its batch settled (at the event's wall time) the moment it is. */
function putRollout(store: StateStore, event: AuditEvent, row: RolloutRow): void {
  const settledAt = batchSettled(row) ? (row.settledAt ?? event.wallTime) : null;
  store.put('rollouts', { ...row, settledAt, updatedSeq: event.seq });
}

/**
 * A config submitted to a graph with a policy starts its rollout; its base
 * is the head before it, or, if it replaces a rollout still in progress,
 * that rollout's base (what the agents not yet reached still run).
 */
function startRollout(store: StateStore, event: AuditEvent, graph: string, configId: PayloadOf<'config.submit'>['id'], previousHead: string | null): void {
  const row = store.get('rollouts', graph);
  if (!row?.policy) return;
  const base = (rolloutInProgress(row.status) ? row.base : previousHead) as RolloutRow['base'];
  store.put('rollouts', { ...EMPTY_ROLLOUT, id: graph, policy: row.policy, configId, base, status: 'running', startedSeq: event.seq, updatedSeq: event.seq });
}

/** A graph rolled back during a rollout ends it: the operator chose the head for everyone. */
function endRolloutByRollback(store: StateStore, event: AuditEvent, graph: string, to: string): void {
  const row = store.get('rollouts', graph);
  if (!row || !rolloutInProgress(row.status)) return;
  store.put('rollouts', { ...row, status: 'aborted', reason: `graph rolled back to ${to}`, updatedSeq: event.seq });
}

/**
 * Records how a released agent fared with the rollout's config: active,
 * or failed (failed, rolled back, degraded; sticky: an agent that failed
 * once counts as failed for the rest of the rollout). Only agents the
 * rollout released, only its config, only while it is in progress.
 */
function noteRolloutOutcome(store: StateStore, event: AuditEvent, graph: string, configId: string, agentId: string, outcome: 'active' | 'failed'): void {
  const row = store.get('rollouts', graph);
  if (!row || row.configId !== configId || !rolloutInProgress(row.status)) return;
  const release = store.get('rolloutReleases', releaseKey(configId, agentId));
  if (!release || release.outcome === 'failed' || release.outcome === outcome) return;
  store.put('rolloutReleases', { ...release, outcome });
  const active = row.active + (outcome === 'active' ? 1 : release.outcome === 'active' ? -1 : 0);
  const failed = row.failed + (outcome === 'failed' ? 1 : 0);
  putRollout(store, event, { ...row, active, failed });
}

/**
 * Gives each rule `order` names its index as position. The order names
 * active rules only, each once; the command that recorded it listed every
 * active rule (a StateStore reads by id, so the reducer cannot list them).
 */
function reorder(store: StateStore, order: readonly string[], event: AuditEvent): void {
  if (new Set(order).size !== order.length) throw new ReducerError(event.seq, 'the rule order names a rule twice');
  order.forEach((name, position) => {
    const rule = need(store.get('rules', name), event, `rule ${name}`);
    if (rule.removed) throw new ReducerError(event.seq, `rule ${name} was removed`);
    if (rule.position !== position) store.put('rules', { ...rule, position, updatedSeq: event.seq });
  });
}

function setAgent(store: StateStore, event: AuditEvent, agentId: string, changes: Partial<AgentRow>): AgentRow {
  const agent = need(store.get('agents', agentId), event, `agent ${agentId}`);
  const changed = { ...agent, ...changes, updatedSeq: event.seq };
  store.put('agents', changed);
  return changed;
}

/** Applies `event` to `store`. Refuses (ReducerError) an invalid payload or an event the state cannot take. */
export function applyEvent(store: StateStore, event: AuditEvent): void {
  let payload: unknown;
  try {
    payload = parsePayload(event.action, event.payload);
  } catch (error) {
    throw new ReducerError(event.seq, `invalid ${event.action} payload: ${(error as Error).message}`);
  }
  (HANDLERS[event.action] as Handler<Action>)(store, payload as PayloadOf<Action>, event);
}

/** A store that can apply many puts atomically (SqliteStateStore: one transaction). */
export interface BatchingStateStore extends StateStore {
  batch<R>(body: () => R): R;
}

export interface ReplayReport {
  /** Events applied. */
  events: number;
  /** The seq of the last event applied (0 for an empty log). */
  lastSeq: number;
}

/**
 * Replays a log into a store with the live reducer: each event, in order,
 * through applyEvent. Refuses (ReducerError) an event out of seq order or
 * one that does not apply; a store with `batch` (SQLite) takes the whole log
 * in one transaction, so a refused log leaves it as it was. The events are
 * trusted for nothing but their order: check the chain with verifyChain
 * (or Coordinator.verifyAudit) to know the log is the coordinator's.
 */
export function replayLog(events: Iterable<AuditEvent>, store: StateStore | BatchingStateStore): ReplayReport {
  const run = (): ReplayReport => {
    let count = 0;
    let lastSeq = 0;
    for (const event of events) {
      if (count > 0 && event.seq !== lastSeq + 1) throw new ReducerError(event.seq, `it follows event ${lastSeq} (replay needs the log in seq order, without gaps)`);
      applyEvent(store, event);
      lastSeq = event.seq;
      count++;
    }
    return { events: count, lastSeq };
  };
  return 'batch' in store ? store.batch(run) : run();
}
