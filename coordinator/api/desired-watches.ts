/**
 * Agents' held watches (GET /v1/agent/watch), indexed by what can change
 * their answer: the agent itself and the graph it follows. A committed
 * event wakes only the watches it concerns, so a fleet whose watches are
 * held costs nothing but their sockets until something happens to it, and
 * a config submitted to a graph wakes exactly that graph's followers.
 *
 * Site relays (docs/relays.md) add two kinds of waiter, both woken by a
 * check of their own rather than by key, since which agents a relay
 * serves is a query (its `--where` clauses), not a subject:
 * - an agent's watch also waits for its relays to change: a relay
 *   assignment or revocation asks each such watch whether the relays of
 *   its agent changed (a few clause matches per held watch, for a rare
 *   operator action), and wakes exactly those;
 * - a relay's prefetch watch (GET /v1/relay/prefetch) waits for the
 *   closures its agents are to run to change: any event that can change a
 *   desired config, an agent's standing or a relay's reach asks each held
 *   prefetch watch (one per relay; the set is computed once per event:
 *   relay-access.ts).
 */
import type { Coordinator } from '../coordinator.js';
import type { Action, AuditEvent, PayloadOf } from '../domain/events.js';

/**
 * Which watches each action can concern, by its subject: an agent's own
 * (its standing, its graph, its pin), every follower of a graph (its
 * head), `released`: the agents a rollout.advance names (and only them:
 * the rest of the graph's answer did not change), or which relays serve
 * whom (`relays`: a relay's clauses or standing), `reach`: only what
 * relays read (their prefetch watches); `fleet`: none of an
 * agent's, but an agent enrolled at once (a token with auto-approval)
 * joins the agents a relay serves. Every action is listed, so a new one
 * cannot be forgotten here.
 */
const WAKES: Record<Action, 'agent' | 'graph' | 'secret' | 'params' | 'released' | 'relays' | 'reach' | 'fleet' | null> = {
  'coordinator.init': null,
  'key.add': null,
  // Agents' keys are never in the keys table (enrollment refuses that): revoking a key ends no watch.
  'key.revoke': null,
  'token.create': null,
  'token.revoke': null,
  'agent.enroll': 'fleet',
  'agent.approve': 'agent',
  'agent.reject': 'agent',
  'agent.revoke': 'agent',
  // Facts choose only which system of a config a relay prefetches, and change without an operator: not worth a wake
  // (the relay's watch deadline catches it), and they never select a relay (relay-access.ts checkRelayWhere).
  'agent.facts': null,
  'agent.assign': 'agent',
  'agent.pin': 'agent',
  // A relabel moves no agent by itself: the agent.place events it causes (same transaction) do, and wake it.
  'agent.label': null,
  'agent.place': 'agent',
  'agent.report': null,
  'agent.health': null,
  'agent.presence': null,
  'config.submit': 'graph',
  'graph.rollback': 'graph',
  'store.push': null,
  'alert.add': null,
  'alert.remove': null,
  // A relay serves nobody until assigned.
  'relay.enroll': null,
  // No desired config changes, but the relays of the agents it selected (before or now) do: their watches answer at once.
  'relay.assign': 'relays',
  'relay.revoke': 'relays',
  // No agent's relays change: only what relays read and prefetch (an upstream reads its downstream's configs too).
  'relay.upstream': 'reach',
  // A retry changes no desired config, but the watch answers it (the answer's directives carry it).
  'agent.retry': 'agent',
  'store.gc': null,
  'rollout.policy': null,
  'rollout.advance': 'released',
  // Halting, pausing or resuming releases nobody and takes nothing back: no answer changes.
  'rollout.halt': null,
  'rollout.pause': null,
  'rollout.resume': null,
  // The head goes back to the base (or, for a first config, everyone is held at nothing).
  'rollout.abort': 'graph',
  // Agents that joined the graph after the last batch was planned get the head now.
  'rollout.complete': 'graph',
  // A new version re-activates the agents whose desired config references the secret (docs/secrets.md).
  'secret.set': 'secret',
  // Refused while a desired config references it: no answer changes.
  'secret.remove': null,
  // Likewise a rule change: each agent it moves gets an agent.place event of its own.
  'rule.add': null,
  'rule.remove': null,
  'rule.move': null,
  // Any layer can change any agent's effective parameters: the watches that said which they have re-compare (http.ts answerWatch).
  'param.set': 'params',
  'param.unset': 'params',
};

type Wake = () => void;

/**
 * Watches one agent may hold at once. An agent holds one (its daemon);
 * a few more cover a restart whose old connection the coordinator has not
 * seen close yet. Each held watch costs a socket and ~17–48 KiB (HTTP,
 * HTTPS; bench/README.md "Capacity"), so without a bound one agent key
 * could hold memory and file descriptors at will.
 */
export const MAX_WATCHES_PER_AGENT = 4;

export class DesiredWatches {
  private readonly waiting = new Map<string, Set<Wake>>();
  /** Agents' watches that also wait for their relays to change, each with its check. */
  private readonly relaysWaiting = new Map<Wake, () => boolean>();
  /** Relays' prefetch watches, each with its check (whether its relay's prefetch set changed). */
  private readonly prefetchWaiting = new Map<Wake, () => boolean>();
  /** Watches held per agent (what MAX_WATCHES_PER_AGENT bounds). */
  private readonly heldBy = new Map<string, number>();
  /** Set by release(): every watch is answered at once from then on. */
  released = false;

  private readonly presence: Coordinator['presence'];

  constructor(coordinator: Coordinator) {
    this.presence = coordinator.presence;
    coordinator.commits.subscribe((event) => this.wakeConcerned(event));
    coordinator.onClose(() => this.release());
  }

  /**
   * Wakes every held watch, now and from now on: the server is stopping
   * (its watches are answered at once rather than held to their deadline,
   * minutes away) or the coordinator closed.
   */
  release(): void {
    this.released = true;
    for (const wakes of [...this.waiting.values()]) for (const wake of [...wakes]) wake();
    for (const wake of [...this.prefetchWaiting.keys()]) wake();
  }

  /**
   * Counts a watch of `agentId` (an agent's, or a relay's prefetch watch:
   * `relay`) as held until `release` is called; false (nothing counted)
   * when that key holds MAX_WATCHES_PER_AGENT already.
   */
  hold(agentId: string, role: 'agent' | 'relay' = 'agent'): { release: () => void } | undefined {
    const held = this.heldBy.get(agentId) ?? 0;
    if (held >= MAX_WATCHES_PER_AGENT) return undefined;
    this.heldBy.set(agentId, held + 1);
    // While it holds one, the agent is online (db/agent-presence.ts); a relay has no presence there.
    const present = role === 'agent' ? this.presence.holdWatch(agentId) : () => undefined;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        present();
        const left = (this.heldBy.get(agentId) ?? 1) - 1;
        if (left === 0) this.heldBy.delete(agentId);
        else this.heldBy.set(agentId, left);
      },
    };
  }

  /**
   * Resolves when an event concerning agent `agentId`, graph `graph` (the
   * one it follows; null: none) or one of `secrets` (those its desired
   * config references) commits, any param.* event when `params` (the agent
   * said which parameters it has), when an event changing which relays serve
   * whom commits and `relaysChanged` (when given) says the agent's did,
   * when the coordinator closes, or after `timeoutMs`. The caller re-checks
   * what it waits for either way.
   */
  wait(agentId: string, graph: string | null, timeoutMs: number, relaysChanged?: () => boolean, secrets: readonly string[] = [], params = false): Promise<void> {
    if (this.released) return Promise.resolve();
    return new Promise((resolve) => {
      const keys = [`agent:${agentId}`, ...(graph === null ? [] : [`graph:${graph}`]), ...secrets.map((name) => `secret:${name}`), ...(params ? ['params'] : [])];
      const wake = (): void => {
        clearTimeout(timer);
        for (const key of keys) this.remove(key, wake);
        this.relaysWaiting.delete(wake);
        resolve();
      };
      if (relaysChanged) this.relaysWaiting.set(wake, relaysChanged);
      const timer = setTimeout(wake, timeoutMs);
      for (const key of keys) {
        let wakes = this.waiting.get(key);
        if (!wakes) this.waiting.set(key, (wakes = new Set()));
        wakes.add(wake);
      }
    });
  }

  /**
   * Resolves when an event that can change what a relay prefetches commits
   * and `changed` says its set did, when the coordinator closes, or after
   * `timeoutMs`. The caller re-checks either way.
   */
  waitPrefetch(changed: () => boolean, timeoutMs: number): Promise<void> {
    if (this.released) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.prefetchWaiting.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      this.prefetchWaiting.set(wake, changed);
    });
  }

  private remove(key: string, wake: Wake): void {
    const wakes = this.waiting.get(key);
    if (!wakes) return;
    wakes.delete(wake);
    if (wakes.size === 0) this.waiting.delete(key);
  }

  private wakeConcerned(event: AuditEvent): void {
    const kind = WAKES[event.action];
    if (kind === null) return;
    if (kind === 'released') {
      for (const agentId of (event.payload as PayloadOf<'rollout.advance'>).agents) this.wakeKey(`agent:${agentId}`);
    } else if (kind === 'agent' || kind === 'graph' || kind === 'secret') this.wakeKey(`${kind}:${event.subject}`);
    else if (kind === 'params') this.wakeKey('params');
    if (kind === 'relays') for (const [wake, changed] of [...this.relaysWaiting]) if (changed()) wake();
    // Every kind can change a relay's reach: a config, a pin, an agent's graph or standing, a relay's clauses.
    for (const [wake, changed] of [...this.prefetchWaiting]) if (changed()) wake();
  }

  private wakeKey(key: string): void {
    const wakes = this.waiting.get(key);
    if (wakes) for (const wake of [...wakes]) wake();
  }
}
