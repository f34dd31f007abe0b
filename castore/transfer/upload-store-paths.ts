/**
 * Uploading store paths from a local castore to the coordinator: asks what
 * it lacks (store paths, then their blobs and directories), sends only
 * that — blobs first, then directories children-first, then the store path
 * records, which the coordinator verifies (NAR hash re-computed) and
 * records as one audit event. Idempotent: a second push sends no objects.
 */
import type { DataClient } from '../../protocol/data-client.js';
import { MAX_BATCH_OBJECTS, MAX_BATCHED_BLOB_BYTES, MAX_QUERY_ITEMS, MAX_REGISTER_PATHS } from '../../protocol/data-protocol.js';
import type { Digest, FileNode, Node } from '../node.js';
import type { Castore } from '../store/castore.js';
import { batchBlobs, TRANSFER_BATCH_BYTES, TRANSFER_PARALLEL } from './batches.js';
import { runPool } from './pool.js';
import { referencesFirst } from '../references-first.js';
import type { TransferProgress } from './fetch-closure.js';

export interface UploadOptions {
  parallel?: number;
  onProgress?: (progress: TransferProgress) => void;
}

export interface UploadReport {
  roots: string[];
  /** Store paths in the closure of the roots. */
  closureSize: number;
  /** Store paths the coordinator did not have (now registered). */
  registered: string[];
  blobsSent: number;
  blobsPresent: number;
  directoriesSent: number;
  bytesSent: number;
  /** Sum of the NAR sizes of the closure: what a NAR-based push would send. */
  closureNarBytes: number;
  /** The audit event of the push. */
  seq: number;
}

function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let index = 0; index < items.length; index += size) out.push(items.slice(index, index + size));
  return out;
}

/**
 * Uploads the closure of `roots` (all registered in `store`). Refuses
 * (CastoreError STORE_PATH_NOT_FOUND) roots or references the local store
 * lacks; the coordinator refuses anything that does not verify (DataError).
 */
export async function uploadStorePaths(client: DataClient, store: Castore, roots: readonly string[], options: UploadOptions = {}): Promise<UploadReport> {
  const parallel = options.parallel ?? TRANSFER_PARALLEL;
  const closure = store.closure(roots).map((storePath) => store.getStorePath(storePath)!);
  const progress: TransferProgress = { phase: 'manifest', bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0 };
  const report = () => options.onProgress?.({ ...progress });
  report();

  const missingPaths = new Set<string>();
  for (const part of chunked(closure, MAX_QUERY_ITEMS)) {
    const reply = await client.call({ op: 'missing', storePaths: part.map((info) => info.storePath) });
    for (const storePath of reply.header.storePaths) missingPaths.add(storePath);
  }
  const toRegister = closure.filter((info) => missingPaths.has(info.storePath));

  // Every object below the missing paths; directories children-first, as the coordinator requires.
  const directoryOrder: Digest[] = [];
  const seenDirectories = new Set<Digest>();
  const blobs = new Map<Digest, FileNode>();
  const visit = (node: Node): void => {
    if (node.type === 'file') blobs.set(node.digest, node);
    if (node.type !== 'directory' || seenDirectories.has(node.digest)) return;
    seenDirectories.add(node.digest);
    for (const entry of store.readDirectory(node.digest)) visit(entry);
    directoryOrder.push(node.digest);
  };
  for (const info of toRegister) visit(info.root);

  progress.phase = 'directories';
  report();
  const missingBlobs = new Set<Digest>();
  const missingDirectories = new Set<Digest>();
  const blobIds = [...blobs.keys()];
  for (let index = 0; index < Math.max(blobIds.length, directoryOrder.length); index += MAX_QUERY_ITEMS) {
    const reply = await client.call({ op: 'missing', blobs: blobIds.slice(index, index + MAX_QUERY_ITEMS), directories: directoryOrder.slice(index, index + MAX_QUERY_ITEMS) });
    for (const id of reply.header.blobs) missingBlobs.add(id);
    for (const id of reply.header.directories) missingDirectories.add(id);
  }

  const toSend = [...missingBlobs].map((id) => blobs.get(id)!);
  progress.phase = 'blobs';
  progress.bytesTotal = toSend.reduce((sum, blob) => sum + blob.size, 0);
  progress.objectsTotal = toSend.length + [...missingDirectories].length;
  report();
  const jobs = batchBlobs(toSend, { largeOver: MAX_BATCHED_BLOB_BYTES, maxObjects: MAX_BATCH_OBJECTS / 4, maxBytes: TRANSFER_BATCH_BYTES });
  let lastReport = 0;
  await runPool(jobs, parallel, async (job) => {
    await client.call(
      { op: 'upload.blobs', blobs: job.map((blob) => ({ id: blob.digest, size: blob.size })) },
      {
        body: async function* () {
          // Batched blobs read together (adjacent packed ones in one read); a large one streamed.
          if (job.length === 1 && job[0]!.size > MAX_BATCHED_BLOB_BYTES) yield* store.readBlob(job[0]!.digest);
          else yield* store.readBlobBatch(job.map((blob) => blob.digest)).bytes;
        },
      },
    );
    progress.bytesDone += job.reduce((sum, blob) => sum + blob.size, 0);
    progress.objectsDone += job.length;
    if (Date.now() - lastReport > 100) {
      lastReport = Date.now();
      report();
    }
  });

  const directoriesToSend = directoryOrder.filter((id) => missingDirectories.has(id));
  for (const part of chunked(directoriesToSend, 1024)) {
    const encodings = part.map((id) => store.readDirectoryBytes(id));
    await client.call({ op: 'upload.directories', directories: part.map((id, index) => ({ id, size: encodings[index]!.length })) }, { body: encodings });
    progress.objectsDone += part.length;
    progress.bytesDone += encodings.reduce((sum, bytes) => sum + bytes.length, 0);
    report();
  }

  progress.phase = 'registering';
  report();
  const bytesSent = progress.bytesDone;
  // One request (one audit event) per push, unless the closure is huge: then dependencies first, in parts.
  const registered: string[] = [];
  let seq = 0;
  const parts = chunked(referencesFirst(toRegister), MAX_REGISTER_PATHS);
  for (const [index, part] of (parts.length > 0 ? parts : [[]]).entries()) {
    const last = index === Math.max(0, parts.length - 1);
    const reply = await client.call({
      op: 'upload.storePaths',
      roots: last ? [...roots] : part.slice(0, 1000).map((info) => info.storePath),
      storePaths: part,
      stats: last ? { bytesSent, blobsSent: toSend.length, directoriesSent: directoriesToSend.length } : { bytesSent: 0, blobsSent: 0, directoriesSent: 0 },
    });
    registered.push(...reply.header.registered);
    seq = reply.header.seq;
  }
  progress.phase = 'done';
  report();
  return {
    roots: [...roots],
    closureSize: closure.length,
    registered,
    blobsSent: toSend.length,
    blobsPresent: blobs.size - toSend.length,
    directoriesSent: directoriesToSend.length,
    bytesSent,
    closureNarBytes: closure.reduce((sum, info) => sum + info.narSize, 0),
    seq,
  };
}
