/**
 * The verified copy of a closure between castores: from any reader (a
 * local or memory castore, the coordinator's data plane) into any castore
 * that accepts writes. One function for local → memory, memory → local and
 * the agent's fetch (remote → local).
 *
 * What the copy guarantees, whatever the source:
 * - every object is checked against its id before it is staged in the
 *   target: a blob's bytes against its BLAKE3 (by the target's ingest, or
 *   here before a small-blob sink sees them), a directory's encoding
 *   against its digest (and decoded strictly), a store path record against
 *   the schema and the path it was asked for. A remote source only answers
 *   for the records a signed closure manifest vouched for
 *   (castore/remote/remote-castore.ts), so an unvouched path is unknown;
 * - the store paths and their directories are published in one ingest,
 *   after every blob they reach: a failed copy registers nothing. Blobs are
 *   committed as they arrive, ~64 MiB at a time (SharedIngest), so a copy
 *   that fails or is killed resumes with what it already verified (GC
 *   removes it if no retry comes); a blob that failed its check is never
 *   staged.
 *
 * Fast paths are capabilities of the source, feature-detected
 * (`BulkCopySource`, offered by the data plane: many directories per
 * request, small blobs in batches, one zstd stream for a cold deploy,
 * large blobs streamed against their outboard and resumed at a verified
 * group, group deltas against blobs the target already has). A source
 * without them is read object by object through the services.
 */
import { MAX_BATCHED_BLOB_BYTES } from '../../protocol/data-protocol.js';
import { blake3 } from '../blake3/index.js';
import { decodeDirectory, directoryId } from '../directory.js';
import { CastoreError } from '../errors.js';
import { LocalCastore } from '../local/local-castore.js';
import { digestFromBytes, type Digest, type Entry, type FileNode, type Node } from '../node.js';
import { decodeTemplateRecord, HashPartSet } from '../references/index.js';
import { offersTemplates, type BlobTemplate } from '../services/blob-templates.js';
import { withIngest, type CastoreReader, type CastoreServices, type Ingest } from '../services/castore-services.js';
import { StorePathInfoSchema, type StorePathInfo } from '../store-path-info.js';
import { TRANSFER_PARALLEL } from './batches.js';
import { findDeltaBases, type DeltaBasisStore, type DeltaPair } from './group-delta.js';
import { runPool } from './pool.js';

export interface TransferProgress {
  phase: 'manifest' | 'directories' | 'blobs' | 'registering' | 'done';
  bytesDone: number;
  bytesTotal: number;
  objectsDone: number;
  objectsTotal: number;
}

/**
 * A place that keeps the closure's small blobs instead of the target (the
 * agent writes them into its store's trees, which the castore then adopts,
 * so the bytes are written once).
 */
export interface SmallBlobSink {
  /**
   * Called once, before any blob is copied, with the closure's store paths
   * and a reader of every directory below them (verified, whether copied or
   * already in the target). Returns the files it still needs: of those, the
   * ones the target lacks are copied (instead of every blob of the store
   * paths the target lacks).
   */
  plan(storePaths: readonly StorePathInfo[], readDirectory: (id: Digest) => readonly Entry[]): readonly FileNode[];
  /**
   * Receives each blob of at most SMALL_BLOB_BYTES once it is verified; it
   * is not staged in the target. The copy waits for the promise
   * (backpressure); `bytes` must not be kept after it settles. Larger blobs
   * always go to the target; those the target restored from templates (any
   * size) are handed here too, once verified, so they are not restored again.
   */
  accept(id: Digest, bytes: Uint8Array): Promise<void> | void;
}

/** Blobs up to this size go to a SmallBlobSink when there is one (the data plane's batched-blob bound). */
export const SMALL_BLOB_BYTES = MAX_BATCHED_BLOB_BYTES;

export interface CopyOptions {
  /** Concurrent reads (requests, for a remote source); default TRANSFER_PARALLEL. */
  parallel?: number;
  onProgress?: (progress: TransferProgress) => void;
  /** Small blobs go there rather than into the target (see SmallBlobSink). */
  smallBlobs?: SmallBlobSink;
  /**
   * Fast path, where the source offers it and the target is local: a
   * wanted file whose previous version the target holds (same path in a
   * store path of the same name) is copied as the 16 KiB groups that
   * differ (group-delta.ts). Default true.
   */
  groupDelta?: boolean;
  /**
   * Fast path, where the source offers it: when the source compresses and
   * the blobs to copy whole add up to at least this many bytes, they come
   * as one zstd stream rather than in batches. Default
   * WIRE_STREAM_MIN_BYTES; Infinity: never.
   */
  streamMinBytes?: number;
}

export interface CopyReport {
  /** The closure's store path records (verified), sorted by path. */
  storePaths: StorePathInfo[];
  /** Store paths the target did not have before. */
  copiedStorePaths: number;
  /** Blobs the target restored from a normalized blob it already had (reference-aware blobs): no byte of them moved. */
  restoredBlobs: number;
  /**
   * What the source claimed of the copied blobs' templates (unverified): a
   * target that keeps some of them outside the castore (a small-blob sink's
   * store files) checks and records them when it adopts those files. With
   * a sink, those of blobs no normalized blob here could restore are asked
   * once the blobs are copied, so this may settle after the copy returns;
   * it never rejects (a claim that could not be asked is left out).
   */
  templates: Promise<ReadonlyMap<Digest, BlobTemplate>>;
  copiedBlobs: number;
  copiedBytes: number;
  copiedDirectories: number;
  /** Of `copiedBlobs`, those assembled from a previous version plus the groups that differ, */
  deltaBlobs: number;
  /** and the bytes of those groups (uncompressed). */
  deltaGroupBytes: number;
  /**
   * Normalized blobs fetched as group deltas against the normalized blob
   * of a previous version the target holds (the files over them are among
   * `restoredBlobs`: rebuilt files that also changed a little),
   */
  normalizedDeltaBlobs: number;
  /** and the bytes of their groups (uncompressed). */
  normalizedDeltaGroupBytes: number;
}

/**
 * Ingests shared by concurrent reads, each committed once it holds
 * ~64 MiB and no read is still writing into it: a handful of commits
 * (fsync + transaction) per closure rather than one per request, while a
 * killed copy loses at most the uncommitted tail.
 */
export class SharedIngest {
  private current: { session: Ingest; users: number; bytes: number } | undefined;
  private readonly open = new Set<Ingest>();

  constructor(
    private readonly target: Pick<CastoreServices, 'beginIngest'>,
    private readonly commitEvery = 64 * 1024 * 1024,
    /** Handed to each ingest (Ingest.expectTemplates). */
    private readonly templateHints?: ReadonlyMap<Digest, HashPartSet>,
  ) {}

  /** Runs `work` with an ingest that will receive about `bytes` bytes. */
  async use<T>(bytes: number, work: (session: Ingest) => Promise<T>): Promise<T> {
    if (!this.current) {
      this.current = { session: this.target.beginIngest(), users: 0, bytes: 0 };
      if (this.templateHints && this.templateHints.size > 0) this.current.session.expectTemplates(this.templateHints);
      this.open.add(this.current.session);
    }
    const slot = this.current;
    slot.users++;
    slot.bytes += bytes;
    if (slot.bytes >= this.commitEvery) this.current = undefined;
    try {
      return await work(slot.session);
    } finally {
      // Only verified blobs are ever staged (a failed read stages nothing partial), so an ingest
      // is committed even when one of its reads failed: what arrived is kept for the retry.
      if (--slot.users === 0 && slot !== this.current) this.commit(slot.session);
    }
  }

  /** Commits the ingest still open (after the last read). */
  finish(): void {
    if (this.current) this.commit(this.current.session);
    this.current = undefined;
  }

  /** Drops ingests left open by a failure. */
  abort(): void {
    for (const session of this.open) session.abort();
    this.open.clear();
    this.current = undefined;
  }

  private commit(session: Ingest): void {
    this.open.delete(session);
    session.commit();
  }
}

/** The blobs a bulk source is asked to copy, and where they go. */
export interface BulkBlobJob {
  /** What the target lacks (verified sizes, from directories). */
  blobs: readonly FileNode[];
  /** The whole closure. */
  storePaths: readonly StorePathInfo[];
  /** Knows every directory below `storePaths`. */
  readDirectory: (id: Digest) => readonly Entry[];
  ingest: SharedIngest;
  /** Small blobs go there instead of `ingest`. */
  smallBlobs?: SmallBlobSink['accept'];
  /** Present when the target can serve as the basis of group deltas and they are wanted. */
  deltas?: JobDeltas;
  parallel: number;
  streamMinBytes?: number;
  onBytes(bytes: number): void;
  onObjects(count: number): void;
}

/** The group deltas of a bulk job (group-delta.ts). */
export interface JobDeltas {
  /** Reads the bases (the target). */
  basis: DeltaBasisStore;
  /** Blobs of the job with a previous version in the target (findDeltaBases): asked as deltas, fetched whole when declined. */
  pairs: readonly DeltaPair[];
  /**
   * Normalized blobs, not among the job's blobs, to fetch as deltas
   * against normalized blobs the target holds (a rebuilt file that also
   * changed a little: its real bytes differ in every group a reference
   * sits in, its normalized bytes only where it changed). Each is staged
   * in the ingest once it verified, never handed to the small-blob sink
   * (it is no file of the closure); one declined or that did not verify
   * is not fetched at all: the copy fetches the files over it instead.
   */
  normalized: readonly DeltaPair[];
}

/** What a bulk source's copyBlobs did besides copying the blobs. */
export interface BulkCopyOutcome {
  /** Blobs assembled from a previous version and the groups received, */
  deltaBlobs: number;
  /** and the bytes of those groups (uncompressed). */
  deltaGroupBytes: number;
  /** The normalized blobs of `JobDeltas.normalized` staged (verified), */
  normalized: Set<Digest>;
  /** and the bytes of their groups received (uncompressed). */
  normalizedGroupBytes: number;
}

/**
 * Bulk reads a source may offer besides the services (the data plane
 * does). Contract: what they hand back or stage is checked against its
 * id as by the services (`getDirectories` may return bytes unchecked:
 * the copy checks them); a failure stages nothing of the object that
 * failed.
 */
export interface BulkCopySource {
  /** How many ids `getDirectories` takes at once. */
  readonly directoriesPerRequest: number;
  /** The encodings of `ids`, in their order; refuses an id the source lacks. */
  getDirectories(ids: readonly Digest[]): Promise<Uint8Array[]>;
  /** Copies `job.blobs` (and stages `job.deltas.normalized`), each verified before it is staged or handed to the sink. */
  copyBlobs(job: BulkBlobJob): Promise<BulkCopyOutcome>;
}

/** A reader that offers bulk reads (feature-detected by the copy). */
export interface BulkCopyReader extends CastoreReader {
  readonly bulk: BulkCopySource;
}

const offersBulk = (source: CastoreReader): source is BulkCopyReader => 'bulk' in source && typeof source.bulk === 'object' && source.bulk !== null;

/** The directory `id` from its encoding, refused (DIRECTORY_NOT_CANONICAL) unless it hashes to `id` and decodes strictly. */
function verifiedDirectory(id: Digest, bytes: Uint8Array | undefined): Entry[] {
  if (!bytes) throw new CastoreError('DIRECTORY_NOT_FOUND', `the source lacks directory ${id}`, { objectId: id });
  const actual = directoryId(bytes);
  if (actual !== id) throw new CastoreError('DIRECTORY_NOT_CANONICAL', `directory ${id} from the source hashes to ${actual}`, { objectId: id });
  return decodeDirectory(bytes, id);
}

/**
 * The store path records of the closure of `roots` in `source`, each
 * checked against the schema and the path it was asked for, sorted by
 * path. Refuses a path (or reference) the source does not answer for
 * (STORE_PATH_NOT_FOUND) and a record that fails the checks
 * (STORE_PATH_INVALID).
 */
async function resolveClosure(source: CastoreReader, roots: readonly string[]): Promise<StorePathInfo[]> {
  const infos = new Map<string, StorePathInfo>();
  let pending = [...new Set(roots)];
  while (pending.length > 0) {
    const found = await Promise.all(pending.map((storePath) => source.pathInfo.get(storePath)));
    const next = new Set<string>();
    for (const [index, storePath] of pending.entries()) {
      const record = found[index];
      if (!record) throw new CastoreError('STORE_PATH_NOT_FOUND', `the source does not vouch for store path ${storePath}`, { objectId: storePath });
      const parsed = StorePathInfoSchema.safeParse(record);
      if (!parsed.success || parsed.data.storePath !== storePath) {
        throw new CastoreError('STORE_PATH_INVALID', `the source's record of ${storePath} ${parsed.success ? `is of ${parsed.data.storePath}` : 'is not valid'}`, { objectId: storePath });
      }
      infos.set(storePath, parsed.data);
      for (const reference of parsed.data.references) if (!infos.has(reference)) next.add(reference);
    }
    pending = [...next].filter((storePath) => !infos.has(storePath));
  }
  return [...infos.values()].sort((a, b) => (a.storePath < b.storePath ? -1 : a.storePath > b.storePath ? 1 : 0));
}

/** Copies `blobs` one by one through the source's BlobReader; the target's ingest checks each. */
async function copyBlobsByService(source: CastoreReader, job: Pick<BulkBlobJob, 'blobs' | 'ingest' | 'smallBlobs' | 'parallel' | 'onBytes' | 'onObjects'>): Promise<void> {
  await runPool(job.blobs, job.parallel, async (blob) => {
    if (job.smallBlobs && blob.size <= SMALL_BLOB_BYTES) {
      const chunks: Uint8Array[] = [];
      let length = 0;
      for await (const chunk of source.blobs.read(blob.digest)) {
        length += chunk.length;
        if (length > blob.size) break;
        chunks.push(chunk);
      }
      const bytes = Buffer.concat(chunks);
      if (length !== blob.size || digestFromBytes(blake3(bytes)) !== blob.digest) {
        throw new CastoreError('BLOB_CORRUPT', `blob ${blob.digest} came from the source with bytes that are not its own`, { objectId: blob.digest });
      }
      await job.smallBlobs(blob.digest, bytes);
      job.onBytes(blob.size);
    } else {
      await job.ingest.use(blob.size, async (session) => {
        // Hashed as written; `finish` refuses (and stages nothing of) bytes that are not the blob.
        const writer = session.blobWriter(blob.size, blob.digest);
        let written = 0;
        try {
          for await (const chunk of source.blobs.read(blob.digest)) {
            written += chunk.length;
            if (written > blob.size) throw new CastoreError('BLOB_CORRUPT', `blob ${blob.digest} came from the source longer than its ${blob.size} bytes`, { objectId: blob.digest });
            writer.write(chunk);
          }
          writer.finish();
        } catch (error) {
          writer.discard();
          throw error;
        }
      });
      job.onBytes(blob.size);
    }
    job.onObjects(1);
  });
}

/** What a copy knows of the wanted blobs' templates before their bytes move. */
interface TemplatePlan {
  /** Wanted blobs with a template over a normalized blob the target holds: restored, not copied. */
  restorable: FileNode[];
  /**
   * Wanted blobs with a template over a normalized blob the target lacks,
   * whose previous version (the group-delta basis) the target keeps as a
   * template over another: that normalized blob is fetched as a group
   * delta against the basis's (`normalizedDeltas`), then they are restored.
   */
  overDeltas: FileNode[];
  normalizedDeltas: DeltaPair[];
  /** For the target's ingests (Ingest.expectTemplates): the hash parts of every other wanted blob the source keeps as a template. */
  hints: Map<Digest, HashPartSet>;
  /** The source's claims asked before the copy; */
  templates: Map<Digest, BlobTemplate>;
  /** the wanted blobs to ask about once it is done (a sink's owner records those claims when it adopts the files). */
  later: Digest[];
}

const noTemplates: ReadonlyMap<Digest, BlobTemplate> = new Map();

/** A plan that restores nothing and hints nothing (templates not asked for). */
const noTemplatePlan = (): TemplatePlan => ({ restorable: [], overDeltas: [], normalizedDeltas: [], hints: new Map(), templates: new Map(), later: [] });

/**
 * Asks the source which wanted blobs it keeps as templates and picks those
 * the target can restore. Only a normalized blob the target holds makes a
 * blob restorable, and a normalized blob has its file's size: a local
 * target names the sizes of those it holds (LocalCastore.normalizedSizes),
 * so only the wanted blobs of those sizes are asked about before the
 * fetch (a cold deploy asks none; its 20,000 ids were 1.3 MB of JSON up
 * before a byte came down), and those with a group-delta basis
 * (`deltaPairs`): a rebuilt file that also changed a little is restored
 * over its normalized blob fetched as a delta against its basis's, when
 * the target keeps the basis as a template (`local`). With a small-blob
 * sink the target keeps no normalized
 * blob of what it copies (the sink's owner records the claims when it
 * adopts the files, LocalCastore.adoptStoreFiles checks each), so the
 * other blobs' claims are asked once the blobs moved, so that asking
 * takes nothing from the copy; without one, they are asked first, for the
 * template hints.
 */
async function planTemplates(
  source: CastoreReader,
  target: CastoreServices,
  wanted: readonly FileNode[],
  sink: boolean,
  deltaPairs: readonly DeltaPair[],
  local: LocalCastore | undefined,
): Promise<TemplatePlan> {
  const plan: TemplatePlan = { restorable: [], overDeltas: [], normalizedDeltas: [], hints: new Map(), templates: new Map(), later: [] };
  if (wanted.length === 0 || !offersTemplates(source.blobs)) return plan;
  const reader = source.blobs;
  const basisOf = new Map(deltaPairs.map((pair) => [pair.target.digest, pair.basis]));
  const sizes = sink && local ? local.normalizedSizes() : undefined;
  const askFirst = (blob: FileNode) => !sizes || sizes.has(blob.size) || basisOf.has(blob.digest);
  const first = wanted.filter(askFirst);
  if (sizes) plan.later = wanted.filter((blob) => !askFirst(blob)).map((blob) => blob.digest);
  if (first.length > 0) plan.templates = await reader.templates(first.map((blob) => blob.digest));
  if (plan.templates.size === 0) return plan;
  const normalized = [...new Set([...plan.templates.values()].map((template) => template.normalized))];
  const lacking = new Set(await target.blobs.missing(normalized));
  const wantedIds = new Set(wanted.map((blob) => blob.digest));
  const deltaOf = new Set<Digest>();
  for (const blob of wanted) {
    const template = plan.templates.get(blob.digest);
    if (!template) continue;
    if (!lacking.has(template.normalized)) {
      plan.restorable.push(blob);
      continue;
    }
    // Its normalized blob as a delta against the basis's, when the basis is a template here (held or derived on an agent).
    const basis = basisOf.get(blob.digest);
    const basisTemplate = basis && local?.templateOf(basis.digest);
    if (basis && basisTemplate && basisTemplate.normalized !== template.normalized && !wantedIds.has(template.normalized) && local!.hasBlob(basisTemplate.normalized)) {
      plan.overDeltas.push(blob);
      if (!deltaOf.has(template.normalized)) {
        deltaOf.add(template.normalized);
        plan.normalizedDeltas.push({
          target: { type: 'file', digest: template.normalized, size: blob.size, executable: false },
          basis: { type: 'file', digest: basisTemplate.normalized, size: basis.size, executable: false },
        });
      }
    }
    // Copied whole (or after a delta that failed): a target without a sink normalizes it against the same hash parts, to restore the next rebuild's.
    if (sink) continue;
    try {
      plan.hints.set(blob.digest, new HashPartSet(decodeTemplateRecord(template.record, blob.size).hashParts));
    } catch (error) {
      if (!(error instanceof CastoreError)) throw error;
    }
  }
  return plan;
}

/**
 * Stages each of `restorable` as a template, verified by the target
 * (Ingest.putTemplate restores it and checks its id; staged through
 * `ingestTarget`, the target or a wrapper of it) and, for a small-blob
 * sink, hands over the restored bytes (large ones too: they are restored
 * once, not again when the sink's owner reads the target). Returns the ids
 * restored; a template the target refuses is left out, to be copied whole.
 */
async function restoreTemplated(
  target: CastoreServices,
  ingestTarget: Pick<CastoreServices, 'beginIngest'>,
  restorable: readonly FileNode[],
  templates: ReadonlyMap<Digest, BlobTemplate>,
  sink: SmallBlobSink | undefined,
): Promise<Set<Digest>> {
  const restored = new Set<Digest>();
  if (restorable.length === 0) return restored;
  await withIngest(ingestTarget, async (ingest) => {
    for (const blob of restorable) {
      const template = templates.get(blob.digest)!;
      const chunks: Uint8Array[] = [];
      try {
        await ingest.putTemplate(blob.digest, blob.size, template.normalized, template.record, sink ? (chunk) => chunks.push(chunk) : undefined);
        restored.add(blob.digest);
      } catch (error) {
        // A claim the target could not verify: the blob is copied whole instead.
        if (!(error instanceof CastoreError)) throw error;
        continue;
      }
      if (!sink) continue;
      // Held already (nothing restored): read back.
      if (chunks.length === 0 && blob.size > 0) for await (const chunk of target.blobs.read(blob.digest)) chunks.push(chunk);
      await sink.accept(blob.digest, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    }
  });
  return restored;
}

/** The wanted blobs of a closure and where they go (copyWantedBlobs). */
export interface WantedBlobsCopy {
  source: CastoreReader;
  target: CastoreServices;
  /**
   * What stages the blobs (default `target`): a caller that acts on each
   * commit (the relay releases what its agents wait for) passes a wrapper
   * of the target. Restored templates are staged there too.
   */
  ingestTarget?: Pick<CastoreServices, 'beginIngest'>;
  /** Commit every this many bytes (SharedIngest; default 64 MiB). */
  commitEvery?: number;
  /** Blobs of the closure the target lacks (verified sizes, from directories). */
  wanted: readonly FileNode[];
  storePaths: readonly StorePathInfo[];
  /** Knows every directory below `storePaths`. */
  readDirectory: (id: Digest) => readonly Entry[];
  /** Whether to ask the source for templates (restores, hints); default true. */
  templates?: boolean;
  /** Previous versions (findDeltaBases) and the store holding them: only with a source offering bulk reads. */
  deltas?: { basis: DeltaBasisStore; pairs: readonly DeltaPair[] };
  /** The target when it is a LocalCastore (read synchronously: its templates, the sizes of its normalized blobs). */
  local?: LocalCastore;
  smallBlobs?: SmallBlobSink;
  parallel: number;
  streamMinBytes?: number;
  /** Bytes and objects to copy, once planned, and again for the claims the target refused (copied whole after all). */
  onPlanned?(bytes: number, objects: number): void;
  onBytes(bytes: number): void;
  onObjects(count: number): void;
}

/** What copyWantedBlobs moved (see CopyReport for each field). */
export type WantedBlobsReport = Pick<CopyReport, 'restoredBlobs' | 'templates' | 'copiedBlobs' | 'copiedBytes' | 'deltaBlobs' | 'deltaGroupBytes' | 'normalizedDeltaBlobs' | 'normalizedDeltaGroupBytes'>;

/**
 * Brings `wanted` into the target as cheaply as the source allows:
 * restored from templates over normalized blobs the target holds, as group
 * deltas against previous versions (`deltas`), and the normalized blobs of
 * rebuilt files that also changed as deltas against their basis's; the
 * rest whole (one stream, batches, segments). Every blob is verified
 * before it is staged (restored templates by the target's ingest); a
 * refused claim or a declined delta is fetched whole. The blob phase of
 * copyClosure, and of a relay's upstream copy (relay/closure-copy.ts),
 * whose basis is the previous closures its cache holds. Commits what
 * arrived even when it fails (then throws).
 */
export async function copyWantedBlobs(copy: WantedBlobsCopy): Promise<WantedBlobsReport> {
  const { source, target, wanted, storePaths, readDirectory, local } = copy;
  const bulk = offersBulk(source) ? source.bulk : undefined;
  const ingestTarget = copy.ingestTarget ?? target;
  const deltaPairs = copy.deltas?.pairs ?? [];
  const plan = copy.templates === false ? noTemplatePlan() : await planTemplates(source, target, wanted, copy.smallBlobs !== undefined, deltaPairs, local);
  const notCopied = new Set([...plan.restorable, ...plan.overDeltas].map((blob) => blob.digest));
  let toCopy = notCopied.size > 0 ? wanted.filter((blob) => !notCopied.has(blob.digest)) : wanted;
  let copiedBytes = [...toCopy, ...plan.normalizedDeltas.map((pair) => pair.target)].reduce((sum, blob) => sum + blob.size, 0);
  copy.onPlanned?.(copiedBytes, toCopy.length + plan.normalizedDeltas.length);
  const copyBlobs = async (list: readonly FileNode[], normalized: readonly DeltaPair[] = []): Promise<BulkCopyOutcome> => {
    if (list.length === 0 && normalized.length === 0) return { deltaBlobs: 0, deltaGroupBytes: 0, normalized: new Set(), normalizedGroupBytes: 0 };
    const listed = new Set(list.map((blob) => blob.digest));
    const job: BulkBlobJob = {
      blobs: list,
      storePaths,
      readDirectory,
      ingest: new SharedIngest(ingestTarget, copy.commitEvery, plan.hints),
      ...(copy.smallBlobs ? { smallBlobs: (id: Digest, bytes: Uint8Array) => copy.smallBlobs!.accept(id, bytes) } : {}),
      ...(copy.deltas && bulk ? { deltas: { basis: copy.deltas.basis, pairs: deltaPairs.filter((pair) => listed.has(pair.target.digest)), normalized } } : {}),
      parallel: copy.parallel,
      ...(copy.streamMinBytes !== undefined ? { streamMinBytes: copy.streamMinBytes } : {}),
      onBytes: copy.onBytes,
      onObjects: copy.onObjects,
    };
    try {
      let outcome: BulkCopyOutcome = { deltaBlobs: 0, deltaGroupBytes: 0, normalized: new Set(), normalizedGroupBytes: 0 };
      if (bulk) outcome = await bulk.copyBlobs(job);
      else await copyBlobsByService(source, job);
      job.ingest.finish();
      return outcome;
    } catch (error) {
      // What arrived is verified: keep it for the next attempt.
      try {
        job.ingest.finish();
      } catch {
        job.ingest.abort();
      }
      throw error;
    }
  };
  // Restoring is CPU, the copy mostly waiting for the wire: side by side.
  // Both settle before a failure is thrown: the caller's sink is not cleaned up under a restore still writing to it.
  const [restoring, copying] = await Promise.allSettled([restoreTemplated(target, ingestTarget, plan.restorable, plan.templates, copy.smallBlobs), copyBlobs(toCopy, plan.normalizedDeltas)]);
  if (restoring.status === 'rejected') throw restoring.reason;
  if (copying.status === 'rejected') throw copying.reason;
  const restored = restoring.value;
  const outcome = copying.value;
  // Rebuilt files over the normalized blobs that came as deltas (committed now): restored and verified like the others.
  const overDeltas = plan.overDeltas.filter((blob) => outcome.normalized.has(plan.templates.get(blob.digest)!.normalized));
  for (const id of await restoreTemplated(target, ingestTarget, overDeltas, plan.templates, copy.smallBlobs)) restored.add(id);
  // Claims the target refused, and files whose normalized blob did not come: copied after all.
  const refused = [...plan.restorable, ...plan.overDeltas].filter((blob) => !restored.has(blob.digest));
  if (refused.length > 0) {
    const refusedBytes = refused.reduce((sum, blob) => sum + blob.size, 0);
    copiedBytes += refusedBytes;
    copy.onPlanned?.(refusedBytes, refused.length);
    const more = await copyBlobs(refused);
    outcome.deltaBlobs += more.deltaBlobs;
    outcome.deltaGroupBytes += more.deltaGroupBytes;
    toCopy = [...toCopy, ...refused];
  }
  // Asked now, not awaited: the sink's owner needs them after the deployment (a failure only leaves those files untemplated).
  const later = plan.later.length > 0 && offersTemplates(source.blobs) ? source.blobs.templates(plan.later) : Promise.resolve(noTemplates);
  const templates: Promise<ReadonlyMap<Digest, BlobTemplate>> = later.then(
    (claims) => new Map([...plan.templates, ...claims]),
    () => plan.templates,
  );
  return {
    restoredBlobs: restored.size,
    templates,
    copiedBlobs: toCopy.length,
    copiedBytes,
    deltaBlobs: outcome.deltaBlobs,
    deltaGroupBytes: outcome.deltaGroupBytes,
    normalizedDeltaBlobs: outcome.normalized.size,
    normalizedDeltaGroupBytes: outcome.normalizedGroupBytes,
  };
}

/**
 * Copies the closure of `roots` (store paths; the references of their
 * records are followed) from `source` into `target`: what the target
 * lacks of it, verified (see the module comment), the store paths
 * registered last, in one ingest. Refuses a path the source does not
 * answer for, an invalid record, a directory or a blob that is not what
 * its id says (typed CastoreErrors; a remote source's transport faults
 * are retried and its answers refused with DataError); on any failure no
 * store path is registered and the blobs already committed stay for the
 * next attempt.
 */
export async function copyClosure(source: CastoreReader, target: CastoreServices, roots: readonly string[], options: CopyOptions = {}): Promise<CopyReport> {
  const progress: TransferProgress = { phase: 'manifest', bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0 };
  const report = (phase: TransferProgress['phase']) => options.onProgress?.({ ...progress, phase });
  const parallel = options.parallel ?? TRANSFER_PARALLEL;
  const bulk = offersBulk(source) ? source.bulk : undefined;
  // A local target is read synchronously: its directories for the sink, the stream order and delta bases.
  const local = target instanceof LocalCastore ? target : undefined;

  report('manifest');
  const storePaths = await resolveClosure(source, roots);
  const present = await Promise.all(storePaths.map((info) => target.pathInfo.get(info.storePath)));
  const lacking = storePaths.filter((_, index) => !present[index]);

  // The lacking paths' trees, level by level: directories the target has are not copied (nor walked).
  report('directories');
  /** Directories copied from the source, verified and decoded once. */
  const copied = new Map<Digest, Entry[]>();
  const blobs = new Map<Digest, FileNode>();
  const visit = (node: Node, pending: Set<Digest>): void => {
    if (node.type === 'file') blobs.set(node.digest, node);
    else if (node.type === 'directory' && !copied.has(node.digest)) pending.add(node.digest);
  };
  let candidates = new Set<Digest>();
  for (const info of lacking) visit(info.root, candidates);
  while (candidates.size > 0) {
    const ids = [...candidates];
    const inTarget = local ? ids.map((id) => local.hasDirectory(id)) : await Promise.all(ids.map((id) => target.directories.has(id)));
    const level = ids.filter((_, index) => !inTarget[index]);
    const next = new Set<Digest>();
    const take = (id: Digest, bytes: Uint8Array | undefined): void => {
      const entries = verifiedDirectory(id, bytes);
      copied.set(id, entries);
      for (const entry of entries) visit(entry, next);
    };
    if (bulk) {
      const requests: Digest[][] = [];
      for (let index = 0; index < level.length; index += bulk.directoriesPerRequest) requests.push(level.slice(index, index + bulk.directoriesPerRequest));
      await runPool(requests, parallel, async (request) => {
        const encodings = await bulk.getDirectories(request);
        for (const [index, id] of request.entries()) take(id, encodings[index]);
      });
    } else {
      await runPool(level, parallel, async (id) => take(id, await source.directories.getEncoded(id)));
    }
    candidates = new Set([...next].filter((id) => !copied.has(id)));
  }

  // Directories the target holds, for whoever reads whole trees (a non-local target is read ahead).
  const held = new Map<Digest, readonly Entry[]>();
  if (!local && (options.smallBlobs || bulk)) {
    let pending = storePaths.flatMap((info) => (info.root.type === 'directory' ? [info.root.digest] : []));
    while (pending.length > 0) {
      const ids = [...new Set(pending)].filter((id) => !copied.has(id) && !held.has(id));
      const entries = await Promise.all(ids.map((id) => target.directories.get(id)));
      pending = [];
      for (const [index, id] of ids.entries()) {
        const found = entries[index];
        if (!found) throw new CastoreError('DIRECTORY_NOT_FOUND', `directory ${id} is neither in the target nor copied`, { objectId: id });
        held.set(id, found);
        for (const entry of found) if (entry.type === 'directory') pending.push(entry.digest);
      }
    }
  }
  const readDirectory = (id: Digest): readonly Entry[] => {
    const entries = copied.get(id) ?? held.get(id) ?? local?.readDirectory(id);
    if (!entries) throw new CastoreError('DIRECTORY_NOT_FOUND', `directory ${id} is neither in the target nor copied`, { objectId: id });
    return entries;
  };

  if (options.smallBlobs) {
    blobs.clear();
    for (const node of options.smallBlobs.plan(storePaths, readDirectory)) blobs.set(node.digest, node);
  }
  const wanted = (await target.blobs.missing([...blobs.keys()])).map((id) => blobs.get(id)!);
  // Group deltas need a source that offers them (bulk) and a local target to hold their bases.
  const deltaBasis = bulk && local && options.groupDelta !== false ? local : undefined;
  const deltaPairs = deltaBasis ? findDeltaBases(deltaBasis, lacking, readDirectory, new Map(wanted.map((blob) => [blob.digest, blob]))) : [];
  let lastReport = 0;
  const moved = await copyWantedBlobs({
    source,
    target,
    wanted,
    storePaths,
    readDirectory,
    ...(deltaBasis ? { deltas: { basis: deltaBasis, pairs: deltaPairs } } : {}),
    ...(local ? { local } : {}),
    ...(options.smallBlobs ? { smallBlobs: options.smallBlobs } : {}),
    parallel,
    ...(options.streamMinBytes !== undefined ? { streamMinBytes: options.streamMinBytes } : {}),
    onPlanned: (bytes, objects) => {
      progress.bytesTotal += bytes;
      progress.objectsTotal += objects;
      report('blobs');
    },
    onBytes: (bytes) => {
      progress.bytesDone += bytes;
      if (Date.now() - lastReport > 100) {
        lastReport = Date.now();
        report('blobs');
      }
    },
    onObjects: (count) => {
      progress.objectsDone += count;
    },
  });
  report('registering');
  await withIngest(target, (ingest) => {
    for (const entries of copied.values()) ingest.putDirectory(entries);
    for (const info of lacking) ingest.registerStorePath(info);
  });
  report('done');
  return {
    storePaths,
    copiedStorePaths: lacking.length,
    restoredBlobs: moved.restoredBlobs,
    templates: moved.templates,
    copiedBlobs: moved.copiedBlobs,
    copiedBytes: moved.copiedBytes,
    copiedDirectories: copied.size,
    deltaBlobs: moved.deltaBlobs,
    deltaGroupBytes: moved.deltaGroupBytes,
    normalizedDeltaBlobs: moved.normalizedDeltaBlobs,
    normalizedDeltaGroupBytes: moved.normalizedDeltaGroupBytes,
  };
}
