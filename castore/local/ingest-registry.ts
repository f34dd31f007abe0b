/**
 * Ingests in progress, across processes: each has a row in `ingests` (id,
 * pid, start) from before it creates its first file until its files are
 * renamed into place or deleted. GC keeps what they may reference (its
 * cutoff is no later than the oldest start) and removes what crashed ones
 * left: temp files `tmp/<ingest id>-<n>` and unpublished packs
 * `packs/<ingest id>.pack`.
 */
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from './blob-files.js';
import type { LocalContext } from './local-context.js';
import { packPath, packsDir } from './pack-files.js';
import { processAlive } from './process-alive.js';

/**
 * The ids of the ingests this process has open (sessions, and pack
 * compaction). Stale-file cleanup trusts a row with this process's pid
 * only if its id is here: a process restarted under the pid of one that
 * crashed (pid 1 in a container) does not own the crashed one's files.
 * Sessions run on the main thread (no worker opens a castore).
 */
const sessionsOfThisProcess = new Set<string>();

/**
 * Records an ingest as running (before it creates any file). `pid` and
 * `startedAt` default to this process and now; a test records another
 * process's ingest to stand for one that crashed.
 */
export function registerIngest(context: LocalContext, id: string, owner: { pid?: number; startedAt?: number } = {}): void {
  const pid = owner.pid ?? process.pid;
  context.db.prepare('INSERT INTO ingests (id, pid, started_at) VALUES (?, ?, ?)').run(id, pid, owner.startedAt ?? context.clock());
  // Only an ingest this process opens is one of its sessions (a given pid stands for another process, or a crashed one).
  if (owner.pid === undefined) sessionsOfThisProcess.add(id);
}

/** Removes an ingest's row (its files are published or gone); inside the caller's transaction when it has one. */
export function forgetIngest(context: LocalContext, id: string): void {
  context.db.prepare('DELETE FROM ingests WHERE id = ?').run(id);
}

/** After the transaction that forgot an ingest: it no longer owns anything in this process. */
export function endIngest(id: string): void {
  sessionsOfThisProcess.delete(id);
}

/** The ids of the ingests recorded as running, in any process. */
export function listIngests(context: LocalContext): string[] {
  return context.db.prepare<[], string>('SELECT id FROM ingests ORDER BY id').pluck().all();
}

/** The start of the oldest ingest recorded as running, or undefined. */
export function oldestIngestStart(context: LocalContext): number | undefined {
  return context.db.prepare<[], { started: number | null }>('SELECT MIN(started_at) AS started FROM ingests').get()?.started ?? undefined;
}

/**
 * Whether the ingest in `row` may still be running. One of this process
 * must be one of its open sessions (see sessionsOfThisProcess).
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
 * What crashed ingests left behind: their rows in `ingests`, their temp
 * files and their unpublished pack files (without a `packs` row). Nothing
 * of it is visible to readers; it only takes disk space, and a dead row
 * holds GC's cutoff back.
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
   * (LocalCastore.open) takes only the dead ingests' own packs.
   */
  orphanPacks?: boolean;
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
export function findStaleIngestFiles(context: LocalContext, options: StaleIngestOptions = {}): StaleIngestFiles {
  const tmp = tempDir(context.dataDir);
  const packs = packsDir(context.dataDir);
  const tempNames = listDir(tmp);
  const packNames = listDir(packs);
  const db = context.db;
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
    .map((id) => packPath(context.dataDir, id));
  const bytes = [...tempFiles, ...packFiles].reduce((sum, file) => sum + sizeOf(file), 0);
  return { ingests, tempFiles, packFiles, bytes };
}

/**
 * Removes what crashed ingests left (findStaleIngestFiles): their files,
 * then their rows. Returns what it found. A file already gone is no error;
 * on any other failure it throws with some of it removed, and the rest
 * stays for the next run (nothing of it is ever visible to readers).
 */
export function cleanStaleIngests(context: LocalContext, options: StaleIngestOptions = {}): StaleIngestFiles {
  const stale = findStaleIngestFiles(context, options);
  for (const file of [...stale.tempFiles, ...stale.packFiles]) rmSync(file, { force: true });
  for (const id of stale.ingests) forgetIngest(context, id);
  return stale;
}
