/**
 * Going offline and coming back, as audit events (agent.presence).
 * Presence itself is derived when asked (db/agent-presence.ts); this turns
 * its transitions across the offline threshold into events, which the
 * viewer replays and alerts follow.
 *
 * - Offline: a sweep every `sweepMs` records every enrolled agent that
 *   holds no watch and was not heard from for the offline threshold,
 *   counted from when it was last heard or from when this coordinator
 *   started, whichever is later: a coordinator that was down cannot tell
 *   an agent that was away from one that could not reach it, so after a
 *   restart every agent gets the whole threshold to come back.
 * - Back: the first request of an agent recorded offline records it
 *   online, right after that request (not inside it).
 *
 * Each is one event per transition, so the log grows with what happens to
 * the fleet, not with time.
 */
import type { Coordinator } from '../coordinator.js';
import * as commands from '../domain/commands.js';
import type { Actor } from '../domain/commands.js';

/** The sweep's period: a tenth of the offline threshold, between 1 s and 30 s. */
export function defaultSweepMs(offlineAfterMs: number): number {
  return Math.max(1000, Math.min(30_000, Math.floor(offlineAfterMs / 10)));
}

interface SweptAgent {
  id: string;
  recorded_presence: string | null;
}

export class PresenceEvents {
  /** Agents whose last agent.presence event says offline. */
  private readonly offline = new Set<string>();
  private readonly startedAt: number;
  private readonly timer: NodeJS.Timeout;
  private readonly self: Actor;
  private readonly sweepQuery;

  constructor(
    private readonly coordinator: Coordinator,
    sweepMs = defaultSweepMs(coordinator.presence.thresholds.offlineAfterMs),
  ) {
    this.startedAt = coordinator.now();
    this.self = { keyId: coordinator.identity.keyId, role: 'coordinator' };
    this.sweepQuery = coordinator.database.sqlite.prepare<[], SweptAgent>(
      "SELECT id, recorded_presence FROM agents WHERE status = 'enrolled'",
    );
    for (const agent of this.sweepQuery.all()) if (agent.recorded_presence === 'offline') this.offline.add(agent.id);
    coordinator.commits.subscribe((event) => {
      if (event.action !== 'agent.presence') return;
      const { agentId, presence } = event.payload as { agentId: string; presence: string };
      if (presence === 'offline') this.offline.add(agentId);
      else this.offline.delete(agentId);
    });
    coordinator.presence.onHeard = (agentId) => {
      if (this.offline.has(agentId)) setImmediate(() => this.recordBack(agentId));
    };
    this.timer = setInterval(() => this.sweep(), sweepMs);
    this.timer.unref();
    coordinator.onClose(() => {
      clearInterval(this.timer);
      coordinator.presence.onHeard = undefined;
    });
  }

  /** Records every agent that went offline since the last sweep. Never throws (a sweep that fails is retried by the next). */
  sweep(): void {
    const { coordinator } = this;
    if (coordinator.closed) return;
    try {
      const now = coordinator.now();
      const threshold = coordinator.presence.thresholds.offlineAfterMs;
      const seen = coordinator.presence.lastSeenAll();
      for (const agent of this.sweepQuery.all()) {
        if (agent.recorded_presence === 'offline' || coordinator.presence.isWatching(agent.id)) continue;
        const lastSeen = seen.get(agent.id) ?? null;
        if (now - Math.max(lastSeen ?? 0, this.startedAt) < threshold) continue;
        coordinator.record(this.self, (context) => commands.recordPresence(context, { agentId: agent.id, presence: 'offline', lastSeen }));
      }
    } catch {
      // A closed or busy database: the next sweep sees the same agents again.
    }
  }

  private recordBack(agentId: string): void {
    const { coordinator } = this;
    if (coordinator.closed || !this.offline.has(agentId)) return;
    try {
      coordinator.record(this.self, (context) => commands.recordPresence(context, { agentId, presence: 'online', lastSeen: coordinator.presence.lastSeen(agentId) }));
    } catch {
      // The agent's next request tries again.
    }
  }
}
