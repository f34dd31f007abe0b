/**
 * Opens the coordinator's database: SQLite in WAL mode through drizzle, with
 * the committed migrations applied. WAL with synchronous=NORMAL keeps every
 * committed transaction across a process crash (SIGKILL): a commit has
 * written its frames to the WAL file (the OS holds them) before it returns,
 * without an fsync (checkpoints fsync). Only a power loss may drop the last
 * ones, never corrupt the file or break the audit chain.
 *
 * Checkpointing (copying the WAL back into the database file, with an fsync
 * of each) is kept off the command path: SQLite's automatic checkpoint
 * would run inside a commit every ~1,000 pages (~150 commands). Storage
 * maintenance (db/storage-maintenance.ts) checkpoints instead: mostly in a
 * background worker thread (db/wal-checkpointer.ts), plus a passive
 * checkpoint on the command thread every WAL_CHECKPOINT_EVERY_EVENTS
 * events, after the command's transaction. The
 * automatic one stays only as a high backstop, so any other writer of this
 * file still keeps the WAL bounded.
 */
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';

/** drizzle over better-sqlite3; `$client` is the connection (for the hot paths' own prepared statements). */
export type CoordinatorDb = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

/**
 * The automatic checkpoint's threshold, in WAL pages (4 KiB): a backstop at
 * 256 MiB of WAL, far above what the coordinator's own checkpoints let it
 * reach (a command writes ~7 pages: the event, its index entries, the state
 * rows and theirs).
 */
export const WAL_AUTOCHECKPOINT_PAGES = 65_536;

export interface CoordinatorDatabase {
  sqlite: Database.Database;
  db: CoordinatorDb;
}

/**
 * The migrations ship as source files: beside this module in the source
 * tree; from build/ or the CLI bundle (build/cli-bundle/), in the source
 * tree of the package this module is in.
 */
function migrationsFolder(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const beside = path.join(here, 'migrations');
  if (existsSync(beside)) return beside;
  for (let dir = here; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'coordinator', 'db', 'migrations');
    if (existsSync(path.join(dir, 'package.json')) && existsSync(candidate)) return candidate;
  }
  throw new Error(`the coordinator's database migrations (coordinator/db/migrations) are missing from the installation at ${here}`);
}

/** Opens (creating if needed) the database file and brings its schema up to date. */
export function openCoordinatorDatabase(file: string): CoordinatorDatabase {
  mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
  sqlite.pragma('busy_timeout = 10000');
  sqlite.pragma('foreign_keys = ON');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder: migrationsFolder() });
  return { sqlite, db };
}
