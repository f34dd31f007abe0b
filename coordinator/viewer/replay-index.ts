/**
 * The replay index: fleet state at any seq of an audit log, computed with
 * the coordinator's own reducer (applyEvent into a MemoryStateStore), with a
 * snapshot every `snapshotEvery` events so that reaching any position
 * replays at most that many events; plus the timeline of every event, its
 * filters and full-text search, and the diff of what one event changed.
 *
 * Replay stops at the first event that cannot be replayed (a missing seq, a
 * row that is not a valid event, an event the reducer refuses): positions up
 * to the event before it can be shown, and `stoppedAt` says why the rest
 * cannot. The timeline still lists every row, so the viewer can show it.
 */
import { FerryError } from '../../protocol/errors.js';
import { AuditEventSchema, type AuditEvent } from '../domain/events.js';
import { applyEvent } from '../domain/reducer.js';
import { MemoryStateStore } from '../domain/state.js';
import { applyAndDiff } from './event-diff.js';
import type { LogSource } from './log-source.js';
import { Snapshots } from './snapshot.js';
import type { ReplayStop, RowChange, TimelineEntry, TimelinePage } from '../../protocol/api/viewer-views.js';
import { entryMatcher, timelineEntry, type TimelineFilter } from './timeline.js';

export interface ReplayIndexOptions {
  /** Keep a snapshot every this many events (default 500); every ~10,000 events one of them is a full copy (see snapshot.ts). */
  snapshotEvery?: number;
  /** Make every this-many-th snapshot a full copy (default: one per ~10,000 events). */
  fullSnapshotEvery?: number;
  /** Read and index this many events between yields to the event loop (default 2000). */
  chunk?: number;
}

export interface TimelinePageRequest {
  /** At most this many entries (default 100). */
  limit?: number;
  /** Entries just before this seq (older page) … */
  before?: number;
  /** … or just after this seq (newer page) … */
  after?: number;
  /** … or centred on this seq (default: the newest page). */
  around?: number;
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function lastIndexAtOrBelow(values: ArrayLike<number>, limit: number): number {
  let low = 0;
  let high = values.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (values[middle]! <= limit) {
      found = middle;
      low = middle + 1;
    } else high = middle - 1;
  }
  return found;
}

export class ReplayIndex {
  readonly snapshotEvery: number;
  private readonly chunk: number;
  private readonly entries: TimelineEntry[] = [];
  private readonly entrySeqs: number[] = [];
  /** Running maximum of wall times, so "the state at time T" is a binary search even if the clock stepped back. */
  private readonly wallMax: number[] = [];
  private readonly headMoves = new Map<string, number[]>();
  private readonly agentNames = new Map<string, string>();
  private readonly keyLabels = new Map<string, string>();
  private readonly snapshots: Snapshots;
  /** The same string once (actor keys, agent ids, actions… repeat across 100,000s of entries). */
  private readonly strings = new Map<string, string>();
  private tipSeq = 0;
  private stop: ReplayStop | null = null;
  private readThrough = 0;
  private building: Promise<void> | undefined;
  private cursor: { store: MemoryStateStore; seq: number } | undefined;
  private searchCache: { text: string; readThrough: number; seqs: ReadonlySet<number> } | undefined;

  constructor(
    readonly source: LogSource,
    options: ReplayIndexOptions = {},
  ) {
    this.snapshotEvery = options.snapshotEvery ?? 500;
    this.chunk = options.chunk ?? 2000;
    this.snapshots = new Snapshots(new MemoryStateStore(), this.snapshotEvery, options.fullSnapshotEvery ?? Math.max(1, Math.round(10_000 / this.snapshotEvery)));
  }

  /** The highest seq indexed (the timeline's end). */
  get lastSeq(): number {
    return this.entrySeqs.at(-1) ?? 0;
  }

  /** Positions 0..replayableThrough can be reconstructed. */
  get replayableThrough(): number {
    return this.tipSeq;
  }

  /** Why replay stops before the end of the log, or null. */
  get stoppedAt(): ReplayStop | null {
    return this.stop;
  }

  /**
   * Indexes events the source gained since the last call, in chunks that
   * yield to the event loop (a live coordinator keeps serving while a big
   * log is indexed). Concurrent calls share one run.
   */
  refresh(): Promise<void> {
    if (this.building) return this.building;
    if (this.readThrough >= this.source.lastSeq()) return Promise.resolve();
    const run = async (): Promise<void> => {
      for (;;) {
        const last = this.source.lastSeq();
        if (this.readThrough >= last) return;
        const to = Math.min(this.readThrough + this.chunk, last);
        for (const event of this.source.read(this.readThrough + 1, to)) this.ingest(event);
        this.readThrough = to;
        if (this.readThrough < this.source.lastSeq()) await yieldToEventLoop();
      }
    };
    const building = run().finally(() => {
      if (this.building === building) this.building = undefined;
    });
    this.building = building;
    return building;
  }

  private ingest(stored: AuditEvent): void {
    if (stored.seq <= this.lastSeq) return;
    const entry = this.interned(timelineEntry(stored, (id) => this.agentNames.get(id)));
    if (entry.action === 'agent.enroll' && entry.agent) {
      const name = (stored.payload as { name?: unknown }).name;
      if (typeof name === 'string') this.agentNames.set(entry.agent, name);
    } else if (entry.action === 'key.add') {
      const { keyId, label } = stored.payload as { keyId?: unknown; label?: unknown };
      if (typeof keyId === 'string' && typeof label === 'string' && label) this.keyLabels.set(keyId, label);
    }
    const index = this.entries.length;
    this.entries.push(entry);
    this.entrySeqs.push(entry.seq);
    this.wallMax.push(Math.max(Number.isFinite(entry.wallTime) ? entry.wallTime : 0, this.wallMax.at(-1) ?? 0));
    if (entry.headMove && entry.graph) {
      const moves = this.headMoves.get(entry.graph) ?? [];
      moves.push(index);
      this.headMoves.set(entry.graph, moves);
    }
    if (this.stop) return;
    if (stored.seq !== this.tipSeq + 1) {
      this.stop = { seq: this.tipSeq + 1, message: `event ${this.tipSeq + 1} is missing from the log (the next row is ${stored.seq})` };
      return;
    }
    const parsed = AuditEventSchema.safeParse(stored);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      this.stop = { seq: stored.seq, message: `event ${stored.seq} is not a valid audit event (${issue.path.join('.') || 'event'}: ${issue.message})` };
      return;
    }
    try {
      applyEvent(this.snapshots.store, parsed.data);
    } catch (error) {
      this.stop = { seq: stored.seq, message: error instanceof Error ? error.message : String(error) };
      return;
    }
    this.tipSeq = stored.seq;
    if (this.tipSeq % this.snapshotEvery === 0) this.snapshots.take(this.tipSeq);
  }

  private intern(text: string): string;
  private intern(text: string | null): string | null;
  private intern(text: string | null): string | null {
    if (text === null) return null;
    const known = this.strings.get(text);
    if (known !== undefined) return known;
    this.strings.set(text, text);
    return text;
  }

  private interned(entry: TimelineEntry): TimelineEntry {
    entry.actorKey = this.intern(entry.actorKey);
    entry.actorRole = this.intern(entry.actorRole);
    entry.action = this.intern(entry.action);
    entry.subject = this.intern(entry.subject);
    entry.agent = this.intern(entry.agent);
    entry.graph = this.intern(entry.graph);
    return entry;
  }

  /** Snapshots kept (for diagnostics and the benchmark). */
  get snapshotCount(): number {
    return this.snapshots.count;
  }

  private readValid(from: number, to: number): AuditEvent[] {
    const events = this.source.read(from, to);
    if (events.length !== to - from + 1) throw new FerryError('NOT_REPLAYABLE', `the log changed while replaying: events ${from}..${to} are no longer all there`);
    return events.map((event) => {
      const parsed = AuditEventSchema.safeParse(event);
      if (!parsed.success) throw new FerryError('NOT_REPLAYABLE', `the log changed while replaying: event ${event.seq} is no longer a valid event`);
      return parsed.data;
    });
  }

  private checkPosition(seq: number): void {
    if (!Number.isInteger(seq) || seq < 0 || seq > this.lastSeq) throw new FerryError('OUT_OF_RANGE', `position ${seq} is outside the log (0..${this.lastSeq})`);
    if (seq > this.tipSeq) throw new FerryError('NOT_REPLAYABLE', `cannot replay to ${seq}: ${this.stop?.message ?? 'not indexed yet'}`);
  }

  /**
   * The fleet state after event `seq` (0: before the first event). Restores
   * the nearest snapshot at or before `seq` (or continues from the previous
   * call's position when that is closer) and replays the events in between.
   * The store is shared with the next call: read it, never keep or mutate it.
   */
  stateAt(seq: number): MemoryStateStore {
    this.checkPosition(seq);
    const base = this.snapshots.baseOf(seq);
    if (!this.cursor || this.cursor.seq > seq || this.cursor.seq < base) this.cursor = { store: this.snapshots.restore(seq), seq: base };
    const cursor = this.cursor;
    if (cursor.seq < seq) {
      try {
        for (const event of this.readValid(cursor.seq + 1, seq)) {
          applyEvent(cursor.store, event);
          cursor.seq = event.seq;
        }
      } catch (error) {
        this.cursor = undefined;
        throw error instanceof FerryError && error.code === 'NOT_REPLAYABLE' ? error : new FerryError('NOT_REPLAYABLE', `the log changed while replaying: ${(error as Error).message}`);
      }
    }
    return cursor.store;
  }

  /**
   * Event `seq` as stored and the state rows it changed (before/after),
   * computed by applying it with the reducer to the state after `seq - 1`.
   * `diff` is null, with the reason, for an event replay cannot reach or apply.
   */
  eventWithDiff(seq: number): { event: AuditEvent; diff: RowChange[] | null; replayProblem: string | null } {
    const [event] = this.source.read(seq, seq);
    if (!event) throw new FerryError('OUT_OF_RANGE', `no event ${seq} in the log`);
    if (seq > this.tipSeq) {
      const problem = this.stop && this.stop.seq === seq ? this.stop.message : `not replayable: replay stops at event ${this.stop?.seq ?? this.tipSeq + 1}${this.stop ? ` (${this.stop.message})` : ''}`;
      return { event, diff: null, replayProblem: problem };
    }
    const store = this.stateAt(seq - 1);
    try {
      const diff = applyAndDiff(store, AuditEventSchema.parse(event));
      this.cursor = { store, seq };
      return { event, diff, replayProblem: null };
    } catch (error) {
      this.cursor = undefined;
      return { event, diff: null, replayProblem: (error as Error).message };
    }
  }

  /** What the log calls a key: an agent's name, or the label a key was added with. */
  nameOf(keyId: string): string | null {
    return this.agentNames.get(keyId) ?? this.keyLabels.get(keyId) ?? null;
  }

  /** The timeline entry of `seq`, if indexed. */
  entry(seq: number): TimelineEntry | undefined {
    const index = lastIndexAtOrBelow(this.entrySeqs, seq);
    const entry = index >= 0 ? this.entries[index] : undefined;
    return entry?.seq === seq ? entry : undefined;
  }

  /** The position (seq) of the fleet at wall time `ms`: the last event at or before it, 0 before the first. */
  seqAtTime(ms: number): number {
    const index = lastIndexAtOrBelow(this.wallMax, ms);
    return index < 0 ? 0 : this.entries[index]!.seq;
  }

  /** The last `limit` head moves of `graph` at or before `seq`, oldest first. */
  headMovesOf(graph: string, seq: number, limit: number): TimelineEntry[] {
    const moves = this.headMoves.get(graph) ?? [];
    const seqs = moves.map((index) => this.entries[index]!.seq);
    const last = lastIndexAtOrBelow(seqs, seq);
    return moves.slice(Math.max(0, last + 1 - limit), last + 1).map((index) => this.entries[index]!);
  }

  /** Agent ids a filter value names: ids starting with it, or agents with that name. */
  private agentsNamed(value: string): Set<string> {
    const needle = value.toLowerCase();
    const ids = new Set<string>();
    for (const [id, name] of this.agentNames) if (id.startsWith(needle) || name.toLowerCase() === needle) ids.add(id);
    if (ids.size === 0) ids.add(needle);
    return ids;
  }

  private searchSeqs(text: string): ReadonlySet<number> {
    const cache = this.searchCache;
    if (cache && cache.text === text && cache.readThrough === this.readThrough) return cache.seqs;
    const seqs = new Set(this.source.searchPayloads(text));
    this.searchCache = { text, readThrough: this.readThrough, seqs };
    return seqs;
  }

  /** A page of the timeline narrowed by `filter` (see TimelineFilter). */
  timeline(filter: TimelineFilter, request: TimelinePageRequest = {}): TimelinePage {
    const limit = Math.max(1, Math.min(request.limit ?? 100, 1000));
    const matches = entryMatcher(filter, filter.agent ? this.agentsNamed(filter.agent) : null);
    const found = filter.text ? this.searchSeqs(filter.text) : null;
    const matching = this.entries.filter((entry) => (found === null || found.has(entry.seq)) && matches(entry));
    const firstAbove = (seq: number): number => {
      const index = matching.findIndex((entry) => entry.seq > seq);
      return index < 0 ? matching.length : index;
    };
    let start: number;
    if (request.before !== undefined) start = Math.max(0, firstAbove(request.before - 1) - limit);
    else if (request.after !== undefined) start = Math.min(firstAbove(request.after), Math.max(0, matching.length - limit));
    else if (request.around !== undefined) start = Math.max(0, Math.min(firstAbove(request.around - 1) - Math.floor(limit / 2), matching.length - limit));
    else start = Math.max(0, matching.length - limit);
    const end = Math.min(matching.length, start + limit);
    return { entries: matching.slice(start, end), total: matching.length, hasOlder: start > 0, hasNewer: end < matching.length };
  }
}
