/**
 * Uploading store paths from a local castore to the coordinator: asks what
 * it lacks (store paths, then their blobs and directories), sends only
 * that — blobs first, then directories children-first, then the store path
 * records, which the coordinator verifies (NAR hash re-computed) and
 * records as one audit event. Idempotent: a second push sends no objects.
 */
import type { DataClient } from '../../protocol/data-client.js';
import { MAX_BATCH_BYTES, MAX_BATCH_OBJECTS, MAX_BATCHED_BLOB_BYTES, MAX_QUERY_ITEMS, MAX_REGISTER_PATHS, MAX_TEMPLATE_QUERY } from '../../protocol/data-protocol.js';
import type { BlobTemplate } from '../services/blob-templates.js';
import type { Digest, FileNode, Node } from '../node.js';
import type { LocalCastore } from '../local/local-castore.js';
import { WIRE_FRAME_BYTES, WIRE_MAX_RATIO, zstdForWire, zstdRawFrame } from '../../protocol/compression/wire.js';
import { batchBlobs, splitBlobs, TRANSFER_BATCH_BYTES, TRANSFER_PARALLEL } from './batches.js';
import { runPool } from './pool.js';
import { referencesFirst } from '../references-first.js';
import type { TransferProgress } from './copy-closure.js';

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
  /** Blobs sent: files the coordinator lacked, or the normalized blobs of templated ones it lacked, */
  blobsSent: number;
  /** and files sent as a template record over a normalized blob (reference-aware blobs), */
  templatesSent: number;
  /** and files the coordinator had. */
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
 * Most compressed bytes of one large blob a push holds: its header states
 * the wire size, so the frames are made before it is sent. A blob whose
 * frames pass this is pushed raw (streamed, as without compression).
 */
export const MAX_COMPRESSED_UPLOAD_BYTES = 64 * 1024 * 1024;

/**
 * A large blob as zstd frames of WIRE_FRAME_BYTES each (the layout of a
 * blob.get segment), or undefined when they would not save 10% or would
 * pass MAX_COMPRESSED_UPLOAD_BYTES. The first frame is the sample: when
 * it does not compress, neither is the rest tried.
 */
async function largeBlobFrames(store: LocalCastore, blob: FileNode): Promise<Uint8Array[] | undefined> {
  const frames: Uint8Array[] = [];
  let wireSize = 0;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let sampleFailed = false;
  const flush = () => {
    const bytes = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    const compressed = zstdForWire(bytes);
    if (!compressed && frames.length === 0) sampleFailed = true;
    const frame = compressed ?? zstdRawFrame(bytes);
    frames.push(frame);
    wireSize += frame.length;
    pending = [];
    pendingBytes = 0;
  };
  for await (let chunk of store.readBlob(blob.digest)) {
    while (chunk.length > 0) {
      const take = Math.min(chunk.length, WIRE_FRAME_BYTES - pendingBytes);
      pending.push(chunk.subarray(0, take));
      pendingBytes += take;
      chunk = chunk.subarray(take);
      if (pendingBytes === WIRE_FRAME_BYTES) flush();
    }
    if (sampleFailed || wireSize > MAX_COMPRESSED_UPLOAD_BYTES) return undefined;
  }
  if (pendingBytes > 0) flush();
  return wireSize <= blob.size * WIRE_MAX_RATIO && wireSize <= MAX_COMPRESSED_UPLOAD_BYTES ? frames : undefined;
}

/**
 * Uploads the closure of `roots` (all registered in `store`). Refuses
 * (CastoreError STORE_PATH_NOT_FOUND) roots or references the local store
 * lacks; the coordinator refuses anything that does not verify (DataError).
 */
export async function uploadStorePaths(client: DataClient, store: LocalCastore, roots: readonly string[], options: UploadOptions = {}): Promise<UploadReport> {
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

  // Files kept here as templates: sent as their normalized blob (when the coordinator lacks it: once for
  // every rebuilt file that shares it) and their template record, which the coordinator verifies.
  const templates = new Map<Digest, { blob: FileNode; template: BlobTemplate }>();
  for (const id of missingBlobs) {
    const template = store.templateOf(id);
    if (template) templates.set(id, { blob: blobs.get(id)!, template });
  }
  const normalizedNodes = new Map<Digest, FileNode>();
  for (const { blob, template } of templates.values()) normalizedNodes.set(template.normalized, { type: 'file', digest: template.normalized, size: blob.size, executable: false });
  const normalizedIds = [...normalizedNodes.keys()];
  const missingNormalized = new Set<Digest>();
  for (let index = 0; index < normalizedIds.length; index += MAX_QUERY_ITEMS) {
    const reply = await client.call({ op: 'missing', blobs: normalizedIds.slice(index, index + MAX_QUERY_ITEMS) });
    for (const id of reply.header.blobs) missingNormalized.add(id);
  }
  const toSend = [
    ...[...missingBlobs].filter((id) => !templates.has(id)).map((id) => blobs.get(id)!),
    ...[...missingNormalized].map((id) => normalizedNodes.get(id)!),
  ];
  progress.phase = 'blobs';
  progress.bytesTotal = toSend.reduce((sum, blob) => sum + blob.size, 0);
  progress.objectsTotal = toSend.length + templates.size + [...missingDirectories].length;
  report();
  const jobs = batchBlobs(toSend, { largeOver: MAX_BATCHED_BLOB_BYTES, maxObjects: MAX_BATCH_OBJECTS / 4, maxBytes: TRANSFER_BATCH_BYTES });
  let lastReport = 0;
  await runPool(jobs, parallel, async (job) => {
    const large = job.length === 1 && job[0]!.size > MAX_BATCHED_BLOB_BYTES;
    const frames = client.compression && large ? await largeBlobFrames(store, job[0]!) : undefined;
    if (frames) {
      // A large blob as 1 MiB zstd frames (raw-block frames where one does not compress), decompressed as they arrive.
      const wireSize = frames.reduce((sum, frame) => sum + frame.length, 0);
      await client.call({ op: 'upload.blobs', blobs: [{ id: job[0]!.digest, size: job[0]!.size, encoding: 'zstd', wireSize }] }, { body: frames });
    } else if (client.compression && !large) {
      // Batched blobs compressed one by one (raw where zstd saves less than 10%); the coordinator
      // decompresses each to at most its declared size and checks its id on those bytes.
      const raw = splitBlobs(store.readBlobBatch(job.map((blob) => blob.digest)).bytes, job.map((blob) => blob.size));
      const frames = raw.map((bytes) => zstdForWire(bytes));
      await client.call(
        {
          op: 'upload.blobs',
          blobs: job.map((blob, index) => {
            const frame = frames[index];
            return frame ? { id: blob.digest, size: blob.size, encoding: 'zstd' as const, wireSize: frame.length } : { id: blob.digest, size: blob.size };
          }),
        },
        { body: frames.map((frame, index) => frame ?? raw[index]!) },
      );
    } else {
      await client.call(
        { op: 'upload.blobs', blobs: job.map((blob) => ({ id: blob.digest, size: blob.size })) },
        {
          body: async function* () {
            // Batched blobs read together (adjacent packed ones in one read); a large one streamed.
            if (large) yield* store.readBlob(job[0]!.digest);
            else yield* store.readBlobBatch(job.map((blob) => blob.digest)).bytes;
          },
        },
      );
    }
    progress.bytesDone += job.reduce((sum, blob) => sum + blob.size, 0);
    progress.objectsDone += job.length;
    if (Date.now() - lastReport > 100) {
      lastReport = Date.now();
      report();
    }
  });

  // Records after the normalized blobs they are over (the coordinator restores each to check it), in requests of
  // at most MAX_TEMPLATE_QUERY records and MAX_BATCH_BYTES of them.
  let templateRecordBytes = 0;
  let batch: { blob: FileNode; template: BlobTemplate }[] = [];
  let batchBytes = 0;
  const sendTemplates = async (): Promise<void> => {
    if (batch.length === 0) return;
    await client.call(
      { op: 'upload.templates', templates: batch.map(({ blob, template }) => ({ id: blob.digest, size: blob.size, normalized: template.normalized, recordSize: template.record.length })) },
      { body: batch.map(({ template }) => template.record) },
    );
    templateRecordBytes += batchBytes;
    progress.objectsDone += batch.length;
    batch = [];
    batchBytes = 0;
  };
  for (const entry of templates.values()) {
    if (batch.length === MAX_TEMPLATE_QUERY || batchBytes + entry.template.record.length > MAX_BATCH_BYTES) await sendTemplates();
    batch.push(entry);
    batchBytes += entry.template.record.length;
  }
  await sendTemplates();

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
  const bytesSent = progress.bytesDone + templateRecordBytes;
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
    templatesSent: templates.size,
    blobsPresent: blobs.size - missingBlobs.size,
    directoriesSent: directoriesToSend.length,
    bytesSent,
    closureNarBytes: closure.reduce((sum, info) => sum + info.narSize, 0),
    seq,
  };
}
