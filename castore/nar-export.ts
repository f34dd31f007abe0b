/**
 * castore -> NAR: walks a root node and re-serialises it. The output is
 * byte-identical to the NAR that was ingested (the directory encoding sorts
 * names by bytes, as NAR does), so its NarHash matches the registry's.
 */
import { encodeNar, type NarEvent } from '../nix/index.js';
import type { Node } from './node.js';
import type { Castore } from './store/castore.js';

async function* narEvents(store: Castore, node: Node, entryPath: string): AsyncGenerator<NarEvent> {
  switch (node.type) {
    case 'symlink':
      yield { type: 'symlink', path: entryPath, target: node.target };
      return;
    case 'file':
      yield { type: 'file', path: entryPath, size: node.size, executable: node.executable, offset: 0 };
      if (node.size > 0) for await (const chunk of store.readBlob(node.digest)) yield { type: 'data', path: entryPath, chunk };
      yield { type: 'file-end', path: entryPath };
      return;
    case 'directory':
      yield { type: 'directory', path: entryPath };
      for (const entry of store.readDirectory(node.digest)) {
        yield* narEvents(store, entry, entryPath === '' ? entry.name : `${entryPath}/${entry.name}`);
      }
      yield { type: 'directory-end', path: entryPath };
      return;
  }
}

/**
 * Streams the NAR of a castore root node. Fails with BLOB_NOT_FOUND or
 * DIRECTORY_NOT_FOUND if an object below the root is missing (after the
 * bytes before it were produced: verify the NarHash when it matters).
 */
export function exportNar(store: Castore, root: Node): AsyncGenerator<Uint8Array> {
  return encodeNar(narEvents(store, root, ''));
}
