/**
 * A relay's prefetch (docs/relays.md, "Prefetch"): it holds a watch on its
 * coordinator (`GET /v1/relay/prefetch`) that answers which closures its
 * agents are to run, at once when that changes (a config submitted to a
 * graph its agents follow, a pin, an assignment, a relay assigned), and
 * fetches each into its cache in the background, through the same
 * verified fetch-through the agents' requests use (RelayCache), so the
 * site is ready before its agents ask.
 *
 * Bounded: one closure at a time, at most `concurrency` fetches in flight
 * within it (a batch of small blobs, or one large blob), and a closure is
 * prefetched only while the closures this round prefetched fit in the
 * cache's limit together (more would evict what was just fetched). What a
 * prefetch fetches is counted apart from the agents' hits and misses.
 *
 * Nothing here widens what the relay reads: the coordinator decides every
 * request of the relay's key from its own state (the desired configs of
 * the agents the relay serves), and every object is verified by its id.
 *
 * The same answer names the relay's upstream relay and its grants there
 * (fetch-sources.ts), so the watch runs with `--no-prefetch` too
 * (`fetchClosures: false`): it then only keeps the upstream relay known.
 */
import { randomBytes } from 'node:crypto';
import { MAX_BATCH_OBJECTS, MAX_BATCHED_BLOB_BYTES } from '../protocol/data-protocol.js';
import type { CoordinatorHttpClient } from '../protocol/http-client.js';
import { MAX_WATCH_SECONDS } from '../protocol/config.js';
import type { PrefetchTarget, UpstreamOffer } from '../protocol/relay-prefetch.js';
import type { RelayPrefetchStatus } from '../protocol/relays.js';
import type { RelayCache, Tally } from './relay-cache.js';

/** Fetches in flight at once within a closure (each a batch of small blobs or one large blob). */
export const PREFETCH_CONCURRENCY = 4;
/** Small blobs asked for per task (RelayCache.ensureBlobs batches them further by bytes). */
const SMALL_BLOBS_PER_TASK = MAX_BATCH_OBJECTS;
/** Backoff after a failed watch: doubled per failure up to the last. */
const RETRY_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000];

export interface RelayPrefetcherOptions {
  log?: (line: string) => void;
  /** Called as progress is made (the relay writes its status soon after). */
  onProgress?: () => void;
  concurrency?: number;
  /** How long each watch is held (seconds, at most MAX_WATCH_SECONDS); tests shorten it. */
  watchSeconds?: number;
  /** Prefetch the closures named (default true); false: watch only for the upstream relay. */
  fetchClosures?: boolean;
  /** Told what each answer says of the upstream relay (undefined: none), with the challenge it was asked with. */
  onUpstream?: (offer: UpstreamOffer | undefined, challenge: string) => void;
}

const keyOf = (target: PrefetchTarget): string => `${target.configId}.${target.system}`;

export class RelayPrefetcher {
  private stopped = false;
  private readonly aborted = new AbortController();
  private known = 'none';
  private wanted: PrefetchTarget[] = [];
  private truncated = false;
  private readonly ready = new Set<string>();
  private readonly skipped = new Set<string>();
  private readonly failed = new Map<string, string>();
  private current: { target: PrefetchTarget; objectsDone: number; objectsTotal: number } | undefined;
  private running: Promise<void> | undefined;
  /** Set when the wanted set changed while a round ran: another round follows. */
  private again = false;
  readonly tally: Tally = { hits: 0, misses: 0, bytesFetched: 0 };
  private prefetched = 0;

  constructor(
    private readonly cache: RelayCache,
    private readonly http: CoordinatorHttpClient,
    private readonly options: RelayPrefetcherOptions = {},
  ) {}

  /** Starts watching (in the background) until `stop`. */
  start(): void {
    void this.watch();
  }

  /** Stops watching and starting prefetches; resolves once the one under way ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.aborted.abort();
    await this.running;
  }

  /** What `ferry relay status` shows of the prefetch. */
  status(): RelayPrefetchStatus {
    return {
      wanted: this.wanted.length,
      truncated: this.truncated,
      ready: this.wanted.filter((target) => this.ready.has(keyOf(target))).map(keyOf),
      current: this.current ? { closure: keyOf(this.current.target), objectsDone: this.current.objectsDone, objectsTotal: this.current.objectsTotal } : null,
      skipped: this.wanted.filter((target) => this.skipped.has(keyOf(target))).map(keyOf),
      failed: this.wanted.filter((target) => this.failed.has(keyOf(target))).map((target) => ({ closure: keyOf(target), error: this.failed.get(keyOf(target))! })),
      prefetches: this.prefetched,
      objectsFetched: this.tally.misses,
      objectsCached: this.tally.hits,
      bytesFetched: this.tally.bytesFetched,
    };
  }

  private async watch(): Promise<void> {
    let failures = 0;
    const wait = Math.min(MAX_WATCH_SECONDS, this.options.watchSeconds ?? MAX_WATCH_SECONDS);
    while (!this.stopped) {
      try {
        // Fresh per query: the upstream offer's proof is bound to it, so an old answer replayed does not verify.
        const challenge = randomBytes(16).toString('hex');
        const answer = await this.http.call('relay.prefetch', { known: this.known, wait, challenge }, { signal: this.aborted.signal });
        failures = 0;
        if (this.stopped) return;
        // Every answer, changed or not: its grants are renewed.
        this.options.onUpstream?.(answer.upstream, challenge);
        if (this.options.fetchClosures === false) {
          this.known = answer.digest;
          continue;
        }
        if (answer.digest === this.known) {
          // Unchanged at the watch's deadline: what failed is tried again.
          if (this.failed.size > 0) this.kick();
          continue;
        }
        this.known = answer.digest;
        this.wanted = answer.configs;
        this.truncated = answer.truncated;
        // A closure wanted again after it left the set is checked again (it may have been evicted).
        const wantedKeys = new Set(answer.configs.map(keyOf));
        for (const set of [this.ready, this.skipped]) for (const key of set) if (!wantedKeys.has(key)) set.delete(key);
        for (const key of this.failed.keys()) if (!wantedKeys.has(key)) this.failed.delete(key);
        this.kick();
      } catch (error) {
        if (this.stopped) return;
        const delay = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]!;
        failures++;
        this.options.log?.(`ferry relay: prefetch watch: ${(error as Error).message} (again in ${delay / 1000} s)`);
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  /** Starts a round over the wanted closures, or asks the one running for another. */
  private kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.round();
      } while (this.again && !this.stopped);
    })().finally(() => (this.running = undefined));
  }

  /** Prefetches each wanted closure not ready yet, in order, while they fit in the cache together. */
  private async round(): Promise<void> {
    let planned = 0;
    for (const target of this.wanted) {
      if (this.stopped || this.again) return;
      const key = keyOf(target);
      try {
        await this.cache.manifest(target.configId, target.system, this.tally);
        const index = await this.cache.closure(target.configId, this.tally);
        if (planned > 0 && planned + index.bytes > this.cache.limitBytes) {
          this.skipped.add(key);
          continue;
        }
        planned += index.bytes;
        if (this.ready.has(key)) continue;
        await this.fetchClosure(target, index);
        this.ready.add(key);
        this.failed.delete(key);
        this.prefetched++;
      } catch (error) {
        this.failed.set(key, (error as Error).message.slice(0, 300));
        this.options.log?.(`ferry relay: prefetch of ${key} failed: ${(error as Error).message}`);
      } finally {
        this.current = undefined;
        this.options.onProgress?.();
      }
    }
    await this.cache.evictIfNeeded();
  }

  /** Fetches every blob of `index` not here yet, `concurrency` tasks at a time. */
  private async fetchClosure(target: PrefetchTarget, index: Awaited<ReturnType<RelayCache['closure']>>): Promise<void> {
    const small: string[] = [];
    const tasks: string[][] = [];
    for (const [id, object] of index.objects) {
      if (object.kind !== 'file') continue;
      if (object.size > MAX_BATCHED_BLOB_BYTES) tasks.push([id]);
      else small.push(id);
    }
    for (let start = 0; start < small.length; start += SMALL_BLOBS_PER_TASK) tasks.push(small.slice(start, start + SMALL_BLOBS_PER_TASK));
    const progress = { target, objectsDone: 0, objectsTotal: small.length + tasks.length - Math.ceil(small.length / SMALL_BLOBS_PER_TASK) };
    this.current = progress;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < tasks.length && !this.stopped) {
        const ids = tasks[next++]!;
        await this.cache.ensureBlobs(index, ids, this.tally);
        progress.objectsDone += ids.length;
        this.options.onProgress?.();
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.options.concurrency ?? PREFETCH_CONCURRENCY) }, worker));
  }
}
