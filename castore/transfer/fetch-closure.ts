/**
 * Fetching a config's closure from the coordinator into a local castore,
 * verifying every byte: directories by their id, blobs group by group
 * against their outboard (a corrupt group is caught where it is, and the
 * transfer resumes from the last verified group). Blobs are committed
 * batch by batch, so a fetch that is killed resumes where it stopped;
 * directories and store path records are committed last, together, so a
 * store path is only ever registered with all of its objects present —
 * unless the caller keeps batched blobs itself (`storeBatchedBlobs: false`,
 * the agent: they are then written into its store, which the castore
 * adopts once the paths are published).
 */
import { manifestProofMessage, verifyProof } from '../../protocol/coordinator-proofs.js';
import { DataClient, DataError, TransportError } from '../../protocol/data-client.js';
import { DecompressError } from '../../protocol/compression/decompress-error.js';
import { unzstdExact, unzstdWhole, WIRE_MAX_COMPRESSED_SEGMENT_BYTES, WIRE_STREAM_MIN_BYTES } from '../../protocol/compression/wire.js';
import { FrameReader } from '../../protocol/framing.js';
import type { KeyId } from '../../protocol/identity.js';
import { MAX_BATCH_OBJECTS, MAX_BATCHED_BLOB_BYTES, MAX_QUERY_ITEMS, MAX_STREAM_BYTES } from '../../protocol/data-protocol.js';
import { BlobVerifier, blake3 } from '../blake3/index.js';
import { decodeDirectory, directoryId } from '../directory.js';
import { CastoreError } from '../errors.js';
import { digestFromBytes, digestToBytes, type Digest, type Entry, type FileNode, type Node } from '../node.js';
import type { LocalCastore as Castore } from '../local/local-castore.js';
import type { BlobWriter } from '../services/blob-service.js';
import { withIngest, type Ingest as IngestSession } from '../services/castore-services.js';
import type { StorePathInfo } from '../store-path-info.js';
import { batchBlobs, TRANSFER_BATCH_BYTES, TRANSFER_PARALLEL } from './batches.js';
import { deltaBatches, fetchGroupDeltaBatch, findDeltaBases, type DeltaPair } from './group-delta.js';
import { streamOrder } from './stream-order.js';
import { runPool } from './pool.js';

export interface TransferProgress {
  phase: 'manifest' | 'directories' | 'blobs' | 'registering' | 'done';
  bytesDone: number;
  bytesTotal: number;
  objectsDone: number;
  objectsTotal: number;
}

export interface FetchOptions {
  /**
   * The coordinator's key (pinned at enrollment): the closure manifest must
   * carry its signature, or the fetch is refused before anything is fetched.
   */
  coordinatorKey: KeyId;
  /** Concurrent requests (default TRANSFER_PARALLEL). */
  parallel?: number;
  onProgress?: (progress: TransferProgress) => void;
  /**
   * Called once, before any blob is fetched, with the closure's store paths
   * and a reader of their directories (verified, whether local or just
   * fetched): lets the caller lay out the trees while blobs arrive. When it
   * returns the files it still needs, the fetch brings those the castore
   * lacks (instead of those of the store paths the castore lacks).
   */
  onTrees?: (storePaths: readonly StorePathInfo[], readDirectory: (id: Digest) => readonly Entry[]) => readonly FileNode[] | void;
  /**
   * Called with each blob fetched in a batch (up to MAX_BATCHED_BLOB_BYTES)
   * once it is verified (and staged, see storeBatchedBlobs); the fetch
   * waits for the promise (backpressure). `bytes` must not be kept after it
   * settles.
   */
  onBlob?: (id: Digest, bytes: Uint8Array) => Promise<void> | void;
  /**
   * false: batched blobs, once verified, go to `onBlob` only, not into the
   * castore — for a caller that keeps them itself (the agent writes them
   * into its store, which the castore then adopts). Requires `onBlob` and
   * an `onTrees` that returns what it needs. Large blobs are always
   * stored. Default true.
   */
  storeBatchedBlobs?: boolean;
  /**
   * Group-level dedup (group-delta.ts): a wanted file whose previous
   * version the castore holds (same path in a store path of the same name)
   * is fetched as the 16 KiB groups that differ. Default true.
   */
  groupDelta?: boolean;
  /**
   * When the client compresses and the blobs to fetch whole add up to at
   * least this many bytes, they come as one zstd stream (`blobs.stream`)
   * rather than in batches. Default WIRE_STREAM_MIN_BYTES; Infinity: never.
   */
  streamMinBytes?: number;
}

export interface FetchReport {
  target: string;
  storePaths: StorePathInfo[];
  /** Store paths that were not in the local castore before. */
  fetchedStorePaths: number;
  fetchedBlobs: number;
  fetchedBytes: number;
  fetchedDirectories: number;
  /** Of `fetchedBlobs`, those assembled from a previous version plus the groups that differ, */
  deltaBlobs: number;
  /** and the bytes of those groups (uncompressed). */
  deltaGroupBytes: number;
}

/**
 * Corrupt bytes are retried (from the last verified group), as a transport
 * fault, not a final error; so are compressed bytes that do not decompress
 * to the declared size (DecompressError), which are bytes corrupt too.
 */
function retryable(error: unknown): never {
  if (
    (error instanceof CastoreError && (error.code === 'BLAKE3_GROUP_MISMATCH' || error.code === 'BLAKE3_OUTBOARD_MISMATCH' || error.code === 'BLOB_CORRUPT')) ||
    error instanceof DecompressError
  ) {
    throw new TransportError(`${error.message}; retrying from the last verified group`);
  }
  throw error;
}

/** Refuses (DataError BAD_RESPONSE) a compressed reply not asked for, or one larger than the bytes it stands for. */
function checkEncoding(client: DataClient, encoding: 'identity' | 'zstd', wireSize: number | undefined, size: number, what: string): void {
  if (encoding === 'identity') return;
  if (!client.compression) throw new DataError('BAD_RESPONSE', `the coordinator sent ${what} ${encoding}-encoded, which was not asked for`);
  if (wireSize === undefined || wireSize > size) throw new DataError('BAD_RESPONSE', `the coordinator sent ${what} as ${wireSize} bytes of ${encoding} for ${size} bytes`);
}

/**
 * Ingest sessions shared by concurrent requests, each committed once it
 * holds ~64 MiB and no request is still writing into it: a handful of
 * commits (fsync + transaction) per closure rather than one per request,
 * while a killed fetch loses at most the uncommitted tail.
 */
class SharedIngest {
  private current: { session: IngestSession; users: number; bytes: number } | undefined;
  private readonly open = new Set<IngestSession>();

  constructor(
    private readonly store: Castore,
    private readonly commitEvery = 64 * 1024 * 1024,
  ) {}

  /** Runs `work` with a session that will receive about `bytes` bytes. */
  async use<T>(bytes: number, work: (session: IngestSession) => Promise<T>): Promise<T> {
    if (!this.current) {
      this.current = { session: this.store.beginIngest(), users: 0, bytes: 0 };
      this.open.add(this.current.session);
    }
    const slot = this.current;
    slot.users++;
    slot.bytes += bytes;
    if (slot.bytes >= this.commitEvery) this.current = undefined;
    try {
      return await work(slot.session);
    } finally {
      // Only verified blobs are ever staged (a failed request stages nothing partial), so a session
      // is committed even when one of its requests failed: what arrived is kept for the retry.
      if (--slot.users === 0 && slot !== this.current) this.commit(slot.session);
    }
  }

  /** Commits the session still open (after the last request). */
  finish(): void {
    if (this.current) this.commit(this.current.session);
    this.current = undefined;
  }

  /** Drops sessions left open by a failure. */
  abort(): void {
    for (const session of this.open) session.abort();
    this.open.clear();
    this.current = undefined;
  }

  private commit(session: IngestSession): void {
    this.open.delete(session);
    session.commit();
  }
}

/** Fetches small blobs in one request; each is verified whole before it is staged (or, with `store` false, handed on). */
async function fetchBlobBatch(
  client: DataClient,
  ingest: SharedIngest,
  blobs: readonly FileNode[],
  onBytes: (bytes: number) => void,
  onBlob: FetchOptions['onBlob'],
  store: boolean,
): Promise<void> {
  const bytes = blobs.reduce((sum, blob) => sum + blob.size, 0);
  await ingest.use(bytes, (session) =>
    client.call(
      { op: 'blobs.get', ids: blobs.map((blob) => blob.digest), ...(client.accept ? { accept: client.accept } : {}) },
      {
        consume: async (reply) => {
          if (reply.header.blobs.length !== blobs.length) throw new TransportError(`the coordinator sent ${reply.header.blobs.length} blobs for ${blobs.length}`);
          const batch = reply.header.batch;
          let batchBytes: Uint8Array | undefined;
          if (batch) {
            if (reply.header.blobs.some((meta) => meta.encoding !== 'identity' || meta.outboardSize !== 0)) throw new DataError('BAD_RESPONSE', 'the coordinator sent a batch frame of blobs encoded on their own');
            checkEncoding(client, batch.encoding, batch.wireSize, bytes, 'a batch of blobs');
            // Bounded by the sizes asked for; each blob is then verified whole as below.
            batchBytes = await unzstdWhole(await reply.body.readExact(batch.wireSize, 'batch frame'), bytes, 'batch frame').catch(retryable);
          }
          let batchAt = 0;
          for (const [index, meta] of reply.header.blobs.entries()) {
            const wanted = blobs[index]!;
            if (meta.id !== wanted.digest || meta.size !== wanted.size) throw new TransportError(`the coordinator sent ${meta.id} (${meta.size} bytes) where ${wanted.digest} was asked for`);
            checkEncoding(client, meta.encoding, meta.wireSize, meta.size, `blob ${meta.id}`);
            await reply.body.readExact(meta.outboardSize, `outboard of ${meta.id}`);
            let data: Uint8Array;
            if (batchBytes) {
              data = batchBytes.subarray(batchAt, batchAt + meta.size);
              batchAt += meta.size;
            } else if (meta.encoding === 'zstd') {
              const wire = await reply.body.readExact(meta.wireSize!, `blob ${meta.id}`);
              // Bounded by the declared size; the result is then verified whole like raw bytes.
              data = await unzstdWhole(wire, meta.size, `blob ${meta.id}`).catch(retryable);
            } else {
              data = await reply.body.readExact(meta.size, `blob ${meta.id}`);
            }
            if (store) {
              // The writer hashes small blobs anyway, and refuses bytes that do not hash to the id before staging them.
              await session.putBlobBytes(data, meta.id).catch(retryable);
            } else if (digestFromBytes(blake3(data)) !== meta.id) {
              retryable(new CastoreError('BLOB_CORRUPT', `blob ${meta.id} arrived with bytes that hash to something else`, { objectId: meta.id }));
            }
            if (onBlob) await onBlob(meta.id, data);
          }
          await reply.body.expectEnd();
          onBytes(bytes);
        },
      },
    ),
  );
}

/**
 * Fetches `blobs` as one `blobs.stream` reply, zstd when the client
 * compresses (one stream: files share their context); each blob is
 * verified whole as it completes and staged in its own ingest slot, so
 * a cut stream keeps what arrived, and the retry asks for the rest only.
 * Returns false, fetching nothing, when the coordinator does not know
 * `blobs.stream` (the caller then uses batches).
 */
async function fetchBlobStream(
  client: DataClient,
  ingest: SharedIngest,
  blobs: readonly FileNode[],
  onBytes: (bytes: number) => void,
  onBlob: FetchOptions['onBlob'],
  store: boolean,
): Promise<boolean> {
  const received = new Set<Digest>();
  const rest = () => blobs.filter((blob) => !received.has(blob.digest));
  try {
    await client.call(() => ({ op: 'blobs.stream', ids: rest().map((blob) => blob.digest), ...(client.accept ? { accept: client.accept } : {}) }), {
      consume: async (reply) => {
        const wanted = rest();
        const size = wanted.reduce((sum, blob) => sum + blob.size, 0);
        if (reply.header.size !== size) throw new TransportError(`the coordinator streams ${reply.header.size} bytes for blobs of ${size}`);
        if (reply.header.encoding !== 'identity' && !client.compression) throw new DataError('BAD_RESPONSE', `the coordinator sent a ${reply.header.encoding} stream, which was not asked for`);
        // zstd: decompressed to exactly `size` bytes at most (the sizes come from verified directories).
        const bytes = new FrameReader(reply.header.encoding === 'zstd' ? unzstdExact(reply.body.readRest(), size, 'blob stream') : reply.body.readChunks(size, 'blob stream'));
        try {
          for (const blob of wanted) {
            if (blob.size <= MAX_BATCHED_BLOB_BYTES) {
              const data = await bytes.readExact(blob.size, `blob ${blob.digest}`);
              if (digestFromBytes(blake3(data)) !== blob.digest) throw new CastoreError('BLOB_CORRUPT', `blob ${blob.digest} arrived with bytes that hash to something else`, { objectId: blob.digest });
              if (store) {
                await ingest.use(blob.size, (session) => session.putBlobBytes(data, blob.digest));
              }
              await onBlob?.(blob.digest, data);
            } else {
              await ingest.use(blob.size, async (session) => {
                // Hashed as written; `finish` refuses (and drops) bytes that are not the blob.
                const writer = session.blobWriter(blob.size, blob.digest);
                try {
                  for await (const chunk of bytes.readChunks(blob.size, `blob ${blob.digest}`)) writer.write(chunk);
                  writer.finish();
                } catch (error) {
                  writer.discard();
                  throw error;
                }
              });
            }
            received.add(blob.digest);
            onBytes(blob.size);
          }
          await bytes.expectEnd();
        } catch (error) {
          retryable(error);
        }
        await reply.body.expectEnd();
      },
    });
  } catch (error) {
    // A coordinator from before blobs.stream refuses the operation: fetch the rest in batches.
    if (error instanceof DataError && error.code === 'INVALID' && received.size === 0) return false;
    throw error;
  }
  return true;
}

/**
 * A large blob is asked for in segments of this size, one after the other:
 * the QUIC library buffers whatever is sent until it is read, so a 1 GiB
 * file sent in one go could sit in memory while it is verified. No more
 * than the coordinator sends compressed (WIRE_MAX_COMPRESSED_SEGMENT_BYTES).
 */
export const LARGE_BLOB_SEGMENT_BYTES = WIRE_MAX_COMPRESSED_SEGMENT_BYTES;

/**
 * Fetches one large blob segment by segment, the outboard only with the
 * first; resumes after a dropped connection or a corrupt group from the
 * last verified group.
 */
async function fetchLargeBlob(client: DataClient, ingest: SharedIngest, blob: FileNode, onBytes: (bytes: number) => void): Promise<void> {
  await ingest.use(blob.size, async (session) => {
    let writer: BlobWriter | undefined;
    let verifier: BlobVerifier | undefined;
    let verifiedBytes = 0;
    try {
      while (verifiedBytes < blob.size || !verifier) {
        await client.call(() => ({ op: 'blob.get', id: blob.digest, offset: verifiedBytes, length: LARGE_BLOB_SEGMENT_BYTES, outboard: verifier === undefined, ...(client.accept ? { accept: client.accept } : {}) }), {
          consume: async (reply) => {
            const expected = Math.min(LARGE_BLOB_SEGMENT_BYTES, blob.size - verifiedBytes);
            if (reply.header.size !== blob.size || reply.header.offset !== verifiedBytes || reply.header.length !== expected) {
              throw new TransportError(`the coordinator sent blob ${blob.digest} from ${reply.header.offset}, ${reply.header.length} of its ${reply.header.size} bytes`);
            }
            checkEncoding(client, reply.header.encoding, reply.header.wireLength, expected, `blob ${blob.digest} from ${verifiedBytes}`);
            try {
              if (!verifier) {
                const outboard = await reply.body.readExact(reply.header.outboardSize, `outboard of ${blob.digest}`);
                // Checks the outboard against the id; then every byte written is verified against it,
                // so the store keeps it rather than hashing the blob again.
                verifier = new BlobVerifier(digestToBytes(blob.digest), blob.size, outboard, { objectId: blob.digest });
                writer = session.blobWriter(blob.size, blob.digest, new Uint8Array(outboard));
              } else if (reply.header.outboardSize !== 0) {
                throw new TransportError(`the coordinator sent an outboard for blob ${blob.digest} that was not asked for`);
              }
              // A retry starts again after the last group this side has written.
              verifier.rewindTo(verifiedBytes);
              // zstd: independent frames from this offset on, decompressed to at most `expected` bytes, then verified group by group as raw ones.
              const chunks =
                reply.header.encoding === 'zstd'
                  ? unzstdExact(reply.body.readChunks(reply.header.wireLength!, `blob ${blob.digest}`), expected, `blob ${blob.digest} from ${verifiedBytes}`)
                  : reply.body.readChunks(expected, `blob ${blob.digest}`);
              for await (const chunk of chunks) {
                for (const verified of verifier.push(chunk)) {
                  writer!.write(verified);
                  verifiedBytes += verified.length;
                  onBytes(verified.length);
                }
              }
              if (verifiedBytes === blob.size) verifier.finish();
            } catch (error) {
              retryable(error);
            }
            await reply.body.expectEnd();
          },
        });
      }
      writer!.finish();
    } catch (error) {
      writer?.discard();
      throw error;
    }
  });
}

/**
 * Fetches what the local castore lacks of `configId`'s closure for
 * `system`, and registers its store paths. Refuses (DataError from the
 * coordinator) unknown configs and systems, and (DataError BAD_PROOF) a
 * manifest that is not signed by `options.coordinatorKey` or is for
 * another config; on any failure, store paths
 * stay unregistered and the blobs already committed are kept for the
 * next attempt (GC removes them if none comes).
 */
export async function fetchClosure(client: DataClient, store: Castore, configId: string, system: string, options: FetchOptions): Promise<FetchReport> {
  const progress: TransferProgress = { phase: 'manifest', bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0 };
  const report = (phase: TransferProgress['phase']) => options.onProgress?.({ ...progress, phase });
  report('manifest');
  const manifest = (await client.call({ op: 'closure.manifest', configId, system })).header;
  if (manifest.configId !== configId || manifest.system !== system || !verifyProof(options.coordinatorKey, manifestProofMessage(manifest), manifest.proof)) {
    throw new DataError('BAD_PROOF', `the closure manifest of config ${configId} is not signed by the coordinator key ${options.coordinatorKey}: refusing it`);
  }
  const lacking = manifest.storePaths.filter((info) => !store.getStorePath(info.storePath));

  // Walk the lacking paths' trees, fetching directories the castore does not have, level by level.
  /** Fetched directories, verified and decoded once. */
  const directories = new Map<Digest, Entry[]>();
  const blobs = new Map<Digest, FileNode>();
  const visitNode = (node: Node, pending: Digest[]) => {
    if (node.type === 'file') blobs.set(node.digest, node);
    if (node.type === 'directory' && !directories.has(node.digest) && !store.hasDirectory(node.digest)) pending.push(node.digest);
  };
  let level: Digest[] = [];
  for (const info of lacking) visitNode(info.root, level);
  level = [...new Set(level)];
  report('directories');
  while (level.length > 0) {
    const next: Digest[] = [];
    const batches: Digest[][] = [];
    for (let index = 0; index < level.length; index += 1024) batches.push(level.slice(index, index + 1024));
    await runPool(batches, options.parallel ?? TRANSFER_PARALLEL, async (ids) => {
      await client.call(
        { op: 'directories.get', ids },
        {
          consume: async (reply) => {
            const received: [Digest, Entry[]][] = [];
            for (const [index, meta] of reply.header.directories.entries()) {
              if (meta.id !== ids[index]) throw new TransportError(`the coordinator sent directory ${meta.id} where ${ids[index]} was asked for`);
              const bytes = new Uint8Array(await reply.body.readExact(meta.size, `directory ${meta.id}`));
              if (directoryId(bytes) !== meta.id) throw new TransportError(`directory ${meta.id} arrived corrupt; retrying`);
              received.push([meta.id, decodeDirectory(bytes, meta.id)]);
            }
            await reply.body.expectEnd();
            for (const [id, entries] of received) {
              directories.set(id, entries);
              for (const entry of entries) visitNode(entry, next);
            }
          },
        },
      );
    });
    level = [...new Set(next)].filter((id) => !directories.has(id));
  }

  const needed = options.onTrees?.(manifest.storePaths, (id) => directories.get(id) ?? store.readDirectory(id));
  const storeBatched = options.storeBatchedBlobs ?? true;
  if (!storeBatched && (!options.onBlob || !needed)) throw new Error('fetchClosure: storeBatchedBlobs false needs onBlob and an onTrees that returns what it needs');
  if (needed) {
    blobs.clear();
    for (const node of needed) blobs.set(node.digest, node);
  }

  // Blobs: those with a previous version here as deltas, then small ones batched and large ones alone; all verified.
  const wanted = store.missingBlobs([...blobs.keys()]).map((id) => blobs.get(id)!);
  progress.bytesTotal = wanted.reduce((sum, blob) => sum + blob.size, 0);
  progress.objectsTotal = wanted.length;
  report('blobs');
  const ingest = new SharedIngest(store);
  let lastReport = 0;
  const onBytes = (bytes: number) => {
    progress.bytesDone += bytes;
    if (Date.now() - lastReport > 100) {
      lastReport = Date.now();
      report('blobs');
    }
  };
  const parallel = options.parallel ?? TRANSFER_PARALLEL;
  const readDirectory = (id: Digest) => directories.get(id) ?? store.readDirectory(id);
  const deltaPairs = options.groupDelta === false ? [] : findDeltaBases(store, lacking, readDirectory, new Map(wanted.map((blob) => [blob.digest, blob])));
  const inDelta = new Set(deltaPairs.map((pair) => pair.target.digest));
  const whole = wanted.filter((blob) => !inDelta.has(blob.digest));
  const delta = { blobs: 0, groupBytes: 0 };
  const fetchWhole = async (job: FileNode[]): Promise<void> => {
    if (job.length === 1 && job[0]!.size > MAX_BATCHED_BLOB_BYTES) await fetchLargeBlob(client, ingest, job[0]!, onBytes);
    else await fetchBlobBatch(client, ingest, job, onBytes, options.onBlob, storeBatched);
    progress.objectsDone += job.length;
  };
  const wholeJobs = (blobs: FileNode[]) => batchBlobs(blobs, { largeOver: MAX_BATCHED_BLOB_BYTES, maxObjects: MAX_BATCH_OBJECTS / 4, maxBytes: TRANSFER_BATCH_BYTES });
  /** Blobs the coordinator declined to send as deltas, or whose delta did not verify: fetched whole at the end. */
  const declined: FileNode[] = [];
  const fetchDeltas = async (batch: DeltaPair[]): Promise<void> => {
    const bytes = batch.reduce((sum, pair) => sum + pair.target.size, 0);
    const outcome = await ingest.use(bytes, (session) =>
      fetchGroupDeltaBatch(client, store, batch, {
        largeWriter: (blob, outboard) => session.blobWriter(blob.size, blob.digest, outboard),
        small: async (blob, data) => {
          if (storeBatched) await session.putBlobBytes(data, blob.digest);
          await options.onBlob?.(blob.digest, data);
        },
      }),
    );
    delta.blobs += outcome.assembled;
    delta.groupBytes += outcome.groupBytes;
    declined.push(...outcome.whole);
    progress.objectsDone += batch.length - outcome.whole.length;
    onBytes(bytes - outcome.whole.reduce((sum, blob) => sum + blob.size, 0));
  };
  try {
    let batched = whole;
    const large = whole.reduce((sum, blob) => sum + blob.size, 0) >= (options.streamMinBytes ?? WIRE_STREAM_MIN_BYTES);
    // Over QUIC, the data plane's transport for bulk (a client may send small fetches over a warm HTTPS connection).
    if (large) client.startBulkTransfer();
    // A large fetch (a cold deploy) as one stream first: it fills the link on its own.
    if (client.compression && large) {
      const wholeIds = new Set(whole.map((blob) => blob.digest));
      const streamed = streamOrder(manifest.storePaths, readDirectory).filter((blob) => wholeIds.has(blob.digest));
      const inStream = new Set(streamed.map((blob) => blob.digest));
      // What no stream carries (an empty blob) goes in a batch.
      batched = whole.filter((blob) => !inStream.has(blob.digest));
      // Runs a `blobs.stream` request may carry.
      const parts = batchBlobs(streamed, { largeOver: MAX_STREAM_BYTES, maxObjects: MAX_QUERY_ITEMS, maxBytes: MAX_STREAM_BYTES });
      for (const [index, part] of parts.entries()) {
        if (!(await fetchBlobStream(client, ingest, part, onBytes, options.onBlob, storeBatched))) {
          batched.push(...parts.slice(index).flat());
          break;
        }
        progress.objectsDone += part.length;
      }
    }
    // Deltas and whole batches side by side: a small change is one round trip, not two.
    const jobs = [...deltaBatches(deltaPairs).map((batch) => ({ deltas: batch })), ...wholeJobs(batched).map((job) => ({ whole: job }))];
    await runPool(jobs, parallel, (job) => ('deltas' in job ? fetchDeltas(job.deltas) : fetchWhole(job.whole)));
    await runPool(wholeJobs(declined), parallel, fetchWhole);
    ingest.finish();
  } catch (error) {
    // What arrived is verified: keep it for the next attempt.
    try {
      ingest.finish();
    } catch {
      ingest.abort();
    }
    throw error;
  }

  report('registering');
  await withIngest(store, (session) => {
    for (const entries of directories.values()) session.putDirectory(entries);
    for (const info of lacking) session.registerStorePath(info);
  });
  report('done');
  return {
    target: manifest.target,
    storePaths: manifest.storePaths,
    fetchedStorePaths: lacking.length,
    fetchedBlobs: wanted.length,
    fetchedBytes: progress.bytesTotal,
    fetchedDirectories: directories.size,
    deltaBlobs: delta.blobs,
    deltaGroupBytes: delta.groupBytes,
  };
}
