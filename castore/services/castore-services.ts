/**
 * A castore as three services — blobs, directories, the store path
 * registry — plus the ingest that writes to them together. Code that works
 * on any backend (GC, fsck, the verified copy, the conformance suite) takes
 * these interfaces; backends are chosen by address (open-castore.ts).
 *
 * Unlike snix, whose services each accept writes on their own, Ferry
 * writes through an `Ingest` spanning the three: one ingest is one pack
 * file and one transaction on local disk (bench/castore.bench.ts), and its
 * store paths become visible with their objects, never before them.
 */
import type { CastoreError } from '../errors.js';
import type { Digest, DirectoryNode, Entry } from '../node.js';
import type { HashPartSet } from '../references/index.js';
import type { StorePathInfo } from '../store-path-info.js';
import type { BlobReader, BlobService, BlobWriter } from './blob-service.js';
import type { DirectoryReader, DirectoryService } from './directory-service.js';
import type { PathInfoReader, PathInfoService } from './path-info-service.js';

/** Milliseconds since the epoch; injectable so tests need not wait for a real clock to move. */
export type Clock = () => number;

/**
 * A batch of writes that becomes visible at once. Contract:
 * - Nothing staged is visible to readers before `commit()`; after it
 *   returns, everything is, the store paths last (no reader sees a path
 *   whose objects are missing). After `abort()`, or a failed commit, or a
 *   crash, nothing of it is visible; a crash's leftovers only take space
 *   until the next GC (or open) removes them.
 * - Blobs are checked as staged: a blob whose bytes do not hash to the id
 *   given, or whose length differs, is refused (BLOB_CORRUPT) and not staged.
 *   Directories are refused when not canonical (DIRECTORY_NOT_CANONICAL).
 * - While the ingest is open, GC keeps whatever it may reference (what it
 *   staged, and stored objects it deduplicated against); if GC swept one
 *   anyway, `commit()` fails with GC_CONFLICT and publishes nothing.
 * - `commit()` is synchronous: the coordinator publishes a push inside the
 *   transaction of its audit event. A backend whose writes are slow stages
 *   bytes where they will live while they arrive, and only publishes here.
 * - Staging after commit or abort is refused (INGEST_ABORTED); `abort()` is
 *   safe to call more than once, and after a commit does nothing.
 */
export interface Ingest {
  readonly id: string;
  /**
   * A writer for a blob of `expectedSize` bytes. `verifiedOutboard`: the
   * caller already checked every byte it will write against `expectedId`
   * and this outboard, so a large blob is not hashed a second time.
   */
  blobWriter(expectedSize: number, expectedId?: Digest, verifiedOutboard?: Uint8Array): BlobWriter;
  /** Stages a blob held in memory; returns its id. */
  putBlobBytes(bytes: Uint8Array, expectedId?: Digest): Promise<Digest>;
  /**
   * A reference-aware writer for one regular file of a store path whose
   * own and references' hash parts are `hashParts` (template-writer.ts):
   * `finish()` returns the file's real id X, as `blobWriter` would, and
   * refuses (BLOB_CORRUPT) another length. A file holding one of them is
   * stored as its normalized blob N plus a template row X → (N, record);
   * any other file as an ordinary blob. Reads of X yield the real bytes.
   */
  templateWriter(expectedSize: number, hashParts: HashPartSet, expectedId?: Digest): BlobWriter;
  /**
   * Blobs this ingest will be handed whole (a copy from a source that keeps
   * them as templates) with the hash parts to normalize them against:
   * `blobWriter`/`putBlobBytes` with one of these ids as `expectedId` then
   * write through `templateWriter`, so the store keeps the normalized blob
   * for the next rebuild. A hint changes only how a blob is kept, never
   * whether its bytes are accepted (still checked against its id).
   */
  expectTemplates(hints: ReadonlyMap<Digest, HashPartSet>): void;
  /**
   * Stages blob `id` of `size` bytes as a template over normalized blob
   * `normalized` with `record` (template-record.ts), from a source the
   * store does not trust: verified first by restoring N and hashing.
   * Refuses a record that does not decode (REFERENCES_INVALID), an N that
   * neither the store nor this ingest holds (BLOB_NOT_FOUND), a size other
   * than N's and a restore that is not `id` (BLOB_CORRUPT); a refused
   * template stages nothing. A
   * blob the store already holds is only kept alive, as `blobWriter` does.
   * `onRestored` sees the restored bytes as they are hashed (a caller that
   * needs them too need not read them back); they are the blob's only once
   * the promise resolves.
   */
  putTemplate(id: Digest, size: number, normalized: Digest, record: Uint8Array, onRestored?: (chunk: Uint8Array) => void): Promise<void>;
  /** Stages a directory; returns the node that points to it. */
  putDirectory(entries: readonly Entry[]): DirectoryNode;
  /** Stages a store path record (validated now), published with the objects. */
  registerStorePath(info: StorePathInfo): void;
  commit(): void;
  abort(): void;
}

/** What every backend offers: reads. The remote data client is one of these. */
export interface CastoreReader {
  readonly blobs: BlobReader;
  readonly directories: DirectoryReader;
  readonly pathInfo: PathInfoReader;
  close(): void;
}

/** What crashed writers left behind (a backend's own notion of files, rows or uploads). */
export interface StaleWrites {
  /** Writers whose process is gone. */
  writers: number;
  /** Their unfinished blob files (or uploads), */
  tempFiles: number;
  /** their unpublished containers of small blobs (pack files), */
  containerFiles: number;
  /** and the bytes of both. */
  bytes: number;
}

/** Housekeeping a backend does around GC's sweep; absent for a backend with nothing to keep. */
export interface StoreMaintenance {
  /** The start of the oldest ingest still open (any process), on the store's clock; GC's cutoff is no later. */
  oldestOpenIngest(): number | undefined;
  /** Removes (or with `dryRun`, only counts) what crashed writers left. */
  cleanStaleWrites(dryRun: boolean): StaleWrites;
  /** After a sweep: reclaims the space of deleted objects (packs no blob lives in, sparse ones). */
  compact(): { removed: number; compacted: number };
}

/** A backend that holds objects and accepts writes. */
export interface CastoreServices extends CastoreReader {
  readonly blobs: BlobService;
  readonly directories: DirectoryService;
  readonly pathInfo: PathInfoService;
  /** The clock `lastUsed` stamps are taken from. */
  readonly clock: Clock;
  readonly maintenance?: StoreMaintenance;
  beginIngest(): Ingest;
}

/**
 * Runs `work` in a new ingest and commits it when `work` resolves; aborts
 * it (and rethrows) when `work` or the commit fails. `publish`, when given,
 * is handed the commit instead of it being called (the coordinator commits
 * inside its audit event's transaction).
 */
export async function withIngest<T>(
  store: Pick<CastoreServices, 'beginIngest'>,
  work: (ingest: Ingest) => Promise<T> | T,
  publish?: (commit: () => void, result: T) => void,
): Promise<T> {
  const ingest = store.beginIngest();
  try {
    const result = await work(ingest);
    if (publish) publish(() => ingest.commit(), result);
    else ingest.commit();
    return result;
  } catch (error) {
    ingest.abort();
    throw error;
  }
}

/**
 * The closure of `roots` over the references `lookup` answers, sorted.
 * Refuses (`missing`, STORE_PATH_NOT_FOUND) a path or reference `lookup`
 * does not know: a closure with holes is never returned.
 */
export function walkClosure(roots: readonly string[], lookup: (storePath: string) => Pick<StorePathInfo, 'references'> | undefined, missing: (storePath: string) => CastoreError): string[] {
  const seen = new Set<string>();
  const pending = [...roots];
  while (pending.length > 0) {
    const next = pending.pop()!;
    if (seen.has(next)) continue;
    const info = lookup(next);
    if (!info) throw missing(next);
    seen.add(next);
    for (const reference of info.references) if (!seen.has(reference)) pending.push(reference);
  }
  return [...seen].sort();
}
