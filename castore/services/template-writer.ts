/**
 * The reference-aware blob writer every backend's ingest hands out
 * (`Ingest.templateWriter`): a store path's file goes in, its real id X
 * comes out, and what is stored is either the file as it is (no hash part
 * of the path or its references in it) or its normalized blob N plus a
 * template row X → (N, record) (docs/castore.md, "Reference-aware blobs").
 *
 * X and N come from the same bytes in one pass — N's writer takes the
 * normalized ones, X is hashed from the real ones (or, for a large file,
 * from N's tree with the groups that hold a site re-hashed) — so the
 * template row is known to restore to X: the backend stages it as trusted.
 * (A template from elsewhere goes through `putTemplate`, which restores
 * and hashes before it stages.)
 *
 * Files up to BUFFERED_MAX bytes are taken whole (most of a closure): one
 * scan, and a file without a site is staged once, hashed once. Larger ones
 * stream into N's writer (memory: a chunk, 31 bytes of carry, the sites),
 * and X's tree is N's with the groups that hold a site re-hashed
 * (realRoot): each byte is hashed once either way.
 */
import { blake3, GROUP_SIZE, groupChainingValue, groupCount, GroupBuffer, OutboardBuilder, outboardFromGroupCvs, verifyOutboard, type VerifiedOutboard } from '../blake3/index.js';
import { CastoreError } from '../errors.js';
import { digestFromBytes, digestToBytes, type Digest } from '../node.js';
import {
  decodeTemplateRecord,
  encodeTemplateRecord,
  HASH_PART_LENGTH,
  type HashPartSet,
  MAX_TEMPLATE_SITES,
  normalizeReferences,
  ReferenceNormalizer,
  ReferenceRestorer,
  restoreReferencesInPlace,
  restoreTemplateRange,
  templateOf,
  templateWindow,
  type ReferenceSite,
} from '../references/index.js';
import type { BlobWriter } from './blob-service.js';

/** Files up to this size are normalized whole in memory; larger ones stream. */
export const BUFFERED_MAX = 1024 * 1024;

/** A template row to stage: X's size and outboard, its normalized blob N and its encoded record. */
export interface TemplateEntry {
  id: Digest;
  size: number;
  normalized: Digest;
  record: Uint8Array;
  /** X's BLAKE3 outboard (empty for a blob of one 16 KiB group). */
  outboard: Uint8Array;
}

/** What the writer needs of a backend's ingest. */
export interface TemplateStaging {
  /** An ordinary writer (for N, or for a file without a site). */
  blobWriter(expectedSize: number): BlobWriter;
  /** Stages a template row whose restore is known to hash to `entry.id`; N was staged (or deduplicated) by `blobWriter`. */
  stageVerifiedTemplate(entry: TemplateEntry): void;
  /**
   * A blob `blobWriter` just finished (staged, or already held): its
   * outboard, and its bytes by range, synchronously. Asked only for files
   * over BUFFERED_MAX with sites, and only for the groups the sites touch.
   */
  heldBlob(id: Digest): { outboard: Uint8Array; read(offset: number, length: number): Uint8Array };
}

/** X's id and outboard from its real bytes held whole (a blob of one group has no outboard: hashed as a whole input). */
function rootOf(bytes: Uint8Array): { id: Digest; outboard: Uint8Array } {
  if (bytes.length <= GROUP_SIZE) return { id: digestFromBytes(blake3(bytes)), outboard: new Uint8Array(0) };
  const builder = new OutboardBuilder();
  builder.update(bytes);
  const { root, outboard } = builder.finish();
  return { id: digestFromBytes(root), outboard };
}

/**
 * A BlobWriter for one file of a store path whose hash parts (its own and
 * its references') are `hashParts`. `finish()` returns the real id X and
 * refuses (BLOB_CORRUPT) a length other than `expectedSize`; after a
 * failure, or `discard()`, nothing of the file is staged (N may be, as an
 * ordinary blob nothing names: GC sweeps it).
 */
export function templateWriter(staging: TemplateStaging, expectedSize: number, hashParts: HashPartSet, expectedId?: Digest): BlobWriter {
  return expectedSize <= BUFFERED_MAX ? bufferedWriter(staging, expectedSize, hashParts, expectedId) : streamingWriter(staging, expectedSize, hashParts, expectedId);
}

/** Refuses (BLOB_CORRUPT) real bytes that are not the blob the caller expects; checked before anything is staged. */
function checkExpected(id: Digest, expectedId: Digest | undefined): void {
  if (expectedId !== undefined && id !== expectedId) throw new CastoreError('BLOB_CORRUPT', `blob bytes hash to ${id}, not ${expectedId}`, { objectId: expectedId });
}

function lengthError(size: number, expectedSize: number): CastoreError {
  return new CastoreError('BLOB_CORRUPT', `blob has ${size} bytes${size > expectedSize ? ' or more' : ''}, ${expectedSize} were declared`);
}

function stage(staging: TemplateStaging, size: number, normalized: Digest, sites: readonly ReferenceSite[], hashParts: HashPartSet, real: { id: Digest; outboard: Uint8Array }): Digest {
  const record = encodeTemplateRecord(templateOf(sites, hashParts.hashParts));
  staging.stageVerifiedTemplate({ id: real.id, size, normalized, record, outboard: real.outboard });
  return real.id;
}

function bufferedWriter(staging: TemplateStaging, expectedSize: number, hashParts: HashPartSet, expectedId: Digest | undefined): BlobWriter {
  const chunks: Uint8Array[] = [];
  let size = 0;
  return {
    write(chunk) {
      size += chunk.length;
      if (size > expectedSize) throw lengthError(size, expectedSize);
      chunks.push(chunk.slice());
    },
    finish() {
      if (size !== expectedSize) throw lengthError(size, expectedSize);
      const bytes = chunks.length === 1 ? chunks[0]! : new Uint8Array(Buffer.concat(chunks, size));
      chunks.length = 0;
      const real = expectedId === undefined ? undefined : rootOf(bytes);
      if (real) checkExpected(real.id, expectedId);
      const { normalized, refs } = normalizeReferences(bytes, hashParts, { maxSites: MAX_TEMPLATE_SITES });
      const writer = staging.blobWriter(size);
      if (refs.length === 0) {
        writer.write(bytes);
        return writer.finish();
      }
      writer.write(normalized);
      return stage(staging, size, writer.finish(), refs, hashParts, real ?? rootOf(bytes));
    },
    discard() {
      chunks.length = 0;
    },
  };
}

function streamingWriter(staging: TemplateStaging, expectedSize: number, hashParts: HashPartSet, expectedId: Digest | undefined): BlobWriter {
  const normalizer = new ReferenceNormalizer(hashParts, { maxSites: MAX_TEMPLATE_SITES });
  const inner = staging.blobWriter(expectedSize);
  let size = 0;
  return {
    write(chunk) {
      size += chunk.length;
      if (size > expectedSize) throw lengthError(size, expectedSize);
      const out = normalizer.push(chunk);
      if (out.length > 0) inner.write(out);
    },
    finish() {
      if (size !== expectedSize) {
        inner.discard();
        throw lengthError(size, expectedSize);
      }
      const rest = normalizer.end();
      if (rest.length > 0) inner.write(rest);
      const normalized = inner.finish();
      // Nothing was replaced: N is the file itself, and X was hashed once, as N.
      if (normalizer.refs.length === 0) {
        checkExpected(normalized, expectedId);
        return normalized;
      }
      const real = realRoot(staging, normalized, size, normalizer.refs, hashParts);
      // Checked once X is known, i.e. after N was staged: N then stays as an ordinary blob nothing names (GC sweeps it).
      checkExpected(real.id, expectedId);
      return stage(staging, size, normalized, normalizer.refs, hashParts, real);
    },
    discard() {
      inner.discard();
    },
  };
}

/**
 * X's id and outboard from N's: a 16 KiB group without a site has the same
 * bytes, so the same chaining value, in both; only the groups a site
 * touches are read back from N, restored and hashed, and the tree above
 * the groups is rebuilt. So a large file is hashed once however many
 * sites it has (hashing the real bytes too doubled a large file's ingest).
 */
function realRoot(staging: TemplateStaging, normalized: Digest, size: number, sites: readonly ReferenceSite[], hashParts: HashPartSet): { id: Digest; outboard: Uint8Array } {
  const held = staging.heldBlob(normalized);
  const tree = verifyOutboard(digestToBytes(normalized), size, held.outboard, normalized);
  const count = groupCount(size);
  const cvs = new Uint32Array(count * 8);
  for (let group = 0; group < count; group++) cvs.set(tree.groupCv(group)!, group * 8);
  const buffer = new GroupBuffer();
  for (const group of groupsTouched([sites])) {
    const start = group * GROUP_SIZE;
    const length = Math.min(GROUP_SIZE, size - start);
    const window = templateWindow(sites, start, length);
    const restorer = new ReferenceRestorer(window.sites, hashParts, window.length);
    const real = restorer.push(held.read(window.offset, window.length));
    restorer.end();
    cvs.set(groupChainingValue(real.subarray(window.skip, window.skip + length), group, buffer), group * 8);
  }
  const { root, outboard } = outboardFromGroupCvs(cvs, count, buffer);
  return { id: digestFromBytes(root), outboard };
}

/**
 * The template entry for X (`size` bytes) stored as normalized blob
 * `normalized` + `record`, from a place the backend does not trust: the
 * record decoded strictly (REFERENCES_INVALID), N's bytes read by
 * `readNormalized` (which refuses an absent N with BLOB_NOT_FOUND), restored
 * and hashed; refuses (BLOB_CORRUPT, naming X) a size other than N's and
 * bytes that do not restore to X. Nothing is staged here: the caller
 * stages what this returns.
 */
export async function verifyTemplate(
  id: Digest,
  size: number,
  normalized: { id: Digest; size: number },
  record: Uint8Array,
  readNormalized: (offset: number, length: number) => AsyncIterable<Uint8Array>,
  onRestored?: (chunk: Uint8Array) => void,
): Promise<TemplateEntry> {
  if (!Number.isSafeInteger(size) || size < 0) throw new CastoreError('BLOB_CORRUPT', `a template of ${size} bytes cannot be`, { objectId: id });
  // A normalized file has the real file's length.
  if (normalized.size !== size) throw new CastoreError('BLOB_CORRUPT', `a template of ${size} bytes cannot be over ${normalized.id} of ${normalized.size}`, { objectId: id });
  const decoded = decodeTemplateRecord(record, size);
  const builder = new OutboardBuilder();
  try {
    for await (const chunk of restoreTemplateRange(decoded, 0, size, readNormalized)) {
      builder.update(chunk);
      onRestored?.(chunk);
    }
  } catch (error) {
    if (error instanceof CastoreError && error.code === 'REFERENCES_INVALID') {
      throw new CastoreError('BLOB_CORRUPT', `template of ${id} over ${normalized.id} does not restore: ${error.message}`, { objectId: id, cause: error });
    }
    throw error;
  }
  const { root, outboard, size: restoredSize } = builder.finish();
  const restored = digestFromBytes(root);
  if (restoredSize !== size || restored !== id) {
    throw new CastoreError('BLOB_CORRUPT', `template over ${normalized.id} restores to ${restored} (${restoredSize} bytes), not ${id} (${size})`, { objectId: id });
  }
  return { id, size, normalized: normalized.id, record: new Uint8Array(record), outboard };
}

/**
 * A normalized blob's bytes, whole, as a backend hands them to a restore:
 * verified when they were read, by one hash of what was read (the blob's
 * own bytes against its id, or an adopted file they are derived from
 * against the file's id).
 */
export interface RestoreSource {
  /** The normalized blob's bytes, the restore's own: it restores the file into them. */
  bytes: Uint8Array;
  /** The tree of what was read and hashed (its stored outboard, checked against its id), when there is one: */
  tree?: VerifiedOutboard;
  /** and where `bytes` differ from what was read (the sites of the adopted file's template; none for the blob's own bytes). */
  changed: readonly ReferenceSite[];
}

/**
 * verifyTemplate for a normalized blob held whole (`source`): X restored
 * in one piece, and checked against its id with one hash of each byte in
 * all — the source's, when it was read — rather than a second: a 16 KiB
 * group without a site of X's record nor of `source.changed` has the same
 * bytes as what was read, so its chaining value is the source tree's; only
 * the groups with a site are hashed again. Without a tree, X is hashed
 * whole. Refuses what verifyTemplate refuses; stages nothing. Returns the
 * entry to stage and X's bytes.
 */
export function verifyRestored(id: Digest, size: number, normalized: Digest, record: Uint8Array, source: RestoreSource): { entry: TemplateEntry; bytes: Uint8Array } {
  if (!Number.isSafeInteger(size) || size < 0) throw new CastoreError('BLOB_CORRUPT', `a template of ${size} bytes cannot be`, { objectId: id });
  if (source.bytes.length !== size) throw new CastoreError('BLOB_CORRUPT', `a template of ${size} bytes cannot be over ${normalized} of ${source.bytes.length}`, { objectId: id });
  const decoded = decodeTemplateRecord(record, size);
  let bytes: Uint8Array;
  try {
    bytes = restoreReferencesInPlace(source.bytes, decoded.sites, decoded.hashParts);
  } catch (error) {
    if (error instanceof CastoreError && error.code === 'REFERENCES_INVALID') {
      throw new CastoreError('BLOB_CORRUPT', `template of ${id} over ${normalized} does not restore: ${error.message}`, { objectId: id, cause: error });
    }
    throw error;
  }
  let real: { id: Digest; outboard: Uint8Array };
  if (size > GROUP_SIZE && source.tree && source.tree.size === size) {
    const { root, outboard } = treeWithSitesRehashed(source.tree, bytes, [source.changed, decoded.sites]);
    real = { id: digestFromBytes(root), outboard };
  } else if (size <= BUFFERED_MAX) {
    // Hashed whole (natively past 8 KiB); the outboard of a blob this small is computed when asked for.
    real = { id: digestFromBytes(blake3(bytes)), outboard: new Uint8Array(0) };
  } else {
    real = rootOf(bytes);
  }
  if (real.id !== id) throw new CastoreError('BLOB_CORRUPT', `template over ${normalized} restores to ${real.id} (${size} bytes), not ${id}`, { objectId: id });
  return { entry: { id, size, normalized, record: new Uint8Array(record), outboard: real.outboard }, bytes };
}

/**
 * The tree of `bytes`, which are those `tree` is of except in the 16 KiB
 * groups a site of `siteLists` touches (a file and its normalized blob, or
 * a normalized blob and a file restored from it): those groups hashed
 * again, every other chaining value taken from `tree`. `tree` is the
 * caller's, checked against its id; the bytes of its other groups must be
 * known to be its own (hashed against it just now).
 */
export function treeWithSitesRehashed(tree: VerifiedOutboard, bytes: Uint8Array, siteLists: readonly (readonly ReferenceSite[])[]): { root: Uint8Array; outboard: Uint8Array } {
  const size = bytes.length;
  const count = groupCount(size);
  const cvs = new Uint32Array(count * 8);
  for (let group = 0; group < count; group++) cvs.set(tree.groupCv(group)!, group * 8);
  const buffer = new GroupBuffer();
  for (const group of groupsTouched(siteLists)) {
    const start = group * GROUP_SIZE;
    cvs.set(groupChainingValue(bytes.subarray(start, Math.min(start + GROUP_SIZE, size)), group, buffer), group * 8);
  }
  return outboardFromGroupCvs(cvs, count, buffer);
}

/** The 16 KiB groups a site of any of `siteLists` touches. */
function groupsTouched(siteLists: readonly (readonly ReferenceSite[])[]): Set<number> {
  const touched = new Set<number>();
  for (const sites of siteLists) {
    for (const { offset } of sites) {
      touched.add(Math.floor(offset / GROUP_SIZE));
      touched.add(Math.floor((offset + HASH_PART_LENGTH - 1) / GROUP_SIZE));
    }
  }
  return touched;
}
