/**
 * DirectoryService: directory objects by the BLAKE3 of their canonical
 * encoding (docs/castore.md; snix castore's DirectoryService).
 */
import type { Digest, Entry } from '../node.js';

/** A directory as GC sees it. */
export interface StoredDirectory {
  id: Digest;
  /** When it was last written (ms, on the store's clock). */
  lastUsed: number;
}

/**
 * Reading directories. Contract:
 * - What `get` returns is valid: its encoding hashes to `id` and decodes
 *   strictly (sorted, unique, valid names). A backend that holds bytes from
 *   an untrusted place verifies them first; a stored object that fails is
 *   refused with DIRECTORY_NOT_CANONICAL naming it, never returned.
 * - `get` answers undefined for an id the backend lacks; `getEncoded` the
 *   canonical bytes (what `get` decodes).
 * - Reads change nothing.
 */
export interface DirectoryReader {
  has(id: Digest): Promise<boolean>;
  get(id: Digest): Promise<readonly Entry[] | undefined>;
  getEncoded(id: Digest): Promise<Uint8Array | undefined>;
}

/**
 * A backend that holds directories. Contract, beyond DirectoryReader's:
 * - `list` yields every committed directory once; `deleteUnused` deletes
 *   those among `ids` last used before `usedBefore`, atomically with respect
 *   to ingest commits (one that re-puts a directory keeps it). Unknown ids
 *   are ignored; returns the ids deleted. Objects are never half deleted.
 */
export interface DirectoryService extends DirectoryReader {
  list(): AsyncIterable<StoredDirectory>;
  deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<Digest[]>;
}
