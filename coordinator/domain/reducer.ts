/**
 * The reducer: applies one audit event to the state tables. The same code
 * serves the live coordinator (inside the transaction that appends the
 * event), replay into an empty database, and the viewer's replay in memory.
 * It trusts nothing: payloads are validated, and an event that does not fit
 * the state (a forged or reordered log) is refused with a ReducerError.
 */
import { parsePayload, type Action, type AuditEvent, type PayloadOf } from './events.js';
import { factsRowId, type AgentRow, type StateStore } from './state.js';

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
      health: null,
      healthReason: null,
      healthConfig: null,
      healthAt: null,
      recordedPresence: null,
      // Rules place a new agent (the events that do follow this one); a token naming a graph assigns it explicitly.
      control: 'rules',
      rule: null,
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
  'agent.assign': (store, p, e) => setAgent(store, e, p.agentId, { desiredGraph: p.graph, control: 'manual', rule: null }),
  'agent.pin': (store, p, e) => setAgent(store, e, p.agentId, { pinnedConfig: p.configId, control: 'manual', rule: null }),
  'agent.label': (store, p, e) => setAgent(store, e, p.agentId, { labels: p.labels }),
  'agent.place': (store, p, e) => setAgent(store, e, p.agentId, { desiredGraph: p.graph, pinnedConfig: p.configId, control: 'rules', rule: p.rule }),
  'agent.report': (store, p, e) => {
    const agent = need(store.get('agents', p.agentId), e, `agent ${p.agentId}`);
    // What the agent says it runs: shown, summarized, never a grant of read access (ClosureAccess).
    // A rolled-back report names the config the agent went back to (`running`; absent in older logs,
    // which keep what they replayed to): after a probation rollback, the config reported active no longer runs.
    const currentConfig = p.phase === 'active' ? p.configId : p.running !== undefined ? p.running : agent.currentConfig;
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
  },
  'agent.health': (store, p, e) => setAgent(store, e, p.agentId, { health: p.health, healthReason: p.reason, healthConfig: p.configId, healthAt: e.wallTime }),
  'agent.presence': (store, p, e) => setAgent(store, e, p.agentId, { recordedPresence: p.presence }),
  'config.submit': (store, p, e) => {
    for (const parent of p.body.parents) need(store.get('configs', parent), e, `parent config ${parent}`);
    store.put('configs', { id: p.id, graph: p.body.graph, parents: p.body.parents, body: { ...p.body, signature: p.signature }, forced: p.forced, seq: e.seq });
    store.put('graphs', { id: p.body.graph, head: p.id, updatedSeq: e.seq });
  },
  'graph.rollback': (store, p, e) => {
    const graph = need(store.get('graphs', p.graph), e, `graph ${p.graph}`);
    const target = need(store.get('configs', p.to), e, `config ${p.to}`);
    if (target.graph !== p.graph) throw new ReducerError(e.seq, `config ${p.to} is not in graph ${p.graph}`);
    store.put('graphs', { ...graph, head: p.to, updatedSeq: e.seq });
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
    store.put('relays', { id: p.relayId, name: p.name, tokenId: p.tokenId, url: p.url, fingerprint: p.fingerprint, where: [], status: 'enrolled', enrolledSeq: e.seq, updatedSeq: e.seq });
  },
  'relay.assign': (store, p, e) => {
    const relay = need(store.get('relays', p.relayId), e, `relay ${p.relayId}`);
    store.put('relays', { ...relay, where: p.where, updatedSeq: e.seq });
  },
  'relay.revoke': (store, p, e) => {
    const relay = need(store.get('relays', p.relayId), e, `relay ${p.relayId}`);
    store.put('relays', { ...relay, status: 'revoked', updatedSeq: e.seq });
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
};

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

function setAgent(store: StateStore, event: AuditEvent, agentId: string, changes: Partial<AgentRow>): void {
  const agent = need(store.get('agents', agentId), event, `agent ${agentId}`);
  store.put('agents', { ...agent, ...changes, updatedSeq: event.seq });
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
