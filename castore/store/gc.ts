/**
 * Garbage collection: mark everything reachable from the kept store paths
 * (and any extra root nodes), sweep the rest.
 *
 * Safety against concurrent ingests: objects used (written or deduplicated)
 * after the cutoff are never swept, and the cutoff is no later than the
 * start of the oldest ingest still running. The sweep runs in one SQLite
 * write transaction, like every ingest commit, so a commit and a sweep never
 * interleave; an ingest that deduplicated against a blob the sweep removed
 * fails its commit with GC_CONFLICT instead of publishing a dangling
 * reference.
 */
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Digest, Node } from '../node.js';
import { blobDataPath, tempDir } from './blob-files.js';
import type { Castore } from './castore.js';

export interface GcOptions {
  /** Keep only these store paths and their closure; others are unregistered. Default: keep every registered path. */
  keepStorePaths?: readonly string[];
  /** Further roots to keep (e.g. nodes an agent's generations point to). */
  extraRoots?: readonly Node[];
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
}

export interface GcReport {
  dryRun: boolean;
  keptStorePaths: number;
  removedStorePaths: string[];
  keptBlobs: number;
  removedBlobs: number;
  removedBlobBytes: number;
  keptDirectories: number;
  removedDirectories: number;
  staleIngestsCleaned: number;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the staging leftovers of ingests whose process is gone (crashed or killed). */
export function cleanStaleIngests(store: Castore): number {
  const db = store.db;
  const ingests = db.prepare<[], { id: string; pid: number }>('SELECT id, pid FROM ingests').all();
  const live = new Set<string>();
  let cleaned = 0;
  for (const ingest of ingests) {
    if (ingest.pid !== process.pid && !processAlive(ingest.pid)) {
      db.transaction(() => {
        db.prepare('DELETE FROM blob_data WHERE row IN (SELECT data_row FROM staged_blobs WHERE ingest = ?)').run(ingest.id);
        db.prepare('DELETE FROM staged_blobs WHERE ingest = ?').run(ingest.id);
        db.prepare('DELETE FROM ingests WHERE id = ?').run(ingest.id);
      })();
      cleaned++;
    } else {
      live.add(ingest.id);
    }
  }
  let names: string[] = [];
  try {
    names = readdirSync(tempDir(store.dataDir));
  } catch {
    // no temp dir yet
  }
  for (const name of names) {
    const owner = name.split('-')[0]!;
    if (!live.has(owner)) rmSync(path.join(tempDir(store.dataDir), name), { force: true });
  }
  return cleaned;
}

export function collectGarbage(store: Castore, options: GcOptions = {}): GcReport {
  const db = store.db;
  const dryRun = options.dryRun ?? false;
  const staleIngestsCleaned = dryRun ? 0 : cleanStaleIngests(store);
  const oldestIngest = db.prepare<[], { started: number | null }>('SELECT MIN(started_at) AS started FROM ingests').get()?.started;
  const cutoff = Math.min(Date.now(), oldestIngest ?? Infinity);

  const registered = store.listStorePaths();
  const keptPaths = new Set(options.keepStorePaths ? store.closure(options.keepStorePaths) : registered.map((info) => info.storePath));
  const removedStorePaths = registered.map((info) => info.storePath).filter((p) => !keptPaths.has(p));

  const liveBlobs = new Set<Digest>();
  const liveDirectories = new Set<Digest>();
  const mark = (node: Node): void => {
    if (node.type === 'file') liveBlobs.add(node.digest);
    if (node.type !== 'directory' || liveDirectories.has(node.digest)) return;
    liveDirectories.add(node.digest);
    if (!store.hasDirectory(node.digest)) return; // reported by fsck, nothing to traverse
    for (const entry of store.readDirectory(node.digest)) mark(entry);
  };
  for (const info of registered) if (keptPaths.has(info.storePath)) mark(info.root);
  for (const root of options.extraRoots ?? []) mark(root);

  let removedBlobs = 0;
  let removedBlobBytes = 0;
  let removedDirectories = 0;
  const sweep = (): void => {
    const blobs = db.prepare<[number], { id: Digest; size: number; dataRow: number | null }>(
      'SELECT id, size, data_row AS dataRow FROM blobs WHERE last_used < ?',
    );
    const deleteBlob = db.prepare('DELETE FROM blobs WHERE id = ?');
    const deleteData = db.prepare('DELETE FROM blob_data WHERE row = ?');
    for (const blob of blobs.all(cutoff)) {
      if (liveBlobs.has(blob.id)) continue;
      removedBlobs++;
      removedBlobBytes += blob.size;
      if (dryRun) continue;
      deleteBlob.run(blob.id);
      if (blob.dataRow !== null) deleteData.run(blob.dataRow);
      else rmSync(blobDataPath(store.dataDir, blob.id), { force: true });
    }
    const directories = db.prepare<[number], { id: Digest }>('SELECT id FROM directories WHERE last_used < ?');
    const deleteDirectory = db.prepare('DELETE FROM directories WHERE id = ?');
    for (const directory of directories.all(cutoff)) {
      if (liveDirectories.has(directory.id)) continue;
      removedDirectories++;
      if (!dryRun) deleteDirectory.run(directory.id);
    }
    if (!dryRun) {
      const unregister = db.prepare('DELETE FROM store_paths WHERE path = ?');
      for (const storePath of removedStorePaths) unregister.run(storePath);
    }
  };
  if (dryRun) sweep();
  else db.transaction(sweep).immediate();

  const count = (table: string): number => db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM ${table}`).get()!.n;
  return {
    dryRun,
    keptStorePaths: keptPaths.size,
    removedStorePaths,
    keptBlobs: dryRun ? count('blobs') - removedBlobs : count('blobs'),
    removedBlobs,
    removedBlobBytes,
    keptDirectories: dryRun ? count('directories') - removedDirectories : count('directories'),
    removedDirectories,
    staleIngestsCleaned,
  };
}
