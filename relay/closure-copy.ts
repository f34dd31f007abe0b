/**
 * A relay's upstream copy of a whole closure, as compact on the uplink as
 * an agent's own fetch: the first time an agent asks the relay for a
 * config's manifest, the relay walks the closure's directories (through
 * its cache, which the agents' directory requests share) and then copies
 * every blob it lacks with the data plane's bulk path, the one agents use
 * (castore/transfer/data-plane-copy.ts: a cold closure as one zstd
 * stream, small blobs in zstd batch frames, large ones per segment
 * verified against their outboard), each blob verified before it is
 * staged. Without it the relay fetched object by object, uncompressed:
 * ~3.4x an agent's bytes on the realistic corpus. An upgrade costs the
 * uplink about what it costs an agent fetching directly: the copy fetches
 * group deltas against the previous versions (copyWantedBlobs, the
 * agent's blob phase; templates not yet, see `copy`), the basis being the
 * closures of the relay's other kept manifests (`ClosureCopySource.bases`),
 * whose objects its castore still holds.
 *
 * While the copy runs, the blobs it will bring are pending: an agent's
 * request for one waits until the copy commits it (commits every few MiB,
 * so the wait is short: agents fetching from a relay ask in the stream's
 * order, data-plane-copy.ts), instead of fetching it a second time. A
 * large blob is written through a partial file as well (partial-blob.ts,
 * the fetch-through's mechanism), so a segment of it is served as soon as
 * it is verified, not when the blob, let alone its 4 MiB commit, is. What
 * the copy does not bring (it failed, or the object is not in its plan)
 * is fetched through object by object as before (relay-cache.ts).
 */
import path from 'node:path';
import {
  copyWantedBlobs,
  findDeltaBases,
  RemoteCastore,
  streamOrder,
  TRANSFER_PARALLEL,
  type BlobWriter,
  type CastoreServices,
  type DeltaBasisStore,
  type Digest,
  type FileNode,
  type Ingest,
  type LocalCastore,
  type StorePathInfo,
  type StreamTap,
} from '../castore/index.js';
import type { DataClient } from '../protocol/data-client.js';
import { MAX_BATCHED_BLOB_BYTES } from '../protocol/data-protocol.js';
import type { FetchSourceKind } from './fetch-sources.js';
import { PartialBlob } from './partial-blob.js';

/**
 * The copy commits what it staged once this much arrived: what an agent
 * waits for becomes readable within ~0.3 s of it at 100 Mbit/s, at a
 * commit (fsync, transaction) per 4 MiB.
 */
export const UPSTREAM_COMMIT_BYTES = 4 * 1024 * 1024;

/** What a closure copy needs of the relay's cache. */
export interface ClosureCopySource {
  /** The verified manifest's store paths (roots) of the config. */
  storePaths: readonly StorePathInfo[];
  /** Resolves once every directory of the closure is in the castore (walked through the cache). */
  walk(): Promise<unknown>;
  /** Blob bytes this copy brings, for whoever started it (the prefetch's tally, or the agents'). */
  onBytes?: (bytes: number) => void;
  /**
   * Runs the copy against a client of the relay's choosing (fetch-sources.ts:
   * its upstream relay first, then the coordinator for what that did not
   * bring); default: the coordinator's client.
   */
  through?: <T>(task: (client: DataClient, from: FetchSourceKind) => Promise<T>) => Promise<T>;
  /**
   * Store paths of other closures the cache may still hold (the previous
   * versions of a site's configs), most recent first: where the copy looks
   * for the bases of group deltas (findDeltaBases; only what the castore
   * still holds counts). None: every blob comes whole.
   */
  bases?: () => readonly StorePathInfo[];
}

/** One blob the copy will bring: resolved once it is committed, or once the copy gave up on it. */
interface Pending {
  settled: Promise<void>;
  settle: () => void;
  /** A large blob the copy is writing: its partial file, readable as it is verified. */
  partial?: PartialBlob;
  /** Called when `partial` is set or the blob settles. */
  changed: Set<() => void>;
}

/** A blob a copy is still to bring (UpstreamClosureCopies.inCopy). */
export interface InCopy {
  /** The partial file the copy writes it to (a large blob it began writing); undefined if it settled first. */
  partial: PartialBlob | undefined;
  /** Resolves once the copy committed it or gave up on it. */
  settled: Promise<void>;
}

export interface UpstreamCopyCounters {
  /** Closure copies started, and those that failed (their blobs are then fetched through one by one). */
  copies: number;
  failedCopies: number;
}

/**
 * The closure copies of one relay (one per config, once per process).
 * `start` begins one in the background; `waitFor` is what a request for
 * blobs awaits before fetching through what is still missing.
 */
export class UpstreamClosureCopies {
  private readonly pending = new Map<Digest, Pending>();
  private readonly started = new Set<string>();
  /** Copies still planning (walking directories): a blob request waits for them, so a blob is not fetched through just before the copy claims it. */
  private readonly planning = new Set<Promise<void>>();
  /** Copies started and not ended. */
  private running = 0;
  readonly counters: UpstreamCopyCounters = { copies: 0, failedCopies: 0 };

  constructor(
    private readonly store: LocalCastore,
    private readonly upstream: DataClient,
    /** Blob bytes (uncompressed) as the copies bring them. */
    private readonly onBytes: (bytes: number) => void,
    /** Where large blobs are written as they arrive (the fetch-through's `partial/`; named `<id>.copy` here). */
    private readonly partialDir: string,
    private readonly log: (line: string) => void = () => undefined,
    /** Sees each stream reply's wire bytes (the recordings the relay serves agents from, stream-recordings.ts). */
    private readonly streamTap?: StreamTap,
  ) {}

  /** Whether a copy is planning or running: one may still begin a stream. */
  active(): boolean {
    return this.running > 0;
  }

  /**
   * Starts copying `configId`'s closure (once per config in this process;
   * again after a failure), in the background. Never throws: a failed copy
   * is logged and counted, its blobs left to the fetch-through.
   */
  start(configId: string, source: ClosureCopySource): void {
    if (this.started.has(configId)) return;
    this.started.add(configId);
    this.counters.copies++;
    let planned!: () => void;
    const planning = new Promise<void>((resolve) => (planned = resolve));
    this.planning.add(planning);
    this.running++;
    const done = (): void => {
      this.planning.delete(planning);
      planned();
    };
    void this.run(configId, source, done)
      .catch((error: unknown) => {
        done();
        this.started.delete(configId);
        this.counters.failedCopies++;
        this.log(`ferry relay: the upstream copy of config ${configId} failed (${(error as Error).message}); fetching its objects one by one`);
      })
      .finally(() => this.running--);
  }

  private async run(configId: string, source: ClosureCopySource, planned: () => void): Promise<void> {
    let mine: Digest[] = [];
    try {
      await source.walk();
      const readDirectory = (id: Digest) => this.store.readDirectory(id);
      const ordered = streamOrder(source.storePaths, readDirectory);
      // Empty files are in no stream: each is asked (in a batch) when the castore lacks it.
      const wanted = ordered.filter((blob) => !this.store.hasBlob(blob.digest) && !this.pending.has(blob.digest));
      mine = wanted.map((blob) => blob.digest);
      for (const id of mine) {
        let settle!: () => void;
        const settled = new Promise<void>((resolve) => (settle = resolve));
        this.pending.set(id, { settled, settle, changed: new Set() });
      }
      planned();
      if (wanted.length === 0) return;
      const through = source.through ?? ((task) => task(this.upstream, 'coordinator'));
      // Against another client after a failure: only what the first did not commit.
      await through((client, from) => this.copy(configId, client, from, source, wanted.filter((blob) => this.pending.has(blob.digest) && !this.store.hasBlob(blob.digest)), readDirectory));
    } finally {
      planned();
      // Whatever the copy did not commit is the fetch-through's now.
      for (const id of mine) this.release(id);
    }
  }

  /**
   * Brings `blobs` as an agent's own fetch would (copyWantedBlobs): the
   * previous versions held here as bases of group deltas, the rest whole
   * (templates not asked for: see below). Each
   * blob verified before it is staged; what arrived is committed (kept for
   * the agents and the fetch-through) even when the copy fails.
   */
  private async copy(configId: string, client: DataClient, from: FetchSourceKind, source: ClosureCopySource, blobs: readonly FileNode[], readDirectory: (id: Digest) => ReturnType<LocalCastore['readDirectory']>): Promise<void> {
    if (blobs.length === 0) return;
    const basis = this.basisOf(source.bases?.() ?? []);
    const previous = new Set(basis.listStorePaths().map((info) => info.storePath));
    // Store paths the previous closures had too: their blobs are here already, nothing to find a basis for.
    const fresh = source.storePaths.filter((info) => !previous.has(info.storePath));
    const pairs = previous.size > 0 ? findDeltaBases(basis, fresh, readDirectory, new Map(blobs.map((blob) => [blob.digest, blob]))) : [];
    const copied = await copyWantedBlobs({
      // From an upstream relay (which only passes its own upstream's stream on): large blobs of a stream verified per group.
      source: new RemoteCastore(client, [], { groupVerifiedStreams: from === 'relay', ...(this.streamTap ? { streamTap: this.streamTap } : {}) }),
      target: this.store,
      ingestTarget: this.trackingTarget(new Set(pairs.map((pair) => pair.target.digest))),
      commitEvery: UPSTREAM_COMMIT_BYTES,
      wanted: blobs,
      storePaths: source.storePaths,
      readDirectory,
      deltas: { basis, pairs },
      // Not yet: with the template hints, the relay kept large blobs as templates and, in two of two bench runs of
      // the realistic corpus, served agents bytes that failed their check (relay-failed, the cold deploy 3x up the
      // uplink); not understood yet (docs/relays.md, "Left"). Group deltas alone meet the target (1.03x, app-change).
      templates: false,
      local: this.store,
      parallel: TRANSFER_PARALLEL,
      onBytes: (bytes) => {
        this.onBytes(bytes);
        source.onBytes?.(bytes);
      },
      onObjects: () => undefined,
    });
    // What an upgrade cost upstream, for the operator (the agent logs the same of its own fetches).
    const deltas = copied.deltaBlobs > 0 ? `, ${copied.deltaBlobs} of them as group deltas against a previous version (${copied.deltaGroupBytes} bytes of changed groups)` : '';
    const restored = copied.restoredBlobs > 0 ? `; ${copied.restoredBlobs} restored from templates over normalized blobs here${copied.normalizedDeltaBlobs > 0 ? ` (${copied.normalizedDeltaBlobs} normalized blobs as group deltas, ${copied.normalizedDeltaGroupBytes} bytes of changed groups)` : ''}` : '';
    this.log(`ferry relay: copied config ${configId} upstream: ${copied.copiedBlobs} blobs, ${copied.copiedBytes} bytes${deltas}${restored}`);
  }

  /**
   * The castore as the basis of group deltas: its own reads, with `bases`
   * as the store paths to look in (the relay registers none: its closures
   * are known by their manifests).
   */
  private basisOf(bases: readonly StorePathInfo[]): DeltaBasisStore {
    const store = this.store;
    return {
      listStorePaths: () => [...bases],
      hasBlob: (id) => store.hasBlob(id),
      hasDirectory: (id) => store.hasDirectory(id),
      readDirectory: (id) => store.readDirectory(id),
      readBlob: (id, range) => store.readBlob(id, range),
      readOutboard: (id) => store.readOutboard(id),
      readBlobRangeSync: (id, offset, length) => store.readBlobRangeSync(id, offset, length),
    };
  }

  /**
   * The castore, with each ingest's blobs (restored templates included)
   * released to their waiters once it commits, and each large blob it
   * brings written through a partial file too, so that its verified bytes
   * are served before the commit. `assembled`: blobs assembled from a
   * basis and groups (group deltas), whose basis bytes are only checked
   * whole as they are written: their partial files verify each group.
   */
  private trackingTarget(assembled: ReadonlySet<Digest>): Pick<CastoreServices, 'beginIngest'> {
    return {
      beginIngest: (): Ingest => {
        const session = this.store.beginIngest();
        const staged: Digest[] = [];
        return new Proxy(session, {
          get: (target, property) => {
            if (property === 'putBlobBytes') {
              return async (bytes: Uint8Array, expectedId?: Digest) => {
                const id = await target.putBlobBytes(bytes, expectedId);
                staged.push(id);
                return id;
              };
            }
            if (property === 'putTemplate') {
              return async (...args: Parameters<Ingest['putTemplate']>) => {
                await target.putTemplate(...args);
                staged.push(args[0]);
              };
            }
            if (property === 'blobWriter') {
              return (size: number, expectedId?: Digest, outboard?: Uint8Array) => {
                if (expectedId) staged.push(expectedId);
                const writer = target.blobWriter(size, expectedId, outboard);
                if (!expectedId || size <= MAX_BATCHED_BLOB_BYTES) return writer;
                return this.writingThrough(writer, expectedId, size, outboard, assembled.has(expectedId));
              };
            }
            if (property === 'commit') {
              return () => {
                target.commit();
                for (const id of staged) this.release(id);
              };
            }
            const value: unknown = Reflect.get(target, property, target);
            return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
          },
        });
      },
    };
  }

  /**
   * `writer`, with what it is given also appended to a partial file of a
   * blob this copy is to bring (others pass through as they are). With an
   * `outboard`, the copy verified each chunk before writing it (a segment
   * fetch), except for an `assembled` blob (a group delta: the partial
   * file verifies its groups); without (the stream), the bytes are
   * verified once an agent's request attaches the outboard, or whole when
   * the writer finishes.
   */
  private writingThrough(writer: BlobWriter, id: Digest, size: number, outboard: Uint8Array | undefined, assembled: boolean): BlobWriter {
    const pending = this.pending.get(id);
    if (!pending) return writer;
    // A retry of the same blob (a cut stream) starts a new file: the old one failed with its writer.
    pending.partial?.fail(new Error(`the copy of blob ${id} starts again`));
    const partial = new PartialBlob(id, size, path.join(this.partialDir, `${id}.copy`), assembled ? undefined : outboard);
    // An assembled blob's outboard is its tree, not a check of each byte written: its groups are verified as they come.
    if (assembled && outboard) partial.attachOutboard(outboard);
    pending.partial = partial;
    for (const changed of [...pending.changed]) changed();
    return {
      write: (chunk) => {
        writer.write(chunk);
        partial.append(chunk);
      },
      finish: () => {
        const finished = writer.finish();
        partial.complete();
        return finished;
      },
      discard: () => {
        writer.discard();
        partial.fail(new Error(`the copy of blob ${id} was dropped before its end`));
        if (pending.partial === partial) pending.partial = undefined;
      },
    };
  }

  private release(id: Digest): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    // Committed, the castore serves it; given up, the fetch-through brings it: either way the file goes.
    pending.partial?.remove();
    pending.settle();
    for (const changed of [...pending.changed]) changed();
  }

  /**
   * Whether blob `id` is still to come from a copy (after the copies still
   * planning decided): if so, resolves once the copy began writing it to a
   * partial file (a large blob) or settled it, whichever is first.
   * Undefined when no copy is bringing it.
   */
  async inCopy(id: Digest): Promise<InCopy | undefined> {
    if (this.planning.size > 0) await Promise.all(this.planning);
    const pending = this.pending.get(id);
    if (!pending) return undefined;
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (!pending.partial && this.pending.get(id) === pending) return;
        pending.changed.delete(check);
        resolve();
      };
      pending.changed.add(check);
      check();
    });
    return { partial: this.pending.get(id) === pending ? pending.partial : undefined, settled: pending.settled };
  }

  /**
   * Resolves once none of `ids` is still to come from a copy: each is
   * committed, or the copy bringing it gave up (the caller then fetches
   * what is missing through). Waits first for copies still planning.
   * Returns those it waited for (the caller counts them fetched for it).
   */
  async waitFor(ids: readonly string[]): Promise<Set<string>> {
    if (this.planning.size > 0) await Promise.all(this.planning);
    const waits: Promise<void>[] = [];
    const awaited = new Set<string>();
    for (const id of ids) {
      const pending = this.pending.get(id as Digest);
      if (pending) {
        waits.push(pending.settled);
        awaited.add(id);
      }
    }
    if (waits.length > 0) await Promise.all(waits);
    return awaited;
  }
}
