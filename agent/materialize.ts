/**
 * Materializing store paths from the local castore into the store
 * directory, as Nix lays them out: files read-only (0444, or 0555 when
 * executable), directories 0555, every mtime 1. Each path is written under
 * a temp name in the same directory and renamed into place, so a store
 * path is either absent or complete — a crash leaves only a temp tree,
 * which `removeStaleTemps` deletes at the next start.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, symlinkSync, utimesSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Castore, Node, StorePathInfo } from '../castore/index.js';
import { storePathBaseName } from '../nix/index.js';

const TEMP_PREFIX = '.ferry-tmp-';

async function writeNode(store: Castore, node: Node, target: string): Promise<void> {
  switch (node.type) {
    case 'symlink':
      symlinkSync(node.target, target);
      lutimesSync(target, 1, 1);
      return;
    case 'file': {
      const fd = openSync(target, 'wx', 0o644);
      try {
        if (node.size > 0) {
          for await (const chunk of store.readBlob(node.digest)) {
            for (let offset = 0; offset < chunk.length; ) offset += writeSync(fd, chunk, offset, chunk.length - offset);
          }
        }
      } finally {
        closeSync(fd);
      }
      chmodSync(target, node.executable ? 0o555 : 0o444);
      utimesSync(target, 1, 1);
      return;
    }
    case 'directory':
      mkdirSync(target, { mode: 0o755 });
      for (const entry of store.readDirectory(node.digest)) await writeNode(store, entry, path.join(target, entry.name));
      chmodSync(target, 0o555);
      utimesSync(target, 1, 1);
      return;
  }
}

/** Where a store path lives under `storeDir` (which may differ from /nix/store in tests). */
export function storePathLocation(storeDir: string, storePath: string): string {
  return path.join(storeDir, storePathBaseName(storePath));
}

/**
 * Writes `info`'s tree to `storeDir` unless it is already there. Refuses
 * nothing silently: a missing castore object throws (BLOB_NOT_FOUND…) and
 * leaves only the temp tree. Returns whether it wrote anything.
 */
export async function materializeStorePath(store: Castore, info: StorePathInfo, storeDir: string): Promise<boolean> {
  const final = storePathLocation(storeDir, info.storePath);
  if (existsSync(final)) return false;
  mkdirSync(storeDir, { recursive: true });
  const temp = path.join(storeDir, `${TEMP_PREFIX}${storePathBaseName(info.storePath)}-${randomBytes(4).toString('hex')}`);
  try {
    await writeNode(store, info.root, temp);
    // The rename publishes the path: make the tree durable first, then the directory entry.
    const dirFd = openSync(storeDir, 'r');
    try {
      renameSync(temp, final);
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch (error) {
    removeTree(temp);
    throw error;
  }
  return true;
}

/** Deletes a tree Ferry made read-only (directories need write permission to be emptied). */
export function removeTree(target: string): void {
  let stat;
  try {
    stat = lstatSync(target);
  } catch {
    return;
  }
  if (stat.isDirectory()) {
    chmodSync(target, 0o755);
    for (const entry of readdirSync(target)) removeTree(path.join(target, entry));
  }
  rmSync(target, { recursive: true, force: true });
}

/** Removes temp trees a crash left in the store directory. */
export function removeStaleTemps(storeDir: string): number {
  if (!existsSync(storeDir)) return 0;
  const stale = readdirSync(storeDir).filter((entry) => entry.startsWith(TEMP_PREFIX));
  for (const entry of stale) removeTree(path.join(storeDir, entry));
  return stale.length;
}
