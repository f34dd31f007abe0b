/**
 * An agent keeps each byte of a closure once: after a deployment its
 * castore adopts the materialized store files (LocalCastore.adoptStoreFiles)
 * and drops its own copy, so the disk holds the closure in the store
 * directory and, in the castore, only directories, the registry and the
 * outboards of large files — not the files a second time. The castore
 * still knows every blob the agent has (an upgrade fetches only what
 * changed) and reads adopted ones from the store, verified.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { BlobTemplate, LocalCastore, Digest, Node, StorePathInfo } from '../castore/index.js';
import { storePathLocation } from '../nix/store-path.js';

/**
 * Adopts every file of `storePaths` that is materialized in `storeDir`
 * (paths not there are skipped), recording the blobs the castore never
 * stored (the materializer wrote them from verified bytes: the fetch hands
 * batched blobs to it only). Idempotent; a blob in several of them ends up
 * read from one. `templates` (what the fetch was told of its blobs) are
 * kept for the files they verify against, so that the next rebuild is
 * restored from these files. Returns what LocalCastore.adoptStoreFiles reports.
 */
export function adoptMaterializedFiles(
  store: LocalCastore,
  storeDir: string,
  storePaths: readonly StorePathInfo[],
  templates?: ReadonlyMap<Digest, BlobTemplate>,
): { adopted: number; releasedBytes: number } {
  function* filesOf(node: Node, location: string): Generator<{ id: Digest; size: number; file: string }> {
    if (node.type === 'file') yield { id: node.digest, size: node.size, file: location };
    else if (node.type === 'directory') for (const entry of store.readDirectory(node.digest)) yield* filesOf(entry, path.join(location, entry.name));
  }
  function* materializedFiles(): Generator<{ id: Digest; size: number; file: string }> {
    for (const info of storePaths) {
      const location = storePathLocation(storeDir, info.storePath);
      if (existsSync(location)) yield* filesOf(info.root, location);
    }
  }
  return store.adoptStoreFiles(materializedFiles(), { recordMissing: true, ...(templates ? { templates } : {}) });
}
