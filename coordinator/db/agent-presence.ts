/**
 * When each agent was last heard from. Heartbeats are not audit events
 * (DESIGN.md section 4), and every authenticated agent request is one, so
 * they are coalesced: a touch only updates memory, and the latest time of
 * each agent heard since the last flush is written in one transaction every
 * PRESENCE_FLUSH_MS (and at close). With 10,000 agents that is one write a
 * second instead of hundreds of single-row commits. A crash loses at most
 * the last interval of heartbeats: the next request of each agent brings it
 * back, and nothing but "last seen" and presence read them.
 *
 * Presence (online, stale, offline) is derived when asked, from what is
 * known now: an agent holding a watch is online (its connection is open and
 * it re-asks at least every MAX_WATCH_SECONDS); otherwise by how long ago it
 * was last heard from, against two thresholds.
 */
import type Database from 'better-sqlite3';
import type { Presence } from '../../protocol/api/views.js';

export const PRESENCE_FLUSH_MS = 1000;

/** When an agent not holding a watch turns stale, then offline (`ferry coordinator serve --presence-stale/--presence-offline`). */
export interface PresenceThresholds {
  staleAfterMs: number;
  offlineAfterMs: number;
}

/**
 * Defaults: an agent re-asks its watch at least every 240 s
 * (MAX_WATCH_SECONDS), so one unheard of for 5 minutes missed at least one
 * round; 15 minutes, three.
 */
export const DEFAULT_PRESENCE_THRESHOLDS: PresenceThresholds = { staleAfterMs: 5 * 60_000, offlineAfterMs: 15 * 60_000 };

export class AgentPresence {
  /** Heard since the last flush: agent id -> time (ms). */
  private readonly pending = new Map<string, number>();
  /** Watches held now, per agent. */
  private readonly watching = new Map<string, number>();
  private readonly upsert: Database.Statement<[string, number]>;
  private readonly select: Database.Statement<[string], { last_seen: number }>;
  private readonly selectAll: Database.Statement<[], { id: string; last_seen: number }>;
  private readonly writeAll: (entries: [string, number][]) => void;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly sqlite: Database.Database,
    private readonly now: () => number,
    readonly thresholds: PresenceThresholds = DEFAULT_PRESENCE_THRESHOLDS,
  ) {
    if (!(thresholds.staleAfterMs > 0 && thresholds.offlineAfterMs >= thresholds.staleAfterMs)) {
      throw new RangeError(`presence thresholds: stale after ${thresholds.staleAfterMs} ms, offline after ${thresholds.offlineAfterMs} ms: stale must be positive and come first`);
    }
    this.upsert = sqlite.prepare('INSERT INTO agent_presence (id, last_seen) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)');
    this.select = sqlite.prepare('SELECT last_seen FROM agent_presence WHERE id = ?');
    this.selectAll = sqlite.prepare('SELECT id, last_seen FROM agent_presence');
    this.writeAll = sqlite.transaction((entries: [string, number][]) => {
      for (const [id, at] of entries) this.upsert.run(id, at);
    });
    this.timer = setInterval(() => this.flush(), PRESENCE_FLUSH_MS);
    this.timer.unref();
  }

  /**
   * Called with each agent heard from (a touch or a watch held): how
   * presence events learn at once that an agent recorded offline is back.
   * Must be cheap: it runs on every authenticated agent request.
   */
  onHeard: ((agentId: string) => void) | undefined;

  /** Records that `agentId` was heard from now (memory only until the next flush). */
  touch(agentId: string): void {
    this.pending.set(agentId, this.now());
    this.onHeard?.(agentId);
  }

  /** Whether `agentId` holds a watch now. */
  isWatching(agentId: string): boolean {
    return this.watching.has(agentId);
  }

  /** Counts a watch of `agentId` as held (it is online meanwhile) until the returned function is called. */
  holdWatch(agentId: string): () => void {
    this.watching.set(agentId, (this.watching.get(agentId) ?? 0) + 1);
    this.onHeard?.(agentId);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.watching.get(agentId) ?? 1) - 1;
      if (left === 0) this.watching.delete(agentId);
      else this.watching.set(agentId, left);
    };
  }

  /** Whether `agentId` is online (holds a watch, or was heard from recently), stale or offline (never heard from: offline). */
  presenceOf(agentId: string): Presence {
    return this.presenceSeen(agentId, this.lastSeen(agentId));
  }

  /** `agentId`'s presence, given when it was last heard from (`lastSeen`, or an entry of `lastSeenAll`). */
  presenceSeen(agentId: string, seen: number | null): Presence {
    if (this.watching.has(agentId)) return 'online';
    if (seen === null) return 'offline';
    const quiet = this.now() - seen;
    return quiet < this.thresholds.staleAfterMs ? 'online' : quiet < this.thresholds.offlineAfterMs ? 'stale' : 'offline';
  }

  /** When `agentId` was last heard from (ms), or null if never. */
  lastSeen(agentId: string): number | null {
    return this.pending.get(agentId) ?? this.select.get(agentId)?.last_seen ?? null;
  }

  /**
   * When each agent was last heard from (ms), as `lastSeen` says, those
   * never heard from absent: one read of the table for the whole fleet,
   * where `lastSeen` is a query per agent (~10 µs: 0.1 s at 10,000 agents).
   */
  lastSeenAll(): Map<string, number> {
    const seen = new Map<string, number>();
    for (const row of this.selectAll.all()) seen.set(row.id, row.last_seen);
    for (const [id, at] of this.pending) seen.set(id, at);
    return seen;
  }

  /**
   * Writes what is pending. Never throws: a database busy or closed under it
   * keeps the entries for the next flush (heartbeats are not worth failing
   * anything for).
   */
  flush(): void {
    if (this.pending.size === 0 || !this.sqlite.open || this.sqlite.inTransaction) return;
    try {
      this.writeAll([...this.pending]);
    } catch {
      return;
    }
    this.pending.clear();
  }

  /** Flushes and stops the timer; call before the database closes. */
  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
