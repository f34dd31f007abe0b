/**
 * Opens the coordinator's database: SQLite in WAL mode through drizzle, with
 * the committed migrations applied. WAL with synchronous=NORMAL keeps every
 * committed transaction across a process crash (SIGKILL); only a power loss
 * may drop the last ones, never corrupt the file or break the audit chain.
 */
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';

export type CoordinatorDb = BetterSQLite3Database<typeof schema>;

export interface CoordinatorDatabase {
  sqlite: Database.Database;
  db: CoordinatorDb;
}

/** The migrations ship as source files; from build/ they are found in the source tree. */
function migrationsFolder(): string {
  const beside = fileURLToPath(new URL('./migrations', import.meta.url));
  if (existsSync(beside)) return beside;
  return fileURLToPath(new URL('../../../coordinator/db/migrations', import.meta.url));
}

/** Opens (creating if needed) the database file and brings its schema up to date. */
export function openCoordinatorDatabase(file: string): CoordinatorDatabase {
  mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 10000');
  sqlite.pragma('foreign_keys = ON');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder: migrationsFolder() });
  return { sqlite, db };
}
