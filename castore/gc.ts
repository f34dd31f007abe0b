/**
 * Garbage collection over the service interfaces, for any backend: mark
 * everything reachable from the kept store paths (and any extra root
 * nodes), sweep the rest.
 *
 * Safety against concurrent ingests: objects used (written or deduplicated)
 * after the cutoff are never swept, and the cutoff is no later than the
 * start of the oldest ingest still open (the backend's maintenance knows
 * it). Each service deletes atomically with respect to ingest commits, so
 * an ingest that deduplicated against a blob the sweep removed fails its
 * commit with GC_CONFLICT instead of publishing a dangling reference.
 * Store paths are unregistered first, then directories, then blobs: a
 * reader never sees a registered path whose objects are gone. A templated
 * blob that is kept keeps its normalized blob; dead templates are swept
 * before the blobs they were over (a backend never deletes a normalized
 * blob a template still names).
 *
 * What crashed ingests leave (temp files, unpublished packs, their rows)
 * is removed by every GC (and, on local disk, whenever a castore is
 * opened); `dryRun` counts it.
 */
import type { Digest, Node } from './node.js';
import type { StoredBlob } from './services/blob-service.js';
import { walkClosure, type CastoreServices, type Clock } from './services/castore-services.js';
import type { StorePathInfo } from './store-path-info.js';
import { CastoreError } from './errors.js';

export interface GcOptions {
  /** Keep only these store paths and their closure; others are unregistered. Default: keep every registered path. */
  keepStorePaths?: readonly string[];
  /** Further roots to keep (e.g. nodes an agent's generations point to). */
  extraRoots?: readonly Node[];
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
  /** The clock of the cutoff (default: the store's): objects used at or after its reading are kept. */
  clock?: Clock;
}

export interface GcReport {
  dryRun: boolean;
  keptStorePaths: number;
  removedStorePaths: string[];
  keptBlobs: number;
  removedBlobs: number;
  removedBlobBytes: number;
  keptDirectories: number;
  removedDirectories: number;
  /** Ingests whose process is gone, their rows removed (dry run: to be removed). */
  staleIngestsCleaned: number;
  /** Temp files of crashed ingests removed (dry run: to be removed). */
  staleTempFiles: number;
  /** Unpublished pack files of crashed ingests removed (dry run: to be removed). */
  stalePackFiles: number;
  /** Bytes of those temp and pack files. */
  staleFileBytes: number;
  /** Pack files deleted because no blob lives in them any more. */
  removedPacks: number;
  /** Sparse pack files rewritten with only their live blobs. */
  compactedPacks: number;
}

/** Objects are deleted this many per call (one transaction each on local disk). */
const SWEEP_BATCH = 5000;

/**
 * Collects garbage in `store`. Refuses (STORE_PATH_INVALID) a registry
 * record that no longer validates, before deleting anything: an invalid
 * record could name what is not the castore's (fsck reports it). A failure
 * during the sweep leaves some objects deleted, every store path that is
 * still registered complete.
 */
export async function collectGarbage(store: CastoreServices, options: GcOptions = {}): Promise<GcReport> {
  const dryRun = options.dryRun ?? false;
  const clock = options.clock ?? store.clock;
  const stale = store.maintenance?.cleanStaleWrites(dryRun) ?? { writers: 0, tempFiles: 0, containerFiles: 0, bytes: 0 };
  const cutoff = Math.min(clock(), store.maintenance?.oldestOpenIngest() ?? Infinity);

  const registered = new Map<string, StorePathInfo>();
  for await (const storePath of store.pathInfo.listPaths()) {
    const info = await store.pathInfo.get(storePath);
    if (info) registered.set(storePath, info);
  }
  const keptPaths = new Set(
    options.keepStorePaths
      ? walkClosure(options.keepStorePaths, (storePath) => registered.get(storePath), (storePath) => new CastoreError('STORE_PATH_NOT_FOUND', `store path ${storePath} is not registered`))
      : registered.keys(),
  );
  const removedStorePaths = [...registered.keys()].filter((storePath) => !keptPaths.has(storePath));

  const liveBlobs = new Set<Digest>();
  const liveDirectories = new Set<Digest>();
  const mark = async (node: Node): Promise<void> => {
    if (node.type === 'file') liveBlobs.add(node.digest);
    if (node.type !== 'directory' || liveDirectories.has(node.digest)) return;
    liveDirectories.add(node.digest);
    const entries = await store.directories.get(node.digest); // missing: reported by fsck, nothing to traverse
    for (const entry of entries ?? []) await mark(entry);
  };
  for (const storePath of keptPaths) await mark(registered.get(storePath)!.root);
  for (const root of options.extraRoots ?? []) await mark(root);

  const stored: StoredBlob[] = [];
  for await (const blob of store.blobs.list()) stored.push(blob);
  // A templated blob that stays keeps its normalized blob (which no directory names), nested ones too.
  const kept = (blob: StoredBlob): boolean => liveBlobs.has(blob.id) || blob.lastUsed >= cutoff;
  const byId = new Map(stored.map((blob) => [blob.id, blob]));
  for (const blob of stored) {
    for (let at: StoredBlob | undefined = blob; at?.template !== undefined && kept(at) && !liveBlobs.has(at.template); at = byId.get(at.template)) liveBlobs.add(at.template);
  }
  let keptBlobs = 0;
  const deadBlobs: Digest[] = [];
  let deadBlobBytes = 0;
  // Templates first, so a normalized blob they alone named is freed in the same sweep.
  for (const blob of [...stored.filter((b) => b.template !== undefined), ...stored.filter((b) => b.template === undefined)]) {
    if (kept(blob)) keptBlobs++;
    else {
      deadBlobs.push(blob.id);
      deadBlobBytes += blob.size;
    }
  }
  let keptDirectories = 0;
  const deadDirectories: Digest[] = [];
  for await (const directory of store.directories.list()) {
    if (liveDirectories.has(directory.id) || directory.lastUsed >= cutoff) keptDirectories++;
    else deadDirectories.push(directory.id);
  }

  let removedBlobs = deadBlobs.length;
  let removedBlobBytes = deadBlobBytes;
  let removedDirectories = deadDirectories.length;
  let packs = { removed: 0, compacted: 0 };
  if (!dryRun) {
    await store.pathInfo.unregister(removedStorePaths);
    removedDirectories = 0;
    for (let start = 0; start < deadDirectories.length; start += SWEEP_BATCH) {
      removedDirectories += (await store.directories.deleteUnused(deadDirectories.slice(start, start + SWEEP_BATCH), cutoff)).length;
    }
    removedBlobs = 0;
    removedBlobBytes = 0;
    for (let start = 0; start < deadBlobs.length; start += SWEEP_BATCH) {
      for (const blob of await store.blobs.deleteUnused(deadBlobs.slice(start, start + SWEEP_BATCH), cutoff)) {
        removedBlobs++;
        removedBlobBytes += blob.size;
      }
    }
    keptBlobs += deadBlobs.length - removedBlobs;
    keptDirectories += deadDirectories.length - removedDirectories;
    packs = store.maintenance?.compact() ?? packs;
  }
  return {
    dryRun,
    keptStorePaths: keptPaths.size,
    removedStorePaths,
    keptBlobs,
    removedBlobs,
    removedBlobBytes,
    keptDirectories,
    removedDirectories,
    staleIngestsCleaned: stale.writers,
    staleTempFiles: stale.tempFiles,
    stalePackFiles: stale.containerFiles,
    staleFileBytes: stale.bytes,
    removedPacks: packs.removed,
    compactedPacks: packs.compacted,
  };
}
