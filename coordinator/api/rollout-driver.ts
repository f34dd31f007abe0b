/**
 * Drives staged rollouts (docs/coordinator.md "Staged rollouts"): records
 * the coordinator's own rollout.advance, rollout.halt and rollout.complete
 * events (domain/rollout-commands.ts stepRollout decides each from the
 * state, in the transaction that records it).
 *
 * - Reacting: a committed config.submit, rollout.resume or rollout.advance
 *   steps that graph's rollout, and an agent.report or agent.health steps
 *   the rollout of the reporting agent's graph (a failure halts it then,
 *   not a tick later). Right after the commit (setImmediate), never inside
 *   it.
 * - A timer every `tickMs` steps every rollout running or paused: pauses
 *   between batches end on it, and a coordinator restarted mid-rollout
 *   picks up where the log left it.
 *
 * Every step is an audit event, so replay rebuilds exactly where each
 * rollout stands; the driver keeps nothing of its own.
 */
import type { Coordinator } from '../coordinator.js';
import type { Actor } from '../domain/commands.js';
import { stepRollout } from '../domain/rollout-commands.js';
import type { AuditEvent } from '../domain/events.js';

/** Steps taken at most per graph per wake: each releases up to MAX_RELEASED_PER_EVENT agents; the next tick continues. */
const MAX_STEPS_PER_WAKE = 64;

export const DEFAULT_ROLLOUT_TICK_MS = 1000;

export class RolloutDriver {
  private readonly timer: NodeJS.Timeout;
  private readonly self: Actor;
  private readonly pending = new Set<string>();
  private readonly activeQuery;
  private readonly followersQuery;

  constructor(
    private readonly coordinator: Coordinator,
    tickMs = DEFAULT_ROLLOUT_TICK_MS,
  ) {
    this.self = { keyId: coordinator.identity.keyId, role: 'coordinator' };
    const sqlite = coordinator.database.sqlite;
    this.activeQuery = sqlite.prepare<[], { id: string }>("SELECT id FROM rollouts WHERE status IN ('running', 'paused')");
    this.followersQuery = sqlite.prepare<[string], { id: string }>("SELECT id FROM agents WHERE status = 'enrolled' AND desired_graph = ? AND pinned_config IS NULL");
    coordinator.commits.subscribe((event) => this.heard(event));
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
    coordinator.onClose(() => clearInterval(this.timer));
  }

  /** Steps every running or paused rollout. Never throws (a failed step is retried by the next tick). */
  tick(): void {
    if (this.coordinator.closed) return;
    try {
      for (const { id } of this.activeQuery.all()) this.step(id);
    } catch {
      // A closed or busy database: the next tick sees the same rollouts again.
    }
  }

  private heard(event: AuditEvent): void {
    let graph: string | null = null;
    switch (event.action) {
      case 'config.submit':
      case 'rollout.resume':
      case 'rollout.advance':
        graph = event.subject;
        break;
      case 'agent.report':
      case 'agent.health':
        graph = this.coordinator.state.get('agents', event.subject)?.desiredGraph ?? null;
        break;
      default:
        return;
    }
    if (graph === null || this.pending.has(graph)) return;
    this.pending.add(graph);
    setImmediate(() => {
      this.pending.delete(graph);
      try {
        this.step(graph);
      } catch {
        // The next tick tries again.
      }
    });
  }

  /** Takes every step of `graph`'s rollout due now (bounded); rollout.advance commits wake nobody else here (pending). */
  private step(graph: string): void {
    const { coordinator } = this;
    if (coordinator.closed) return;
    const row = coordinator.state.get('rollouts', graph);
    if (!row || (row.status !== 'running' && row.status !== 'paused')) return;
    this.pending.add(graph);
    try {
      for (let steps = 0; steps < MAX_STEPS_PER_WAKE; steps++) {
        const followers = this.followersQuery.all(graph).map(({ id }) => id);
        const recorded = coordinator.record(this.self, (context) => stepRollout(context, graph, followers));
        if (!recorded || recorded.action !== 'rollout.advance') break;
      }
    } finally {
      this.pending.delete(graph);
    }
  }
}
