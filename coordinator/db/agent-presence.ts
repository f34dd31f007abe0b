/**
 * When each agent was last heard from. Heartbeats are not audit events
 * (DESIGN.md section 4), and every authenticated agent request is one, so
 * they are coalesced: a touch only updates memory, and the latest time of
 * each agent heard since the last flush is written in one transaction every
 * PRESENCE_FLUSH_MS (and at close). With 10,000 agents that is one write a
 * second instead of hundreds of single-row commits. A crash loses at most
 * the last interval of heartbeats: the next request of each agent brings it
 * back, and nothing but "last seen" reads them.
 */
import type Database from 'better-sqlite3';

export const PRESENCE_FLUSH_MS = 1000;

export class AgentPresence {
  /** Heard since the last flush: agent id -> time (ms). */
  private readonly pending = new Map<string, number>();
  private readonly upsert: Database.Statement<[string, number]>;
  private readonly select: Database.Statement<[string], { last_seen: number }>;
  private readonly writeAll: (entries: [string, number][]) => void;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly sqlite: Database.Database,
    private readonly now: () => number,
  ) {
    this.upsert = sqlite.prepare('INSERT INTO agent_presence (id, last_seen) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)');
    this.select = sqlite.prepare('SELECT last_seen FROM agent_presence WHERE id = ?');
    this.writeAll = sqlite.transaction((entries: [string, number][]) => {
      for (const [id, at] of entries) this.upsert.run(id, at);
    });
    this.timer = setInterval(() => this.flush(), PRESENCE_FLUSH_MS);
    this.timer.unref();
  }

  /** Records that `agentId` was heard from now (memory only until the next flush). */
  touch(agentId: string): void {
    this.pending.set(agentId, this.now());
  }

  /** When `agentId` was last heard from (ms), or null if never. */
  lastSeen(agentId: string): number | null {
    return this.pending.get(agentId) ?? this.select.get(agentId)?.last_seen ?? null;
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
