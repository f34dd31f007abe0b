/**
 * The live page's server-sent events (`text/event-stream`): each open
 * stream gets the fleet now (a LiveFleet, its client's page of agents)
 * when it opens, and again whenever what it would show changed.
 *
 * When: an event committing (the coordinator's event bus) schedules an
 * update, coalesced: at most one per `minIntervalMs`, and no more often
 * than 20 times the last read of the fleet took (a 10,000-agent fleet is a
 * read of tens of ms: the page costs the coordinator ≤ ~5% of a core
 * however fast events commit). Presence and fetch progress change without
 * events, so every `tickMs` the fleet is read again too. Either way a
 * stream is sent only what differs from what it was last sent (ignoring
 * the time of the reading), so a quiet fleet costs nothing on the wire but
 * a heartbeat comment every `heartbeatMs`, which keeps proxies from
 * closing an idle connection. A stream opening (and `viewer.live`) reuses
 * the last reading while no event committed since and it is younger than
 * `minIntervalMs`: opening streams in a loop costs no more readings.
 *
 * Messages are whole pages, not diffs: a page is bounded (its agents by
 * MAX_LIVE_AGENT_LIMIT, graphs by MAX_LIVE_GRAPHS), and a client that
 * missed one (a slow reader, a reconnect) needs nothing but the next.
 * A client that does not read holds one message queued, no more: updates
 * meanwhile are skipped and the latest sent once it reads again; one that
 * reads nothing for `stallMs` is closed.
 *
 * Bounded: MAX_LIVE_STREAMS_PER_SESSION per session and
 * MAX_LIVE_STREAMS_PER_KEY per key (one more closes the holder's oldest,
 * which is told why, so a reloaded tab does not fight its predecessor),
 * MAX_LIVE_STREAMS in all (one more is refused: TOO_MANY_STREAMS). A
 * stream closes when its session ends (logout, expiry, its key revoked:
 * checked at every tick), when the server stops, and when the coordinator
 * closes. Each close is said first (`event: closed`, data: why), so the
 * page stops reconnecting.
 */
import { FerryError } from '../../protocol/errors.js';
import type { LiveFleet } from '../../protocol/api/viewer-views.js';

export const MAX_LIVE_STREAMS_PER_SESSION = 4;
export const MAX_LIVE_STREAMS_PER_KEY = 8;
export const MAX_LIVE_STREAMS = 64;

export interface LiveStreamTimings {
  /** Least time between two readings of the fleet for committed events (default 500 ms). */
  minIntervalMs: number;
  /** How often the fleet is read regardless (default 5 s): presence changes with time. */
  tickMs: number;
  /** A comment sent on a stream that was sent nothing for this long (default 15 s). */
  heartbeatMs: number;
  /** A stream whose client read nothing for this long is closed (default 60 s). */
  stallMs: number;
}

export const DEFAULT_LIVE_STREAM_TIMINGS: LiveStreamTimings = { minIntervalMs: 500, tickMs: 5000, heartbeatMs: 15_000, stallMs: 60_000 };

/** What the streams are fed: a reading of the fleet, cut per stream (live-fleet.ts), and events as they commit. */
export interface LiveFleetFeed<Now> {
  read(): Now;
  page(now: Now, query: StreamQuery): LiveFleet;
  /** Calls `listener` after each committed event (no unsubscribe: the streams ignore it while none is open). */
  onCommit(listener: () => void): void;
  now(): number;
}

export type StreamQuery = { agentOffset?: number | undefined; agentLimit?: number | undefined; agentQuery?: string | undefined };

/** Who opened a stream, and how to tell whether they still may read. */
export interface StreamOwner {
  /** The session (a digest of its id, never the id). */
  session: string;
  keyId: string;
  /** Whether the session is still live and its key still allowed; checked at every tick. */
  stillValid: () => boolean;
}

interface Stream {
  owner: StreamOwner;
  query: StreamQuery;
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** What was last sent, without its time (to send only changes). */
  lastKey: string;
  /** An update was skipped because the client had not read the previous one. */
  behind: boolean;
  /** When something was last queued, and when the client last read (ms). */
  lastSentAt: number;
  blockedSince: number | null;
  closed: boolean;
}

const encoder = new TextEncoder();

/** `data` as one SSE message: JSON has no raw newlines, so one `data:` line. */
const message = (event: string, data: string, id?: number, prefix = ''): Uint8Array => encoder.encode(`${prefix}${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${data}\n\n`);

/** What the viewer's routes use of the live fleet (routes.ts); absent offline. */
export interface LiveFleetService {
  /** The fleet now, the page `query` asks for (`viewer.live`). */
  snapshot(query: StreamQuery): LiveFleet;
  open(owner: StreamOwner, query: StreamQuery, aborted: AbortSignal): ReadableStream<Uint8Array>;
  closeSession(session: string, why: string): void;
}

export class LiveStreams<Now> implements LiveFleetService {
  private readonly streams = new Set<Stream>();
  private readonly timings: LiveStreamTimings;
  private timer: NodeJS.Timeout | undefined;
  private scheduled: NodeJS.Timeout | undefined;
  private lastReadAt = 0;
  private lastReadMs = 0;
  private stopped = false;
  /** Readings of the fleet so far (tests read it). */
  reads = 0;
  /** The last reading, and whether an event committed since. */
  private last: { now: Now; at: number } | undefined;
  private committed = false;

  constructor(
    private readonly feed: LiveFleetFeed<Now>,
    timings: Partial<LiveStreamTimings> = {},
    private readonly log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
  ) {
    this.timings = { ...DEFAULT_LIVE_STREAM_TIMINGS, ...timings };
    feed.onCommit(() => {
      this.committed = true;
      if (this.streams.size > 0) this.schedule();
    });
  }

  snapshot(query: StreamQuery): LiveFleet {
    return this.feed.page(this.reading(), query);
  }

  /**
   * The fleet now: the last reading while no event committed since and it
   * is younger than minIntervalMs, else a new one. A reading is tens of ms
   * at 10,000 agents: opening streams or asking `viewer.live` in a loop
   * costs at most one each minIntervalMs.
   */
  private reading(): Now {
    const at = this.feed.now();
    if (this.last && !this.committed && at - this.last.at < this.timings.minIntervalMs) return this.last.now;
    this.committed = false;
    const now = this.feed.read();
    this.reads++;
    this.last = { now, at };
    return now;
  }

  /** Streams open now. */
  get size(): number {
    return this.streams.size;
  }

  /**
   * Opens a stream for `owner`, with its first message already queued.
   * Refuses (TOO_MANY_STREAMS) beyond MAX_LIVE_STREAMS, and
   * (SHUTTING_DOWN) once stopped; closes the owner's oldest stream beyond
   * the per-session and per-key limits. What the feed throws propagates,
   * and no stream is left open.
   */
  open(owner: StreamOwner, query: StreamQuery, aborted: AbortSignal): ReadableStream<Uint8Array> {
    if (this.stopped) throw new FerryError('SHUTTING_DOWN', 'the coordinator is shutting down');
    this.makeRoom((stream) => stream.owner.session === owner.session, MAX_LIVE_STREAMS_PER_SESSION, 'another live page of this session opened');
    this.makeRoom((stream) => stream.owner.keyId === owner.keyId, MAX_LIVE_STREAMS_PER_KEY, 'another live page of this key opened');
    if (this.streams.size >= MAX_LIVE_STREAMS) throw new FerryError('TOO_MANY_STREAMS', `${MAX_LIVE_STREAMS} live pages are open on this coordinator, the most it serves at once`);
    const first = this.feed.page(this.reading(), query);
    let stream!: Stream;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        stream = { owner, query, controller, lastKey: '', behind: false, lastSentAt: 0, blockedSince: null, closed: false };
        // How long a browser waits before reconnecting a stream that broke (EventSource), with the first page.
        this.send(stream, first, 'retry: 3000\n');
      },
      pull: () => {
        // The client read what was queued: send what it missed meanwhile.
        stream.blockedSince = null;
        if (stream.behind && !stream.closed) {
          stream.behind = false;
          stream.lastKey = '';
          this.schedule();
        }
      },
      cancel: () => this.forget(stream),
    });
    this.streams.add(stream);
    aborted.addEventListener('abort', () => this.close(stream, 'the client went away'), { once: true });
    this.arm();
    return body;
  }

  /** Closes every stream of `session` (its digest), saying why: logout. */
  closeSession(session: string, why: string): void {
    for (const stream of [...this.streams]) if (stream.owner.session === session) this.close(stream, why);
  }

  /** Closes every stream and refuses new ones: the server stops, or the coordinator closes. Idempotent. */
  stop(why: string): void {
    this.stopped = true;
    for (const stream of [...this.streams]) this.close(stream, why);
    this.disarm();
  }

  private makeRoom(owned: (stream: Stream) => boolean, limit: number, why: string): void {
    const own = [...this.streams].filter(owned);
    for (const stream of own.slice(0, Math.max(0, own.length - limit + 1))) this.close(stream, why);
  }

  /** Queues `page` unless it is what `stream` last got; skipped (and marked behind) while the client has not read the last. */
  private send(stream: Stream, page: LiveFleet, prefix = ''): void {
    const key = JSON.stringify({ ...page, at: 0 });
    if (key === stream.lastKey) return;
    if ((stream.controller.desiredSize ?? 0) <= 0) {
      stream.behind = true;
      return;
    }
    stream.lastKey = key;
    stream.lastSentAt = this.feed.now();
    stream.controller.enqueue(message('fleet', JSON.stringify(page), page.seq, prefix));
  }

  private close(stream: Stream, why: string): void {
    if (stream.closed) return;
    try {
      stream.controller.enqueue(message('closed', JSON.stringify(why)));
      stream.controller.close();
    } catch {
      // Already errored or cancelled by the client.
    }
    this.forget(stream);
  }

  private forget(stream: Stream | undefined): void {
    if (!stream) return;
    stream.closed = true;
    this.streams.delete(stream);
    if (this.streams.size === 0) this.disarm();
  }

  /** The periodic tick runs while a stream is open. */
  private arm(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => this.tick(), this.timings.tickMs);
    this.timer.unref();
  }

  private disarm(): void {
    clearInterval(this.timer);
    clearTimeout(this.scheduled);
    this.timer = undefined;
    this.scheduled = undefined;
  }

  /** An update soon: at once if the last reading is old enough, else when it is (one pending at most). */
  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    const interval = Math.max(this.timings.minIntervalMs, 20 * this.lastReadMs);
    const wait = Math.max(0, this.lastReadAt + interval - this.feed.now());
    this.scheduled = setTimeout(() => {
      this.scheduled = undefined;
      this.update();
    }, wait);
    this.scheduled.unref();
  }

  private tick(): void {
    const now = this.feed.now();
    for (const stream of [...this.streams]) {
      if (!stream.owner.stillValid()) {
        this.close(stream, 'the session ended: log in again with `ferry audit view`');
        continue;
      }
      const waiting = (stream.controller.desiredSize ?? 0) <= 0;
      if (waiting) stream.blockedSince ??= now;
      if (stream.blockedSince !== null && now - stream.blockedSince >= this.timings.stallMs) {
        this.close(stream, 'the client stopped reading');
        continue;
      }
      if (!waiting && now - stream.lastSentAt >= this.timings.heartbeatMs) {
        stream.lastSentAt = now;
        stream.controller.enqueue(encoder.encode(': heartbeat\n\n'));
      }
    }
    this.schedule();
  }

  /** Reads the fleet once and sends each stream its page, if it changed. */
  private update(): void {
    if (this.streams.size === 0 || this.stopped) return;
    const started = performance.now();
    this.lastReadAt = this.feed.now();
    let now: Now;
    try {
      now = this.reading();
    } catch {
      // The coordinator closing under a pending update: its close hook stops the streams.
      return;
    }
    for (const stream of [...this.streams]) {
      try {
        this.send(stream, this.feed.page(now, stream.query));
      } catch (error) {
        // A page that cannot be made (or, checking replies, does not match its schema) ends its stream, not the process.
        this.log(`ferry coordinator: live page stream: ${error instanceof Error ? error.message : String(error)}`);
        this.close(stream, 'the coordinator failed to make this page (its log has the details)');
      }
    }
    this.lastReadMs = performance.now() - started;
  }
}
