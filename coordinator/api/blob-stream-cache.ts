/**
 * The compressed replies of `blobs.stream` (protocol/data-protocol.ts), kept
 * on disk: a cold deploy's stream is a whole closure (hundreds of MB) at a
 * level that costs ~10 s of a core, so twenty agents deploying it must not
 * compress it twenty times, and it does not fit the in-memory cache of
 * wire-compression.ts. Entries are keyed by the ids asked for (and the
 * level and window), so the agents of one rollout, asking for the same
 * closure in the same order, share one.
 *
 * Only streams the coordinator chose to prepare are kept: a closure's
 * canonical stream, after its push and at its first manifest
 * (`prepareClosureStream`). The compression runs in the background and
 * requests follow the file it writes, or read it once it is complete; a
 * request that goes away does not stop it. Any other stream (what is left
 * of a closure after a cut, a large change) is compressed for its request
 * only, at level 3: what a client asks for never decides what is computed
 * at level 9 or kept on disk, so no key can churn the cache or queue work
 * for later. A coordinator that stops leaves `.part` files, removed at the
 * next start. What is read back is not trusted: receivers verify every blob
 * against its id.
 *
 * A prepared stream is then compressed again, at WIRE_STREAM_REFINED_LEVEL
 * (same window, so receivers hold no more), in a worker thread, one stream
 * at a time (stream-refiner.ts): 11% fewer bytes on the realistic corpus
 * for ~3 minutes of one core, once per closure. Requests meanwhile get the
 * level-9 entry; once the refined one is complete it replaces it (`.r.zst`),
 * and a reader of the old file reads it to its end. Closing the coordinator
 * stops the refining at once.
 *
 * Bounded by bytes (`maxBytes`, least recently used first); an entry larger
 * than half of it is served while it is produced and then dropped.
 */
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import path from 'node:path';
import { zstdCompress } from '../../protocol/compression/zstd.js';
import { WIRE_STREAM_LEVEL, WIRE_STREAM_MIN_BYTES, WIRE_STREAM_REFINED_LEVEL, WIRE_STREAM_WINDOW_LOG } from '../../protocol/compression/wire.js';
import { MAX_QUERY_ITEMS, MAX_STREAM_BYTES } from '../../protocol/data-protocol.js';
import { streamOrder, type LocalCastore, type Digest } from '../../castore/index.js';
import type { Coordinator } from '../coordinator.js';
import { refineToFile } from './stream-refiner.js';

/**
 * libzstd with one worker thread: the compression runs off the event loop
 * (level 9 is ~25-40 ms of CPU per MiB), in jobs of 8 MiB that overlap by
 * the whole window, so the ratio is a single thread's (131.8 against 132.6
 * MB on the realistic corpus) and the first bytes come ~0.3 s after the
 * start (one job), not after the whole stream.
 */
const STREAM_COMPRESSION = {
  compressionLevel: WIRE_STREAM_LEVEL,
  windowLog: WIRE_STREAM_WINDOW_LOG,
  nbWorkers: 1,
  jobSize: 8 * 1024 * 1024,
  overlapLog: 9,
};

/** Default bound of the cache's disk use. */
export const BLOB_STREAM_CACHE_BYTES = 4 * 1024 * 1024 * 1024;
const READ_BYTES = 1024 * 1024;

interface Production {
  /** Bytes written to the `.part` file so far. */
  written: number;
  done: boolean;
  failed?: Error;
  wake: Set<() => void>;
}

export interface BlobStreamCacheStats {
  /** Streams prepared (compressed once, kept while they stay cached). */
  compressions: number;
  /** Requests served from a complete entry or by following one being produced. */
  hits: number;
  /** Requests for a stream not prepared: compressed for them alone. */
  uncached: number;
  /** Prepared streams compressed again at the refined level, and now served so. */
  refined: number;
}

export interface BlobStreamCacheOptions {
  /** Bound of the disk use (default BLOB_STREAM_CACHE_BYTES). */
  maxBytes?: number;
  /** The level prepared streams are compressed again at (default WIRE_STREAM_REFINED_LEVEL); null: not refined. */
  refineLevel?: number | null;
}

/** Most prepared streams waiting to be refined; the oldest wait is dropped beyond it (it stays at level 9). */
const MAX_REFINE_QUEUE = 64;

export class BlobStreamCache {
  private readonly producing = new Map<string, Production>();
  readonly stats: BlobStreamCacheStats = { compressions: 0, hits: 0, uncached: 0, refined: 0 };
  readonly maxBytes: number;
  private readonly refineLevel: number | null;
  /** Prepared streams waiting for the refiner, oldest first, and the one it works on. */
  private readonly refineQueue = new Map<string, () => AsyncIterable<Uint8Array>>();
  private refining: { key: string; done: Promise<void> } | undefined;
  private readonly closing = new AbortController();

  constructor(
    readonly dir: string,
    options: BlobStreamCacheOptions = {},
  ) {
    this.maxBytes = options.maxBytes ?? BLOB_STREAM_CACHE_BYTES;
    this.refineLevel = options.refineLevel === undefined ? WIRE_STREAM_REFINED_LEVEL : options.refineLevel;
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) if (name.endsWith('.part')) rmSync(path.join(dir, name), { force: true });
  }

  /** Stops refining (the worker is terminated) and forgets what waited for it. Idempotent. */
  close(): void {
    this.refineQueue.clear();
    this.closing.abort();
  }

  /** Resolves when nothing is being produced or refined (benches and tests wait for it). */
  async idle(): Promise<void> {
    for (;;) {
      const production = this.producing.values().next().value;
      if (production) await new Promise<void>((resolve) => production.wake.add(resolve));
      else if (this.refining) await this.refining.done;
      else return;
    }
  }

  /**
   * The zstd stream of the bytes `source()` yields, for `key` (a name of
   * [A-Za-z0-9_-]): the prepared one (level WIRE_STREAM_LEVEL, window
   * 2^WIRE_STREAM_WINDOW_LOG) read from disk when complete or followed
   * while it is produced, else one compressed now for this request alone
   * (level 3, same window). A failure of a production (a blob unreadable)
   * is thrown to every reader of it, and nothing is kept.
   */
  open(key: string, source: () => AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
    const final = this.entryFile(key);
    const refined = readComplete(this.refinedFile(key));
    if (refined) {
      this.stats.hits++;
      return refined;
    }
    const running = this.producing.get(key);
    if (running) {
      this.stats.hits++;
      return follow(openSync(`${final}.part`, 'r'), running);
    }
    const prepared = readComplete(final);
    if (prepared) {
      this.stats.hits++;
      return prepared;
    }
    this.stats.uncached++;
    return zstdCompress(source(), { compressionLevel: 3, windowLog: WIRE_STREAM_WINDOW_LOG });
  }

  /** Starts producing the stream for `key` unless it is cached or being produced: for readers expected soon. */
  prepare(key: string, source: () => AsyncIterable<Uint8Array>): void {
    const final = this.entryFile(key);
    if (statSync(this.refinedFile(key), { throwIfNoEntry: false })) return;
    if (this.producing.has(key)) return;
    if (statSync(final, { throwIfNoEntry: false })) this.queueRefine(key, source);
    else this.produce(key, final, source);
  }

  private entryFile(key: string): string {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(key)) throw new Error(`bad blob stream cache key ${key}`);
    return path.join(this.dir, `${key}.zst`);
  }

  private refinedFile(key: string): string {
    return path.join(this.dir, `${key}.r.zst`);
  }

  private queueRefine(key: string, source: () => AsyncIterable<Uint8Array>): void {
    if (this.refineLevel === null || this.closing.signal.aborted || this.refining?.key === key || this.refineQueue.has(key)) return;
    this.refineQueue.set(key, source);
    if (this.refineQueue.size > MAX_REFINE_QUEUE) this.refineQueue.delete(this.refineQueue.keys().next().value!);
    this.refineNext();
  }

  /** Refines the oldest waiting stream, if the refiner is free; the next follows when it is done. */
  private refineNext(): void {
    if (this.refining || this.refineLevel === null) return;
    const next = this.refineQueue.entries().next().value;
    if (!next) return;
    const [key, source] = next;
    this.refineQueue.delete(key);
    const final = this.entryFile(key);
    const part = `${this.refinedFile(key)}.part`;
    // Created now, not when the worker is up: from the level-9 entry's rename to the last refine's end,
    // some `.part` file always says that the coordinator is still compressing.
    closeSync(openSync(part, 'w'));
    const done = (async () => {
      try {
        const size = await refineToFile(source(), part, { level: this.refineLevel!, windowLog: WIRE_STREAM_WINDOW_LOG }, this.closing.signal);
        // Dropped meanwhile (evicted as least recently used): not brought back.
        if (!statSync(final, { throwIfNoEntry: false })) throw new Error('evicted');
        renameSync(part, this.refinedFile(key));
        rmSync(final, { force: true });
        this.stats.refined++;
        this.evict(this.refinedFile(key), size);
      } catch {
        // Closing, evicted, or a blob unreadable: the level-9 entry (if any) goes on serving.
        rmSync(part, { force: true });
      }
    })();
    this.refining = { key, done };
    void done.finally(() => {
      this.refining = undefined;
      this.refineNext();
    });
  }

  private produce(key: string, final: string, source: () => AsyncIterable<Uint8Array>): void {
    const part = `${final}.part`;
    const fd = openSync(part, 'w');
    const production: Production = { written: 0, done: false, wake: new Set() };
    this.producing.set(key, production);
    this.stats.compressions++;
    const wake = () => {
      for (const resolve of production.wake) resolve();
      production.wake.clear();
    };
    void (async () => {
      try {
        for await (const chunk of zstdCompress(source(), STREAM_COMPRESSION)) {
          for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done, production.written + done);
          production.written += chunk.length;
          wake();
        }
        closeSync(fd);
        // Renamed, marked done and forgotten in one step: a reader opens `.part` only while it is listed.
        renameSync(part, final);
        production.done = true;
        this.queueRefine(key, source);
      } catch (error) {
        production.failed = error instanceof Error ? error : new Error(String(error));
        try {
          closeSync(fd);
        } catch {
          // already closed
        }
        rmSync(part, { force: true });
      } finally {
        this.producing.delete(key);
        wake();
      }
      if (production.done) this.evict(final, production.written);
    })();
  }

  /** Drops the least recently used entries beyond `maxBytes`, and `fresh` if it alone is more than half of it. */
  private evict(fresh: string, freshBytes: number): void {
    if (freshBytes > this.maxBytes / 2) {
      rmSync(fresh, { force: true });
      return;
    }
    const entries = readdirSync(this.dir)
      .filter((name) => name.endsWith('.zst'))
      .map((name) => {
        const stat = statSync(path.join(this.dir, name), { throwIfNoEntry: false });
        return { file: path.join(this.dir, name), bytes: stat?.size ?? 0, used: stat?.mtimeMs ?? 0 };
      })
      .sort((a, b) => a.used - b.used);
    let total = entries.reduce((sum, entry) => sum + entry.bytes, 0);
    for (const entry of entries) {
      if (total <= this.maxBytes) break;
      // An open reader keeps reading an unlinked file.
      rmSync(entry.file, { force: true });
      total -= entry.bytes;
    }
  }
}

/** A complete entry's bytes, its use recorded for eviction; undefined when there is none. */
function readComplete(file: string): AsyncIterable<Uint8Array> | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  const now = new Date();
  utimesSync(file, now, now);
  return follow(fd, { written: statSync(file).size, done: true, wake: new Set() });
}

/** Reads `fd` from the start as `production` writes it, to its end. */
async function* follow(fd: number, production: Production): AsyncGenerator<Uint8Array> {
  let at = 0;
  try {
    for (;;) {
      while (at < production.written) {
        const buffer = Buffer.allocUnsafe(Math.min(READ_BYTES, production.written - at));
        const read = readSync(fd, buffer, 0, buffer.length, at);
        if (read === 0) throw new Error('blob stream cache file ended early');
        at += read;
        yield buffer.subarray(0, read);
      }
      if (production.failed) throw production.failed;
      if (production.done) return;
      await new Promise<void>((resolve) => production.wake.add(resolve));
    }
  } finally {
    closeSync(fd);
  }
}

const caches = new WeakMap<Coordinator, BlobStreamCache | null>();

/** The coordinator's cache, in `<data dir>/wire-cache`; null when CoordinatorOptions.wireCompression is false. */
export function blobStreamCacheOf(coordinator: Coordinator): BlobStreamCache | null {
  let cache = caches.get(coordinator);
  if (cache === undefined) {
    const option = coordinator.wireCompression;
    cache = option === false ? null : new BlobStreamCache(path.join(coordinator.dataDir, 'wire-cache'), option === true ? {} : { refineLevel: option.refineLevel });
    caches.set(coordinator, cache);
    if (cache) coordinator.onClose(() => cache!.close());
  }
  return cache;
}

/** The cache key of a stream of `ids` (in this order) with this build's window (at either level: both decompress alike). */
export function blobStreamKey(ids: readonly Digest[]): string {
  return createHash('sha256').update(`zstd-w${WIRE_STREAM_WINDOW_LOG}\n${ids.join('\n')}`).digest('base64url');
}

/** Targets whose stream was prepared (or found not worth it): closures never change. */
const prepared = new WeakMap<Coordinator, Set<string>>();

/**
 * Starts compressing the stream a cold agent of `target` will ask for
 * (castore/transfer/stream-order.ts: the same blobs in the same order, so
 * the same key), when it is large enough to be streamed at all: after a
 * push, and when an agent asks for a manifest. Once per target.
 */
export function prepareClosureStream(coordinator: Coordinator, target: string): void {
  const cache = blobStreamCacheOf(coordinator);
  if (!cache) return;
  let done = prepared.get(coordinator);
  if (!done) prepared.set(coordinator, (done = new Set()));
  if (done.has(target)) return;
  if (done.size > 1024) done.clear();
  done.add(target);
  const store = coordinator.castore;
  const files = streamOrder(
    store.closure([target]).map((storePath) => store.getStorePath(storePath)!),
    (id) => store.readDirectory(id),
  );
  const size = files.reduce((sum, file) => sum + file.size, 0);
  if (size < WIRE_STREAM_MIN_BYTES || size > MAX_STREAM_BYTES || files.length > MAX_QUERY_ITEMS) return;
  const ids = files.map((file) => file.digest);
  cache.prepare(blobStreamKey(ids), () => readBlobs(store, ids));
}

/** The bytes of `ids`, back to back: a `blobs.stream` reply before compression. */
export async function* readBlobs(store: LocalCastore, ids: readonly Digest[]): AsyncGenerator<Uint8Array> {
  for (const id of ids) yield* store.readBlob(id);
}
