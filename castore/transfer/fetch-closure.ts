/**
 * Fetching a config's closure from the coordinator into a local castore,
 * verifying every byte: directories by their id, blobs group by group
 * against their outboard (a corrupt group is caught where it is, and the
 * transfer resumes from the last verified group). Blobs are committed
 * batch by batch, so a fetch that is killed resumes where it stopped;
 * directories and store path records are committed last, together, so a
 * store path is only ever registered with all of its objects present.
 */
import { DataClient, TransportError, type DataReplyStream } from '../../protocol/data-client.js';
import { MAX_BATCH_OBJECTS } from '../../protocol/data-protocol.js';
import { BlobVerifier, GROUP_SIZE } from '../blake3/index.js';
import { decodeDirectory, directoryId } from '../directory.js';
import { CastoreError } from '../errors.js';
import { digestToBytes, type Digest, type Entry, type FileNode, type Node } from '../node.js';
import type { Castore } from '../store/castore.js';
import type { IngestSession } from '../store/ingest-session.js';
import type { StorePathInfo } from '../store/store-path-info.js';
import { batchBlobs } from './batches.js';
import { runPool } from './pool.js';

export interface TransferProgress {
  phase: 'manifest' | 'directories' | 'blobs' | 'registering' | 'done';
  bytesDone: number;
  bytesTotal: number;
  objectsDone: number;
  objectsTotal: number;
}

export interface FetchOptions {
  /** Concurrent requests (default 8). */
  parallel?: number;
  onProgress?: (progress: TransferProgress) => void;
}

export interface FetchReport {
  target: string;
  storePaths: StorePathInfo[];
  /** Store paths that were not in the local castore before. */
  fetchedStorePaths: number;
  fetchedBlobs: number;
  fetchedBytes: number;
  fetchedDirectories: number;
}

/** Small blobs travel many to a request; larger ones alone, with resume. */
const BATCH_BLOB_MAX = 256 * 1024;
const BATCH_BYTES = 4 * 1024 * 1024;

/** Corrupt bytes are retried (from the last verified group), as a transport fault, not a final error. */
function retryable(error: unknown): never {
  if (error instanceof CastoreError && (error.code === 'BLAKE3_GROUP_MISMATCH' || error.code === 'BLAKE3_OUTBOARD_MISMATCH' || error.code === 'BLOB_CORRUPT')) {
    throw new TransportError(`${error.message}; retrying from the last verified group`);
  }
  throw error;
}

async function receiveBlob(reply: DataReplyStream<'blob.get' | 'blobs.get'>, id: Digest, size: number, outboardSize: number, startGroup: number, write: (bytes: Uint8Array) => void): Promise<void> {
  try {
    const outboard = await reply.body.readExact(outboardSize, `outboard of ${id}`);
    const verifier = new BlobVerifier(digestToBytes(id), size, outboard, { startGroup, objectId: id });
    for await (const chunk of reply.body.readChunks(size - startGroup * GROUP_SIZE, `blob ${id}`)) for (const verified of verifier.push(chunk)) write(verified);
    verifier.finish();
  } catch (error) {
    retryable(error);
  }
}

/** Fetches small blobs in one request and commits them together. */
async function fetchBlobBatch(client: DataClient, store: Castore, blobs: readonly FileNode[], onBytes: (bytes: number) => void): Promise<void> {
  await client.call(
    { op: 'blobs.get', ids: blobs.map((blob) => blob.digest) },
    {
      consume: async (reply) => {
        const session = store.beginIngest();
        try {
          let received = 0;
          for (const [index, meta] of reply.header.blobs.entries()) {
            const wanted = blobs[index]!;
            if (meta.id !== wanted.digest || meta.size !== wanted.size) throw new TransportError(`the coordinator sent ${meta.id} (${meta.size} bytes) where ${wanted.digest} was asked for`);
            // Small blobs are verified whole by the writer, which hashes them anyway (natively up to 16 KiB).
            const writer = session.blobWriter(meta.size, meta.id);
            try {
              await reply.body.readExact(meta.outboardSize, `outboard of ${meta.id}`);
              for await (const chunk of reply.body.readChunks(meta.size, `blob ${meta.id}`)) writer.write(chunk);
              writer.finish();
            } catch (error) {
              retryable(error);
            }
            received += meta.size;
          }
          await reply.body.expectEnd();
          session.commit();
          onBytes(received);
        } catch (error) {
          session.abort();
          throw error;
        }
      },
    },
  );
}

/** Fetches one large blob, resuming after a dropped connection or a corrupt group from the last verified group. */
async function fetchLargeBlob(client: DataClient, store: Castore, blob: FileNode, onBytes: (bytes: number) => void): Promise<void> {
  const session = store.beginIngest();
  let verifiedBytes = 0;
  try {
    const writer = session.blobWriter(blob.size);
    await client.call(() => ({ op: 'blob.get', id: blob.digest, offset: verifiedBytes }), {
      consume: async (reply) => {
        if (reply.header.size !== blob.size || reply.header.offset !== verifiedBytes) throw new TransportError(`the coordinator sent blob ${blob.digest} from ${reply.header.offset}, size ${reply.header.size}`);
        await receiveBlob(reply, blob.digest, blob.size, reply.header.outboardSize, verifiedBytes / GROUP_SIZE, (bytes) => {
          writer.write(bytes);
          verifiedBytes += bytes.length;
          onBytes(bytes.length);
        });
        await reply.body.expectEnd();
      },
    });
    writer.finish();
    session.commit();
  } catch (error) {
    session.abort();
    throw error;
  }
}

/**
 * Fetches what the local castore lacks of `configId`'s closure for
 * `system`, and registers its store paths. Refuses (DataError from the
 * coordinator) unknown configs and systems; on any failure, store paths
 * stay unregistered and the blobs already committed are kept for the
 * next attempt (GC removes them if none comes).
 */
export async function fetchClosure(client: DataClient, store: Castore, configId: string, system: string, options: FetchOptions = {}): Promise<FetchReport> {
  const progress: TransferProgress = { phase: 'manifest', bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0 };
  const report = (phase: TransferProgress['phase']) => options.onProgress?.({ ...progress, phase });
  report('manifest');
  const manifest = (await client.call({ op: 'closure.manifest', configId, system })).header;
  const lacking = manifest.storePaths.filter((info) => !store.getStorePath(info.storePath));

  // Walk the lacking paths' trees, fetching directories the castore does not have, level by level.
  const directories = new Map<Digest, Uint8Array>();
  const blobs = new Map<Digest, FileNode>();
  const visitNode = (node: Node, pending: Digest[]) => {
    if (node.type === 'file' && !blobs.has(node.digest) && !store.hasBlob(node.digest)) blobs.set(node.digest, node);
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
    await runPool(batches, options.parallel ?? 8, async (ids) => {
      await client.call(
        { op: 'directories.get', ids },
        {
          consume: async (reply) => {
            const received: [Digest, Uint8Array, Entry[]][] = [];
            for (const [index, meta] of reply.header.directories.entries()) {
              if (meta.id !== ids[index]) throw new TransportError(`the coordinator sent directory ${meta.id} where ${ids[index]} was asked for`);
              const bytes = new Uint8Array(await reply.body.readExact(meta.size, `directory ${meta.id}`));
              if (directoryId(bytes) !== meta.id) throw new TransportError(`directory ${meta.id} arrived corrupt; retrying`);
              received.push([meta.id, bytes, decodeDirectory(bytes, meta.id)]);
            }
            await reply.body.expectEnd();
            for (const [id, bytes, entries] of received) {
              directories.set(id, bytes);
              for (const entry of entries) visitNode(entry, next);
            }
          },
        },
      );
    });
    level = [...new Set(next)].filter((id) => !directories.has(id));
  }

  // Blobs: small ones batched, large ones alone; all verified on arrival.
  const wanted = [...blobs.values()];
  progress.bytesTotal = wanted.reduce((sum, blob) => sum + blob.size, 0);
  progress.objectsTotal = wanted.length;
  report('blobs');
  const jobs = batchBlobs(wanted, { largeOver: BATCH_BLOB_MAX, maxObjects: MAX_BATCH_OBJECTS / 4, maxBytes: BATCH_BYTES });
  let lastReport = 0;
  const onBytes = (bytes: number) => {
    progress.bytesDone += bytes;
    if (Date.now() - lastReport > 100) {
      lastReport = Date.now();
      report('blobs');
    }
  };
  await runPool(jobs, options.parallel ?? 8, async (job) => {
    if (job.length === 1 && job[0]!.size > BATCH_BLOB_MAX) await fetchLargeBlob(client, store, job[0]!, onBytes);
    else await fetchBlobBatch(client, store, job, onBytes);
    progress.objectsDone += job.length;
  });

  report('registering');
  registerFetched(store.beginIngest(), directories, lacking);
  report('done');
  return {
    target: manifest.target,
    storePaths: manifest.storePaths,
    fetchedStorePaths: lacking.length,
    fetchedBlobs: wanted.length,
    fetchedBytes: progress.bytesTotal,
    fetchedDirectories: directories.size,
  };
}

function registerFetched(session: IngestSession, directories: Map<Digest, Uint8Array>, lacking: readonly StorePathInfo[]): void {
  try {
    for (const [id, bytes] of directories) session.putDirectory(decodeDirectory(bytes, id));
    for (const info of lacking) session.registerStorePath(info);
    session.commit();
  } catch (error) {
    session.abort();
    throw error;
  }
}
