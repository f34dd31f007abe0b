/**
 * Agents' held watches (GET /v1/agent/watch), indexed by what can change
 * their answer: the agent itself and the graph it follows. A committed
 * event wakes only the watches it concerns, so a fleet whose watches are
 * held costs nothing but their sockets until something happens to it, and
 * a config submitted to a graph wakes exactly that graph's followers.
 */
import type { Coordinator } from '../coordinator.js';
import type { Action, AuditEvent } from '../domain/events.js';

/**
 * Which watches each action can concern, by its subject: an agent's own
 * (its standing, its graph, its pin) or every follower of a graph (its
 * head). Every action is listed, so a new one cannot be forgotten here.
 */
const WAKES: Record<Action, 'agent' | 'graph' | null> = {
  'coordinator.init': null,
  'key.add': null,
  // Agents' keys are never in the keys table (enrollment refuses that): revoking a key ends no watch.
  'key.revoke': null,
  'token.create': null,
  'token.revoke': null,
  'agent.enroll': null,
  'agent.approve': 'agent',
  'agent.reject': 'agent',
  'agent.revoke': 'agent',
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
  // A relay assignment changes no desired config: agents learn their relays with their next desired answer (docs/relays.md).
  'relay.enroll': null,
  'relay.assign': null,
  'relay.revoke': null,
  // Likewise a rule change: each agent it moves gets an agent.place event of its own.
  'rule.add': null,
  'rule.remove': null,
  'rule.move': null,
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
  }

  /**
   * Counts a watch of `agentId` as held until `release` is called; false
   * (nothing counted) when the agent holds MAX_WATCHES_PER_AGENT already.
   */
  hold(agentId: string): { release: () => void } | undefined {
    const held = this.heldBy.get(agentId) ?? 0;
    if (held >= MAX_WATCHES_PER_AGENT) return undefined;
    this.heldBy.set(agentId, held + 1);
    // While it holds one, the agent is online (db/agent-presence.ts).
    const present = this.presence.holdWatch(agentId);
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
   * Resolves when an event concerning agent `agentId` or graph `graph`
   * (the one it follows; null: none) commits, when the coordinator closes,
   * or after `timeoutMs`. The caller re-checks what it waits for either way.
   */
  wait(agentId: string, graph: string | null, timeoutMs: number): Promise<void> {
    if (this.released) return Promise.resolve();
    return new Promise((resolve) => {
      const keys = graph === null ? [`agent:${agentId}`] : [`agent:${agentId}`, `graph:${graph}`];
      const wake = (): void => {
        clearTimeout(timer);
        for (const key of keys) this.remove(key, wake);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      for (const key of keys) {
        let wakes = this.waiting.get(key);
        if (!wakes) this.waiting.set(key, (wakes = new Set()));
        wakes.add(wake);
      }
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
    const wakes = this.waiting.get(`${kind}:${event.subject}`);
    if (wakes) for (const wake of [...wakes]) wake();
  }
}
