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
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Digest, Node } from '../node.js';
import { blobDataPath, tempDir } from './blob-files.js';
import { packPath, packsDir, PackWriter } from './pack-files.js';
import type { Castore } from './castore.js';
import { processAlive } from './process-alive.js';

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
  /** Pack files deleted because no blob lives in them any more. */
  removedPacks: number;
  /** Sparse pack files rewritten with only their live blobs. */
  compactedPacks: number;
}

/** Removes the staging leftovers of ingests whose process is gone (crashed or killed). */
export function cleanStaleIngests(store: Castore): number {
  const db = store.db;
  const ingests = db.prepare<[], { id: string; pid: number }>('SELECT id, pid FROM ingests').all();
  const live = new Set<string>();
  let cleaned = 0;
  for (const ingest of ingests) {
    if (ingest.pid !== process.pid && !processAlive(ingest.pid)) {
      db.prepare('DELETE FROM ingests WHERE id = ?').run(ingest.id);
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
  // Pack files without a row: written by an ingest that never committed.
  const published = new Set(db.prepare<[], { id: string }>('SELECT id FROM packs').all().map((row) => row.id));
  let packFiles: string[] = [];
  try {
    packFiles = readdirSync(packsDir(store.dataDir));
  } catch {
    // no packs yet
  }
  for (const name of packFiles) {
    const id = name.replace(/\.pack$/, '');
    if (!published.has(id) && !live.has(id)) rmSync(path.join(packsDir(store.dataDir), name), { force: true });
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
    const blobs = db.prepare<[number], { id: Digest; size: number; pack: string | null; storeFile: string | null }>(
      'SELECT id, size, pack, store_file AS storeFile FROM blobs WHERE last_used < ?',
    );
    const deleteBlob = db.prepare('DELETE FROM blobs WHERE id = ?');
    for (const blob of blobs.all(cutoff)) {
      if (liveBlobs.has(blob.id)) continue;
      removedBlobs++;
      removedBlobBytes += blob.size;
      if (dryRun) continue;
      deleteBlob.run(blob.id);
      // An adopted blob's store file belongs to its owner: only the row goes.
      if (blob.pack === null && blob.storeFile === null) rmSync(blobDataPath(store.dataDir, blob.id), { force: true });
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
  const packs = dryRun ? { removed: 0, compacted: 0 } : maintainPacks(store);

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
    removedPacks: packs.removed,
    compactedPacks: packs.compacted,
  };
}

/** A pack whose live bytes fall below this share of its size is rewritten. */
const COMPACT_BELOW = 0.5;

/**
 * Deletes packs no blob lives in any more and rewrites sparse ones: live
 * blobs are copied to a new pack (fsynced), their rows moved to it in one
 * transaction, then the old file is deleted.
 */
export function maintainPacks(store: Castore): { removed: number; compacted: number } {
  const db = store.db;
  const usage = db
    .prepare<[], { id: string; size: number; live: number }>(
      'SELECT p.id, p.size, COALESCE(SUM(b.size), 0) AS live FROM packs p LEFT JOIN blobs b ON b.pack = p.id GROUP BY p.id',
    )
    .all();
  let removed = 0;
  let compacted = 0;
  for (const pack of usage) {
    if (pack.live > 0 && pack.live >= pack.size * COMPACT_BELOW) continue;
    if (pack.live > 0) {
      const rows = db.prepare<[string], { id: Digest; size: number; offset: number }>('SELECT id, size, pack_offset AS offset FROM blobs WHERE pack = ? ORDER BY pack_offset').all(pack.id);
      const writer = new PackWriter(store.dataDir, `gc-${randomBytes(8).toString('hex')}`);
      const moved: { id: Digest; offset: number }[] = [];
      // A few MiB at a time: a pack can hold a whole closure.
      for (let start = 0; start < rows.length; start += 256) {
        const chunk = rows.slice(start, start + 256);
        const offsets = writer.append(chunk.map((row) => store.packs.read(pack.id, row.offset, row.size, row.id)));
        chunk.forEach((row, index) => moved.push({ id: row.id, offset: offsets[index]! }));
      }
      writer.finish();
      db.transaction(() => {
        db.prepare('INSERT INTO packs (id, size, created_at) VALUES (?, ?, ?)').run(writer.packId, writer.size, Date.now());
        const move = db.prepare('UPDATE blobs SET pack = ?, pack_offset = ? WHERE id = ? AND pack = ?');
        for (const row of moved) move.run(writer.packId, row.offset, row.id, pack.id);
        db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
      }).immediate();
      compacted++;
    } else {
      db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
      removed++;
    }
    store.packs.forget(pack.id);
    rmSync(packPath(store.dataDir, pack.id), { force: true });
  }
  return { removed, compacted };
}
