/**
 * The order in which a fetch asks for blobs in one `blobs.stream`: store
 * paths in the manifest's order (sorted), each walked depth first with
 * entries in their directory's (name) order, each blob at its first
 * occurrence. Files of one package stay together, which is what zstd's
 * window finds matches in, and the order depends only on the closure: a
 * coordinator can compute the stream a cold agent will ask for before it
 * asks (coordinator/api/blob-stream-cache.ts), and the agents of a rollout
 * ask for the same one. A walk driven by directory fetches would not be:
 * parallel replies arrive in any order.
 */
import type { Digest, Entry, FileNode, Node } from '../node.js';
import type { StorePathInfo } from '../store-path-info.js';

/** The non-empty files of `storePaths` in stream order, each blob once; `readDirectory` must know every directory below them. */
export function streamOrder(storePaths: readonly StorePathInfo[], readDirectory: (id: Digest) => readonly Entry[]): FileNode[] {
  const files = new Map<Digest, FileNode>();
  const seenDirectories = new Set<Digest>();
  const visit = (node: Node): void => {
    if (node.type === 'file') {
      // An empty file has no bytes to send (a receiver creates it without asking).
      if (node.size > 0 && !files.has(node.digest)) files.set(node.digest, { type: 'file', digest: node.digest, size: node.size, executable: node.executable });
      return;
    }
    if (node.type !== 'directory' || seenDirectories.has(node.digest)) return;
    seenDirectories.add(node.digest);
    for (const entry of readDirectory(node.digest)) visit(entry);
  };
  for (const info of storePaths) visit(info.root);
  return [...files.values()];
}
