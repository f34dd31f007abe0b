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
 *
 * What crashed ingests leave (temp files, unpublished packs, their rows)
 * is removed by every GC and, for the files no live ingest owns, whenever
 * a castore is opened (Castore.open); `gc --dry-run` counts it.
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Digest, Node } from '../node.js';
import { blobDataPath, tempDir } from './blob-files.js';
import { packPath, packsDir, PackWriter } from './pack-files.js';
import type { Castore } from './castore.js';
import { sessionsOfThisProcess } from './ingest-session.js';
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
  /** Ingests whose process is gone, their rows removed (dry run: to be removed). */
  staleIngestsCleaned: number;
  /** Temp files of crashed ingests removed (dry run: to be removed). */
  staleTempFiles: number;
  /** Unpublished pack files of crashed ingests removed (dry run: to be removed). */
  stalePackFiles: number;
  /** Bytes of those temp and pack files. */
  staleFileBytes: number;
  /** Pack files deleted because no blob lives in them any more. */
  removedPacks: number;
  /** Sparse pack files rewritten with only their live blobs. */
  compactedPacks: number;
}

/**
 * What crashed ingests left behind: their rows in `ingests`, their temp
 * files (`tmp/<ingest id>-<n>`: large blobs not yet renamed into place) and
 * their unpublished pack files (`packs/<ingest id>.pack` without a `packs`
 * row). Nothing of it is visible to readers; it only takes disk space, and
 * a dead row holds GC's cutoff back.
 */
export interface StaleIngestFiles {
  /** Ingests whose process is gone. */
  ingests: string[];
  /** Files in tmp/ that no live ingest owns. */
  tempFiles: string[];
  /** Pack files no commit published and no live ingest owns. */
  packFiles: string[];
  /** The size of those files. */
  bytes: number;
}

export interface StaleIngestOptions {
  /**
   * Also every unpublished pack file no live ingest owns, not only those of
   * the dead ingests found (default true: what GC does). Start-up cleanup
   * (Castore.open) takes only the dead ingests' own packs.
   */
  orphanPacks?: boolean;
}

/**
 * Whether the ingest in `row` may still be running. One of this process
 * must be one of its open sessions: a process restarted under the same pid
 * (pid 1 in a container) is not the one that crashed.
 */
function ingestMayBeRunning(row: { id: string; pid: number }): boolean {
  return row.pid === process.pid ? sessionsOfThisProcess.has(row.id) : processAlive(row.pid);
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return []; // not created yet
  }
}

function sizeOf(file: string): number {
  try {
    return lstatSync(file).size;
  } catch {
    return 0; // gone meanwhile (committed, aborted, or cleaned by another process)
  }
}

/**
 * Finds what crashed ingests left (see StaleIngestFiles), changing nothing.
 * Safe against ingests starting or ending meanwhile, in this or another
 * process: the directories are listed before the tables are read (in one
 * read transaction), an ingest's row exists before it creates its first
 * file, and its row goes (in the transaction of its commit, or after its
 * abort) only once its files are renamed or deleted — so a file listed
 * here whose owner has no live row is a dead ingest's.
 */
export function findStaleIngestFiles(store: Castore, options: StaleIngestOptions = {}): StaleIngestFiles {
  const tmp = tempDir(store.dataDir);
  const packs = packsDir(store.dataDir);
  const tempNames = listDir(tmp);
  const packNames = listDir(packs);
  const db = store.db;
  const { rows, published } = db.transaction(() => ({
    rows: db.prepare<[], { id: string; pid: number }>('SELECT id, pid FROM ingests').all(),
    published: new Set(db.prepare<[], { id: string }>('SELECT id FROM packs').all().map((row) => row.id)),
  }))();
  const ingests = rows.filter((row) => !ingestMayBeRunning(row)).map((row) => row.id);
  const dead = new Set(ingests);
  const live = new Set(rows.filter((row) => !dead.has(row.id)).map((row) => row.id));
  const tempFiles = tempNames.filter((name) => !live.has(name.split('-')[0]!)).map((name) => path.join(tmp, name));
  const packFiles = packNames
    .filter((name) => name.endsWith('.pack'))
    .map((name) => name.slice(0, -'.pack'.length))
    .filter((id) => !published.has(id) && !live.has(id) && (options.orphanPacks !== false || dead.has(id)))
    .map((id) => packPath(store.dataDir, id));
  const bytes = [...tempFiles, ...packFiles].reduce((sum, file) => sum + sizeOf(file), 0);
  return { ingests, tempFiles, packFiles, bytes };
}

/**
 * Removes what crashed ingests left (findStaleIngestFiles): their files,
 * then their rows. Returns what it found. A file already gone is no error;
 * on any other failure it throws with some of it removed, and the rest
 * stays for the next run (nothing of it is ever visible to readers).
 */
export function cleanStaleIngests(store: Castore, options: StaleIngestOptions = {}): StaleIngestFiles {
  const stale = findStaleIngestFiles(store, options);
  for (const file of [...stale.tempFiles, ...stale.packFiles]) rmSync(file, { force: true });
  const forget = store.db.prepare('DELETE FROM ingests WHERE id = ?');
  for (const id of stale.ingests) forget.run(id);
  return stale;
}

export function collectGarbage(store: Castore, options: GcOptions = {}): GcReport {
  const db = store.db;
  const dryRun = options.dryRun ?? false;
  const stale = dryRun ? findStaleIngestFiles(store) : cleanStaleIngests(store);
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
    staleIngestsCleaned: stale.ingests.length,
    staleTempFiles: stale.tempFiles.length,
    stalePackFiles: stale.packFiles.length,
    staleFileBytes: stale.bytes,
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
      // Registered like an ingest while it is written: another process's stale-file cleanup then
      // leaves the new pack alone, and finds it (the row left dead) if this process crashes.
      db.prepare('INSERT INTO ingests (id, pid, started_at) VALUES (?, ?, ?)').run(writer.packId, process.pid, Date.now());
      sessionsOfThisProcess.add(writer.packId);
      try {
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
          db.prepare('DELETE FROM ingests WHERE id = ?').run(writer.packId);
        }).immediate();
      } catch (error) {
        writer.discard();
        db.prepare('DELETE FROM ingests WHERE id = ?').run(writer.packId);
        throw error;
      } finally {
        sessionsOfThisProcess.delete(writer.packId);
      }
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
