/**
 * PathInfoService: the store path registry — what Nix knows about a store
 * path (NarHash, NarSize, references, deriver, CA, signatures) and the
 * castore root node of its contents (snix castore's PathInfoService).
 */
import type { StorePathInfo } from '../store-path-info.js';

/**
 * Reading the registry. Contract:
 * - A path is registered only once every object its root reaches is in
 *   the same castore (an ingest publishes objects before, or with, the
 *   path); what `get` returns passed StorePathInfoSchema.
 * - `get` answers undefined for an unregistered path, and refuses a record
 *   that no longer validates (written by an older Ferry or by hand) with
 *   STORE_PATH_INVALID naming it: such a record never reaches a caller that
 *   would turn it into a file path.
 * - `getByHashPart` finds `<storeDir>/<hashPart>-<name>` as a binary cache
 *   looks paths up; undefined for none, or for a malformed hash part.
 * - Reads change nothing.
 */
export interface PathInfoReader {
  get(storePath: string): Promise<StorePathInfo | undefined>;
  getByHashPart(hashPart: string, storeDir?: string): Promise<StorePathInfo | undefined>;
}

/**
 * A backend that holds the registry. Contract, beyond PathInfoReader's:
 * - `listPaths` yields every registered store path, sorted, without
 *   validating the records (fsck reads each and reports invalid ones).
 * - `unregister` removes the paths' records (not their objects: GC sweeps
 *   those); unknown paths are ignored. Atomic: all or none.
 */
export interface PathInfoService extends PathInfoReader {
  listPaths(): AsyncIterable<string>;
  unregister(storePaths: readonly string[]): Promise<void>;
}
