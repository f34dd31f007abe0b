/**
 * A relay's cache: a LocalCastore filled through from upstream (the
 * coordinator, or the relay's upstream relay first: fetch-sources.ts), one
 * object at a time as agents ask (fetch-through), each object verified
 * before it is stored (directories by id and canonical form, small blobs
 * whole by id, large ones per 16 KiB group against their outboard and then
 * whole), and fetched once however many agents ask for it at the same time
 * (one fetch in flight per object, which later askers wait for). A large
 * blob is readable as its groups are verified (a partial file beside the
 * castore, partial-blob.ts, whether the fetch-through or the closure copy
 * brings it), so the first segment an agent asks for does not wait for
 * the whole file; it enters the castore once whole.
 *
 * What the relay may serve of a config is its closure as the coordinator's
 * signed manifest names it: the manifest is checked against the coordinator
 * key pinned at enrollment, then walked (directories fetched through) into
 * the set of objects it reaches. Manifests are kept on disk, so a restarted
 * relay serves agents that asked for the manifest before.
 *
 * Eviction is least recently used by config: when the cache holds more
 * than its limit, the closures used last are kept while they fit and the
 * castore's GC removes everything else (castore/gc.ts, with their roots).
 */
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  collectGarbage,
  decodeDirectory,
  directoryId,
  RemoteCastore,
  withIngest,
  CastoreError,
  type Digest,
  type LocalCastore,
  type Node,
  type StorePathInfo,
} from '../castore/index.js';
import { manifestProofMessage, verifyProof } from '../protocol/coordinator-proofs.js';
import { DataError, type DataClient } from '../protocol/data-client.js';
import { DATA_RESPONSES, MAX_BATCH_BYTES, MAX_BATCH_OBJECTS, MAX_BATCHED_BLOB_BYTES, type DataResponse } from '../protocol/data-protocol.js';
import type { KeyId } from '../protocol/identity.js';
import { UpstreamClosureCopies } from './closure-copy.js';
import type { FetchSources } from './fetch-sources.js';
import { PartialBlob } from './partial-blob.js';
import { StreamRecordings } from './stream-recordings.js';
import { writeFileAtomic } from './relay-state.js';

export type Manifest = DataResponse<'closure.manifest'>;

/** A kept manifest's file: `<configId>.<system>.json`. */
const MANIFEST_FILE = /^([0-9a-f]{64})\.([a-z0-9_]+-[a-z0-9]+)\.json$/;

/**
 * An upgrade's closure copy looks for the previous versions of its files
 * in the closures of this many other kept manifests (the most recent):
 * a site runs a few configs, and each is read and its proof checked.
 */
const MAX_BASIS_MANIFESTS = 8;

/** What a config's closure holds: each object's kind and size (a file's bytes; a directory's encoding is read from the store). */
export interface ClosureIndex {
  /** The config whose closure it is (which grant its objects are fetched from an upstream relay with). */
  configId: string;
  objects: Map<string, { kind: 'file' | 'directory'; size: number }>;
  roots: Node[];
  /** Sum of the file sizes: what the closure takes in the cache, near enough to decide eviction. */
  bytes: number;
  lastUsed: number;
}

/** Where a blob's bytes are read from while the relay serves it (RelayCache.blobSource). */
export interface BlobSource {
  size: number;
  /** Its outboard, checked against its id. */
  outboard: Uint8Array;
  /** Resolves once bytes [0, end) are verified and readable; rejects if the fetch failed. */
  waitFor(end: number): Promise<void>;
  /** Bytes [offset, offset + length) (waited for first): from the castore, or from the fetch still under way. */
  read(offset: number, length: number): AsyncIterable<Uint8Array>;
  /** Resolves once the blob is in the castore (at once for one that was there). */
  stored: Promise<void>;
}

/** A large blob being fetched through: its verified bytes go to a partial file as they come, readable before the whole is. */
interface LargeFetch {
  partial: PartialBlob;
  /** Resolves once it is in the castore. */
  whole: Promise<void>;
}

/**
 * A relay answers a blob.get of a blob still arriving once the range is
 * verified when it is at most this long (an agent asks 16 MiB at a time);
 * a longer one gets its header at once and its bytes as they are verified.
 */
export const PARTIAL_READ_MAX_BYTES = 16 * 1024 * 1024;
/** Outboards asked upstream kept in memory (64 bytes per 16 KiB of blob). */
const MAX_OUTBOARDS_ASKED = 4096;

/**
 * Objects found here (hits) and fetched from the coordinator first
 * (misses: by this request, or by a fetch or closure copy it waited for),
 * counted for whoever asked: agents, or the prefetch; and the bytes
 * fetched for it (the blobs of a closure copy it started included).
 */
export interface Tally {
  hits: number;
  misses: number;
  bytesFetched: number;
}

/** The agents' tally, except `bytesFetched`: what the cache fetched for everyone (the prefetch's included). */
export interface RelayCounters extends Tally {
  evictions: number;
}

export class RelayCache {
  private readonly manifests = new Map<string, Manifest>();
  /** Manifests being asked for, by `<configId>.<system>`: concurrent askers share the one request. */
  private readonly manifestFetches = new Map<string, Promise<Manifest>>();
  private readonly closures = new Map<string, Promise<ClosureIndex>>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly large = new Map<string, Promise<LargeFetch>>();
  /** Outboards asked upstream for blobs not in the castore yet (`outboard`), the oldest forgotten first. */
  private readonly outboards = new Map<Digest, Promise<Uint8Array>>();
  private readonly manifestDir: string;
  private readonly partialDir: string;
  readonly counters: RelayCounters = { hits: 0, misses: 0, bytesFetched: 0, evictions: 0 };
  /** Whole closures copied upstream as compactly as agents fetch them (closure-copy.ts); the fetch-through serves the rest. */
  readonly copies: UpstreamClosureCopies;
  /** The copies' stream replies, served to agents asking for the same stream (stream-recordings.ts). */
  readonly streams: StreamRecordings;
  private evicting: Promise<void> | undefined;

  constructor(
    readonly store: LocalCastore,
    /** Where objects come from: the upstream relay for a config it holds a grant for, else (or when it fails) the coordinator. */
    readonly sources: FetchSources,
    private readonly coordinatorKey: KeyId,
    /** Beside the castore: `manifests/` (kept manifests), `partial/` (large blobs being fetched), `streams/` (stream-recordings.ts). */
    workDir: string,
    readonly limitBytes: number,
    log?: (line: string) => void,
  ) {
    this.manifestDir = path.join(workDir, 'manifests');
    this.partialDir = path.join(workDir, 'partial');
    // A quarter of the cache for streams: a cold closure's is ~a third of its blobs' bytes (zstd).
    this.streams = new StreamRecordings(path.join(workDir, 'streams'), Math.floor(limitBytes / 4));
    this.copies = new UpstreamClosureCopies(store, sources.coordinator, (bytes) => (this.counters.bytesFetched += bytes), this.partialDir, log, this.streams.tap());
    mkdirSync(this.manifestDir, { recursive: true });
    // What a crash left half-fetched is fetched again.
    rmSync(this.partialDir, { recursive: true, force: true });
    mkdirSync(this.partialDir, { recursive: true });
  }

  /** The bytes the cache holds (blobs and directory encodings). */
  bytes(): number {
    const stats = this.store.stats();
    return stats.blobBytes + stats.directoryBytes;
  }

  /**
   * The coordinator-signed manifest of `configId` for `system`: kept (memory,
   * disk), else asked for with the relay's own key (of the upstream relay
   * first, which passes the coordinator's on as it is). Refuses (DataError
   * BAD_PROOF) one not signed by the pinned coordinator key or for another
   * config or system (from the upstream relay: then asked of the
   * coordinator); a refusal of the coordinator's (FORBIDDEN: the relay
   * does not serve an agent of that config) passes through. The first ask
   * of a config starts its closure copy, whose directories and bytes count
   * in `tally` (the asker's: an agent's, or the prefetch's).
   */
  async manifest(configId: string, system: string, tally: Tally = this.counters): Promise<Manifest> {
    const key = `${configId}.${system}`;
    let manifest = this.manifests.get(key) ?? this.readKept(key, configId, system);
    if (!manifest) {
      // Asked once however many ask at once (the prefetch and each agent of a site, as a config lands):
      // a large closure's manifest is tens of KB, as much as a small upgrade's deltas.
      let fetching = this.manifestFetches.get(key);
      if (!fetching) {
        fetching = this.fetchManifest(key, configId, system).finally(() => this.manifestFetches.delete(key));
        this.manifestFetches.set(key, fetching);
      }
      manifest = await fetching;
    }
    // The agents asking next: the whole closure comes up the uplink once, compressed, as an agent's own fetch would.
    this.copies.start(configId, {
      storePaths: manifest.storePaths,
      walk: () => this.closure(configId, tally),
      through: (task) => this.sources.through(configId, `the closure copy of ${key}`, task),
      // The agents' tally's bytesFetched is everyone's, counted already.
      ...(tally === this.counters ? {} : { onBytes: (bytes: number) => (tally.bytesFetched += bytes) }),
      bases: () => this.previousStorePaths(configId),
    });
    return manifest;
  }

  /** Asks upstream (the upstream relay, else the coordinator) for the manifest of `configId` for `system`, checks it, keeps it (memory, disk). */
  private async fetchManifest(key: string, configId: string, system: string): Promise<Manifest> {
    const manifest = await this.sources.through(configId, `the manifest of ${key}`, async (client) => {
      const asked = (await client.call({ op: 'closure.manifest', configId, system })).header;
      this.checkManifest(asked, configId, system);
      return asked;
    });
    this.manifests.set(key, manifest);
    writeFileAtomic(path.join(this.manifestDir, `${key}.json`), JSON.stringify(manifest));
    return manifest;
  }

  private checkManifest(manifest: Manifest, configId: string, system: string): void {
    if (manifest.configId !== configId || manifest.system !== system || !verifyProof(this.coordinatorKey, manifestProofMessage(manifest), manifest.proof)) {
      throw new DataError('BAD_PROOF', `the closure manifest of config ${configId} is not signed by the coordinator key ${this.coordinatorKey}: refusing it`);
    }
  }

  private readKept(key: string, configId: string, system: string): Manifest | undefined {
    const file = path.join(this.manifestDir, `${key}.json`);
    if (!existsSync(file)) return undefined;
    try {
      const manifest = DATA_RESPONSES['closure.manifest'].parse(JSON.parse(readFileSync(file, 'utf8')));
      this.checkManifest(manifest, configId, system);
      this.manifests.set(key, manifest);
      return manifest;
    } catch {
      return undefined;
    }
  }

  /**
   * The store paths of the closures of the other configs whose manifests
   * are kept here, the most recently asked for first, of at most
   * MAX_BASIS_MANIFESTS of them: what an upgrade's closure copy finds the
   * previous versions of its files in (closure-copy.ts). Some of their
   * objects may be evicted; the copy uses only what the castore holds.
   */
  previousStorePaths(configId: string): StorePathInfo[] {
    const kept = readdirSync(this.manifestDir)
      .map((file) => ({ file, match: MANIFEST_FILE.exec(file) }))
      .filter((entry) => entry.match && entry.match[1] !== configId)
      .map((entry) => ({ ...entry, at: statSync(path.join(this.manifestDir, entry.file), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
      .sort((a, b) => b.at - a.at)
      .slice(0, MAX_BASIS_MANIFESTS);
    const seen = new Set<string>();
    const paths: StorePathInfo[] = [];
    for (const { match } of kept) {
      const manifest = this.readKept(`${match![1]}.${match![2]}`, match![1]!, match![2]!);
      for (const info of manifest?.storePaths ?? []) {
        if (seen.has(info.storePath)) continue;
        seen.add(info.storePath);
        paths.push(info);
      }
    }
    return paths;
  }

  /** Any kept manifest of `configId` (the system an agent asked for earlier, before a restart too); undefined when none was asked for. */
  manifestOf(configId: string): Manifest | undefined {
    for (const [key, manifest] of this.manifests) if (key.startsWith(`${configId}.`)) return manifest;
    for (const file of readdirSync(this.manifestDir)) {
      const match = MANIFEST_FILE.exec(file);
      if (match?.[1] === configId) return this.readKept(`${configId}.${match[2]}`, configId, match[2]!);
    }
    return undefined;
  }

  /**
   * The objects of `configId`'s closure, walking its manifest's roots
   * through directories (fetched through; counted in `tally`, the agents'
   * by default). Refuses (FORBIDDEN) a config whose manifest neither an
   * agent nor the prefetch asked this relay for: its closure is unknown here.
   */
  closure(configId: string, tally: Tally = this.counters): Promise<ClosureIndex> {
    let found = this.closures.get(configId);
    if (!found) {
      const manifest = this.manifestOf(configId);
      if (!manifest) return Promise.reject(new DataError('FORBIDDEN', `this relay holds no manifest of config ${configId}: ask for it first`));
      found = this.walk(manifest, tally);
      found.catch(() => this.closures.delete(configId));
      this.closures.set(configId, found);
    }
    return found.then((index) => {
      index.lastUsed = Date.now();
      return index;
    });
  }

  private async walk(manifest: Manifest, tally: Tally): Promise<ClosureIndex> {
    const objects: ClosureIndex['objects'] = new Map();
    const roots = manifest.storePaths.map((info) => info.root);
    let bytes = 0;
    let level: string[] = [];
    const add = (node: Node): void => {
      if (node.type === 'symlink' || objects.has(node.digest)) return;
      objects.set(node.digest, { kind: node.type, size: node.size });
      if (node.type === 'file') bytes += node.size;
      else level.push(node.digest);
    };
    for (const root of roots) add(root);
    while (level.length > 0) {
      const current = level;
      level = [];
      await this.ensureDirectories(current, tally, manifest.configId);
      for (const id of current) for (const entry of this.store.readDirectory(id as Digest)) add(entry);
    }
    return { configId: manifest.configId, objects, roots, bytes, lastUsed: Date.now() };
  }

  /** Waits for the fetches of `ids` in flight, and starts one for those neither here nor in flight. */
  private async throughOnce(ids: readonly string[], has: (id: string) => boolean, fetch: (ids: string[]) => Promise<void>): Promise<{ hits: number; misses: number }> {
    const waits: Promise<void>[] = [];
    const fresh: string[] = [];
    let hits = 0;
    for (const id of new Set(ids)) {
      const flying = this.inFlight.get(id);
      if (flying) waits.push(flying);
      else if (has(id)) hits++;
      else fresh.push(id);
    }
    if (fresh.length > 0) {
      const fetching = fetch(fresh).finally(() => {
        for (const id of fresh) if (this.inFlight.get(id) === fetching) this.inFlight.delete(id);
      });
      for (const id of fresh) this.inFlight.set(id, fetching);
      waits.push(fetching);
    }
    await Promise.all(waits);
    return { hits, misses: ids.length - hits };
  }

  /**
   * Makes `ids` (directories) present here, fetching the missing ones in
   * batches (from the upstream relay first when they are of `configId`'s
   * closure), each verified by id and canonical form. Counts hits and
   * misses in `tally`.
   */
  async ensureDirectories(ids: readonly string[], tally: Tally = this.counters, configId?: string): Promise<void> {
    const counted = await this.throughOnce(ids, (id) => this.store.hasDirectory(id as Digest), async (fresh) => {
      for (let start = 0; start < fresh.length; start += MAX_BATCH_OBJECTS) {
        const asked = fresh.slice(start, start + MAX_BATCH_OBJECTS) as Digest[];
        await this.sources.through(configId, 'directories', (client) => this.fetchDirectories(client, asked, tally));
      }
    });
    tally.hits += counted.hits;
    tally.misses += counted.misses;
  }

  /** One batch of directories from `client`, each verified before it is stored. */
  private async fetchDirectories(client: DataClient, asked: Digest[], tally: Tally): Promise<void> {
        await client.call(
          { op: 'directories.get', ids: asked },
          {
            consume: async (reply) => {
              if (reply.header.directories.length !== asked.length || reply.header.directories.some((meta, index) => meta.id !== asked[index])) {
                throw new CastoreError('DIRECTORY_NOT_CANONICAL', 'the coordinator answered other directories than those asked');
              }
              await withIngest(this.store, async (ingest) => {
                for (const meta of reply.header.directories) {
                  const bytes = new Uint8Array(await reply.body.readExact(meta.size, `directory ${meta.id}`));
                  if (directoryId(bytes) !== meta.id) throw new CastoreError('DIRECTORY_NOT_CANONICAL', `directory ${meta.id} from the coordinator hashes to ${directoryId(bytes)}`, { objectId: meta.id });
                  ingest.putDirectory(decodeDirectory(bytes, meta.id));
                  this.fetched(tally, meta.size);
                }
                await reply.body.expectEnd();
              });
            },
          },
        );
  }

  /**
   * Makes the blobs `ids` (of `closure`, which gives their sizes) present
   * here: those a closure copy is bringing waited for (not fetched twice),
   * the rest small ones fetched in batches and verified whole, large ones
   * per group and whole. Counts hits and misses in `tally` (a blob it
   * waited for a copy to bring is a miss: fetched for it first).
   */
  async ensureBlobs(closure: ClosureIndex, ids: readonly string[], tally: Tally = this.counters): Promise<void> {
    const awaited = await this.copies.waitFor(ids);
    const brought = new Set(ids.filter((id) => awaited.has(id) && this.store.hasBlob(id as Digest)));
    tally.misses += brought.size;
    const rest = ids.filter((id) => !brought.has(id));
    const large = rest.filter((id) => closure.objects.get(id)!.size > MAX_BATCHED_BLOB_BYTES);
    const wholes = large.map(async (id) => (await this.blobSource(closure, id, tally)).stored);
    const counted = await this.throughOnce(rest.filter((id) => closure.objects.get(id)!.size <= MAX_BATCHED_BLOB_BYTES), (id) => this.store.hasBlob(id as Digest), async (fresh) => {
      const small = fresh;
      let batch: string[] = [];
      let batchBytes = 0;
      const flush = async (): Promise<void> => {
        if (batch.length === 0) return;
        const asked = batch as Digest[];
        batch = [];
        batchBytes = 0;
        await this.sources.through(closure.configId, 'blobs', (client) => client.call(
          { op: 'blobs.get', ids: asked },
          {
            consume: async (reply) => {
              if (reply.header.batch || reply.header.blobs.length !== asked.length || reply.header.blobs.some((meta, index) => meta.id !== asked[index] || meta.encoding !== 'identity')) {
                throw new CastoreError('BLOB_CORRUPT', 'the coordinator answered other blobs than those asked');
              }
              await withIngest(this.store, async (ingest) => {
                for (const meta of reply.header.blobs) {
                  // putBlobBytes refuses (BLOB_CORRUPT) bytes that do not hash to the id.
                  await ingest.putBlobBytes(new Uint8Array(await reply.body.readExact(meta.size, `blob ${meta.id}`)), meta.id);
                  this.fetched(tally, meta.size);
                }
                await reply.body.expectEnd();
              });
            },
          },
        ));
      };
      for (const id of small) {
        const size = closure.objects.get(id)!.size;
        if (batch.length >= MAX_BATCH_OBJECTS || batchBytes + size > MAX_BATCH_BYTES / 4) await flush();
        batch.push(id);
        batchBytes += size;
      }
      await flush();
    });
    tally.hits += counted.hits;
    tally.misses += counted.misses;
    await Promise.all(wholes);
  }

  /** Counts `bytes` fetched from the coordinator: for everyone, and for `tally` when it is not the agents' (whose count is everyone's). */
  private fetched(tally: Tally, bytes: number): void {
    this.counters.bytesFetched += bytes;
    if (tally !== this.counters) tally.bytesFetched += bytes;
  }

  /**
   * A blob of `closure` to serve: from the castore when it is there (a
   * hit); else (a miss) as it arrives, once however many ask: from the
   * partial file the closure copy writes it to when a copy is bringing it,
   * else fetched through. Either way its bytes are readable as they are
   * verified, so an agent asking for the first segment of a large file
   * waits for that segment only, not for the whole file (nor the copy's
   * commit). Counted in `tally`.
   */
  async blobSource(closure: ClosureIndex, id: string, tally: Tally = this.counters): Promise<BlobSource> {
    const digest = id as Digest;
    const copy = await this.copies.inCopy(digest);
    if (copy?.partial) {
      tally.misses++;
      const partial = copy.partial;
      // The stream brings a large blob without its outboard: asked for (a few KiB), it lets its groups be verified as they come.
      const outboard = partial.outboard ?? (await this.outboard(closure.configId, digest));
      partial.attachOutboard(outboard);
      const stored = copy.settled.then(async () => {
        // Given up by the copy before its commit: fetched through.
        if (!this.store.hasBlob(digest)) await (await this.blobSource(closure, id, { hits: 0, misses: 0, bytesFetched: 0 })).stored;
      });
      stored.catch(() => undefined);
      return this.partialSource(digest, partial, outboard, stored);
    }
    const stat = this.store.statBlob(digest);
    if (stat && !this.large.has(id)) {
      // Settled by a copy it waited for (committed before writing began: a miss), or here before it asked (a hit).
      if (copy) tally.misses++;
      else tally.hits++;
      return { size: stat.size, outboard: this.store.readOutboard(digest), waitFor: async () => undefined, read: (offset, length) => this.store.readBlob(digest, { offset, length }), stored: Promise.resolve() };
    }
    let pending = this.large.get(id);
    if (!pending) {
      pending = this.startLarge(closure.configId, digest, closure.objects.get(id)!.size, tally);
      this.large.set(id, pending);
      pending.catch(() => this.large.delete(id));
    }
    tally.misses++;
    const fetch = await pending;
    return this.partialSource(digest, fetch.partial, fetch.partial.outboard!, fetch.whole);
  }

  /**
   * Blob `id`'s outboard (checked against the id), of `configId`'s closure:
   * the castore's, else asked upstream once (a large blob a copy is still bringing: agents ask
   * the outboards of a stream's large blobs before it starts).
   */
  async outboard(configId: string, id: Digest): Promise<Uint8Array> {
    if (this.store.hasBlob(id)) return this.store.readOutboard(id);
    let asked = this.outboards.get(id);
    if (!asked) {
      asked = this.readOutboard(configId, id);
      if (this.outboards.size >= MAX_OUTBOARDS_ASKED) this.outboards.delete(this.outboards.keys().next().value!);
      this.outboards.set(id, asked);
      asked.catch(() => this.outboards.delete(id));
    }
    return asked;
  }

  /** What reads a blob arriving through `partial`: its verified bytes, from the castore once it is there. */
  private partialSource(digest: Digest, partial: PartialBlob, outboard: Uint8Array, stored: Promise<void>): BlobSource {
    const inStore = (): boolean => this.store.hasBlob(digest);
    return {
      size: partial.size,
      outboard,
      waitFor: (end) => partial.waitFor(end, inStore),
      read: (offset, length) => partial.read(offset, length, inStore, (from, rest) => this.store.readBlob(digest, { offset: from, length: rest })),
      stored,
    };
  }

  /** Blob `id`'s outboard, checked against its id (from the upstream relay first when it holds a grant for `configId`). */
  private readOutboard(configId: string, id: Digest): Promise<Uint8Array> {
    return this.sources.through(configId, `the outboard of blob ${id}`, (client) => new RemoteCastore(client).blobs.readOutboard(id));
  }

  /**
   * Starts fetching large blob `id` (of `configId`'s closure): its outboard
   * (checked), then its bytes, verified per group, into a partial file, then
   * into the castore. From the upstream relay first: if it fails part-way,
   * the coordinator sends the rest, from the last verified byte. Bytes
   * counted in `tally`.
   */
  private async startLarge(configId: string, id: Digest, size: number, tally: Tally): Promise<LargeFetch> {
    const outboard = await this.readOutboard(configId, id);
    const file = path.join(this.partialDir, id);
    const partial = new PartialBlob(id, size, file, outboard);
    const whole = (async () => {
      let verified = 0;
      await this.sources.through(configId, `blob ${id}`, async (client) => {
        // Verified per 16 KiB group against the outboard (RemoteCastore) before it is yielded.
        for await (const chunk of new RemoteCastore(client).blobs.read(id, { offset: verified })) {
          partial.append(chunk);
          verified += chunk.length;
          this.fetched(tally, chunk.length);
        }
      });
      await withIngest(this.store, async (ingest) => {
        const writer = ingest.blobWriter(size, id);
        try {
          for await (const chunk of createReadStream(file)) writer.write(chunk as Buffer);
          // Hashed whole again as it is stored.
          writer.finish();
        } catch (error) {
          writer.discard();
          throw error;
        }
      });
    })()
      .catch((error: unknown) => {
        partial.fail(error);
        throw partial.failed;
      })
      .finally(() => {
        this.large.delete(id);
        partial.remove();
      });
    whole.catch(() => undefined);
    return { partial, whole };
  }

  /**
   * Brings the cache under its limit when it is over: keeps the closures
   * used most recently while they fit, removes the rest (castore GC). One
   * eviction at a time; objects in flight are kept (their ingests are open).
   */
  evictIfNeeded(): Promise<void> {
    if (this.evicting || this.bytes() <= this.limitBytes) return this.evicting ?? Promise.resolve();
    this.evicting = (async () => {
      const indexes: [string, ClosureIndex][] = [];
      for (const [configId, pending] of this.closures) {
        const index = await pending.catch(() => undefined);
        if (index) indexes.push([configId, index]);
      }
      indexes.sort((a, b) => b[1].lastUsed - a[1].lastUsed);
      const roots: Node[] = [];
      let kept = 0;
      for (const [configId, index] of indexes) {
        if (kept + index.bytes > this.limitBytes && kept > 0) {
          // Its objects go unless another kept closure shares them; its index is rebuilt if an agent comes back.
          this.closures.delete(configId);
          continue;
        }
        kept += index.bytes;
        roots.push(...index.roots);
      }
      const report = await collectGarbage(this.store, { keepStorePaths: [], extraRoots: roots });
      this.counters.evictions += report.removedBlobs;
    })().finally(() => (this.evicting = undefined));
    return this.evicting;
  }
}
