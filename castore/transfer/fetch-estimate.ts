/**
 * What moving from one closure to another costs an agent in castore
 * terms, computed from the castore's own objects without moving a byte
 * (`ferry config diff`, docs/castore.md "What a move fetches"):
 *
 * - **new blobs**: the files (by BLAKE3 of their contents) the second
 *   closure has and the first lacks. An agent that holds the first closure
 *   fetches exactly these when nothing else helps: the plain content-
 *   addressed dedup, file by file, across store paths and versions.
 * - **with reference-aware dedup**: of those, a file the castore keeps as a
 *   template over a normalized blob (docs/castore.md, "Reference-aware
 *   blobs") is restored locally, at no transfer, when its normalized blob is
 *   one the agent holds (a file of the first closure, or the normalized blob
 *   of one of its templated files: what an agent that fetched the first
 *   closure from this castore derived); otherwise its normalized blob is
 *   fetched, once for every file over it. Other files are fetched whole.
 *
 * Neither counts group deltas (a changed file fetched as the 16 KiB groups
 * that differ from its previous version: that needs both files' outboards,
 * not a lookup), wire compression, directories' own bytes or framing: the
 * numbers are file bytes, uncompressed, an upper bound of what a deployment
 * moves of them.
 */
import type { Digest, Entry, Node } from '../node.js';

/** The files of a closure: BLAKE3 id → size. */
export type ClosureFiles = Map<Digest, number>;

/** A closure's files and how many distinct directories its trees have. */
export interface ClosureObjects {
  files: ClosureFiles;
  directories: Set<Digest>;
}

/**
 * The files and directories reachable from `roots` (the root nodes of a
 * closure's store paths), each directory read once through `readDirectory`
 * (which throws for one it lacks: a hole is never skipped).
 */
export function closureObjects(roots: readonly Node[], readDirectory: (id: Digest) => readonly Entry[]): ClosureObjects {
  const files: ClosureFiles = new Map();
  const directories = new Set<Digest>();
  const pending: Node[] = [...roots];
  while (pending.length > 0) {
    const node = pending.pop()!;
    if (node.type === 'file') files.set(node.digest, node.size);
    else if (node.type === 'directory' && !directories.has(node.digest)) {
      directories.add(node.digest);
      pending.push(...readDirectory(node.digest));
    }
  }
  return { files, directories };
}

export interface FetchEstimate {
  /** Files of the second closure the first lacks, and their bytes. */
  newBlobs: number;
  newBytes: number;
  /** Directories of the second closure the first lacks (their bytes are not counted). */
  newDirectories: number;
  /** With reference-aware dedup (see the module comment): */
  withTemplates: {
    /** new files restored from a normalized blob the agent holds (no transfer), */
    restoredBlobs: number;
    /** normalized blobs fetched (each once) for the other templated new files, */
    normalizedBlobs: number;
    /** and the bytes fetched: those normalized blobs plus the new files kept whole. */
    bytes: number;
  };
}

/**
 * What an agent holding closure `from` fetches for closure `to` (see the
 * module comment). `templateOf` answers a file's normalized blob when the
 * castore keeps it as a template, undefined otherwise; it is asked about
 * every file of `from` and every new file of `to`, once each.
 */
export function estimateFetch(from: ClosureObjects, to: ClosureObjects, templateOf: (id: Digest) => Digest | undefined): FetchEstimate {
  let newBlobs = 0;
  let newBytes = 0;
  const fresh: [Digest, number][] = [];
  for (const [id, size] of to.files) {
    if (from.files.has(id)) continue;
    newBlobs++;
    newBytes += size;
    fresh.push([id, size]);
  }
  let newDirectories = 0;
  for (const id of to.directories) if (!from.directories.has(id)) newDirectories++;

  // Normalized blobs the agent holds: its files themselves, and those of its templated files.
  const held = new Set<Digest>(from.files.keys());
  for (const id of from.files.keys()) {
    const normalized = templateOf(id);
    if (normalized) held.add(normalized);
  }
  let restoredBlobs = 0;
  let normalizedBlobs = 0;
  let bytes = 0;
  for (const [id, size] of fresh) {
    const normalized = templateOf(id);
    if (!normalized) {
      bytes += size;
    } else if (held.has(normalized)) {
      restoredBlobs++;
    } else {
      // Fetched once (a normalized blob has its file's size); the next file over it is restored.
      normalizedBlobs++;
      bytes += size;
      held.add(normalized);
    }
  }
  return { newBlobs, newBytes, newDirectories, withTemplates: { restoredBlobs, normalizedBlobs, bytes } };
}
