/**
 * BlobService: blobs by their BLAKE3 id (snix castore's BlobService,
 * adapted to Ferry's outboards and ingests).
 *
 * A backend is a `BlobReader` (every backend, the remote read-only one
 * included) or a `BlobService` (one that holds blobs: it can list and
 * delete them, and GC and fsck run on it). Writes go through an `Ingest`
 * (castore-services.ts), never blob by blob: a store path is published
 * with all of its objects or not at all.
 *
 * A blob is addressed by the BLAKE3 of its real bytes whatever the backend
 * keeps (chunks, an object in a bucket, or — built — reference-normalized
 * bytes plus a template: docs/castore.md, "Reference-aware blobs"), so how
 * `read` assembles bytes changes, not this interface. `stat` is the real
 * size; `missing` counts a templated blob present when its template and
 * its normalized blob are.
 */
import type { Digest } from '../node.js';

export interface BlobStat {
  size: number;
}

/** A byte range of a blob; both default to the whole blob. */
export interface ByteRange {
  offset?: number;
  length?: number;
}

/** A blob as GC and fsck see it. */
export interface StoredBlob {
  id: Digest;
  size: number;
  /** When the blob was last written or deduplicated against (ms, on the store's clock). */
  lastUsed: number;
  /**
   * For a templated blob (stored as a normalized blob plus a template
   * record, no bytes of its own): the normalized blob's id. It is kept as
   * long as this blob is (`deleteUnused` never deletes it while a template
   * names it).
   */
  template?: Digest;
}

/** Receives one blob's bytes as they arrive; `finish()` returns its id. */
export interface BlobWriter {
  write(chunk: Uint8Array): void;
  /** Refuses (BLOB_CORRUPT) a length or id other than the declared ones; nothing of a refused blob is staged. */
  finish(): Digest;
  /** Drops what was written; safe after a failure at any point. */
  discard(): void;
}

/**
 * Reading blobs. Contract:
 * - `read` yields exactly the bytes of the range asked for, or throws:
 *   BLOB_NOT_FOUND for an id the backend lacks, BLAKE3_BAD_SIZE for a range
 *   outside the blob, BLOB_CORRUPT when the backend finds its copy damaged.
 *   A reader that has bytes from an untrusted place (a remote, a relay)
 *   verifies them before yielding them; a consumer that crosses a trust
 *   boundary verifies again.
 * - `readOutboard` is the BLAKE3 outboard of the whole blob (empty for a
 *   blob of one 16 KiB group or less); BLOB_NOT_FOUND for an unknown id.
 * - A failed read changes nothing the caller can see, except that a local
 *   backend may forget a copy it found damaged (so it is fetched again).
 */
export interface BlobReader {
  stat(id: Digest): Promise<BlobStat | undefined>;
  /** The ids among `ids` that the backend lacks, in their order (repeats kept). */
  missing(ids: readonly Digest[]): Promise<Digest[]>;
  read(id: Digest, range?: ByteRange): AsyncIterable<Uint8Array>;
  readOutboard(id: Digest): Promise<Uint8Array>;
}

/**
 * A backend that holds blobs. Contract, beyond BlobReader's:
 * - `list` yields every committed blob once (in no particular order),
 *   templated ones with their normalized blob; blobs committed or deleted
 *   while it runs may or may not appear.
 * - `deleteUnused` deletes the blobs among `ids` whose last use is before
 *   `usedBefore`, atomically with respect to ingest commits: a blob an
 *   ingest deduplicated against after `usedBefore` stays (or that ingest's
 *   commit fails with GC_CONFLICT, never publishing a dangling reference),
 *   and so does a blob that a template row names as its normalized blob
 *   (templates among `ids` are deleted first, so one call can free both).
 *   Unknown ids are ignored. Returns the blobs it deleted. A failure leaves
 *   some deleted and the rest in place, all of them consistent.
 * - `scrub` re-reads one stored blob and checks it against its id, changing
 *   nothing; it returns what is wrong (naming where the bytes are and, for a
 *   blob with an outboard, the first bad 16 KiB group) or undefined. A
 *   templated blob is restored and hashed, so a damaged normalized blob is
 *   reported for itself and for every template over it.
 */
export interface BlobService extends BlobReader {
  list(): AsyncIterable<StoredBlob>;
  deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<StoredBlob[]>;
  scrub(id: Digest): Promise<string | undefined>;
}
