/**
 * The castore index: one SQLite database per data directory. It holds the
 * row of every blob (where its bytes are, its outboard), every directory
 * object and the store path registry. Blob bytes are outside it: small
 * blobs (a Nix closure is mostly small files) appended to the pack file of
 * the ingest that wrote them — written once, one fsync per ingest — and
 * large blobs in files of their own (see blob-files.ts). On an agent, a
 * blob whose file has been materialized is adopted: its bytes then live
 * only in that read-only store file (`store_file`), not a second time here.
 *
 * Why SQLite and not one file per object: see docs/castore.md.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { CastoreError } from '../errors.js';

export type CastoreDatabase = Database.Database;

/** Bumped when the layout changes incompatibly; older stores are refused with a clear error. */
const FORMAT_VERSION = 4;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS blobs (
  id          TEXT PRIMARY KEY,   -- BLAKE3 hex of the bytes
  size        INTEGER NOT NULL,
  pack        TEXT,               -- pack holding the bytes (size <= PACK_MAX); NULL when in a file of its own
  pack_offset INTEGER,
  outboard    BLOB,               -- BLAKE3 outboard; NULL for blobs of one 16 KiB group
  last_used   INTEGER NOT NULL,   -- ms; GC never sweeps what was used after it started
  store_file  TEXT,               -- a materialized store file holding the bytes (pack NULL, no file of its own)
  template    TEXT,               -- a templated blob: the id of its normalized blob (pack, store_file NULL; no bytes of its own)
  template_record BLOB            -- and its template record (castore/references/template-record.ts)
);
CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs (pack) WHERE pack IS NOT NULL;
CREATE INDEX IF NOT EXISTS blobs_by_template ON blobs (template) WHERE template IS NOT NULL;
-- Pack files (packs/<id>.pack) that a commit published; a pack file without a row is an
-- ingest in progress or a crashed one's leftover.
CREATE TABLE IF NOT EXISTS packs (
  id         TEXT PRIMARY KEY,
  size       INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS directories (
  id        TEXT PRIMARY KEY,   -- BLAKE3 hex of the canonical encoding
  data      BLOB NOT NULL,
  last_used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_paths (
  path          TEXT PRIMARY KEY,
  nar_hash      TEXT NOT NULL,
  nar_size      INTEGER NOT NULL,
  refs          TEXT NOT NULL,  -- JSON array of store paths
  deriver       TEXT,
  ca            TEXT,
  signatures    TEXT NOT NULL,  -- JSON array
  root          TEXT NOT NULL,  -- JSON castore node
  registered_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Ingests in progress (GC keeps what they may reference, and their pack files).
CREATE TABLE IF NOT EXISTS ingests (
  id         TEXT PRIMARY KEY,
  pid        INTEGER NOT NULL,
  started_at INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** Opens (creating if needed) the index in `dataDir`, in WAL mode. */
export function openCastoreDatabase(dataDir: string): CastoreDatabase {
  mkdirSync(dataDir, { recursive: true });
  const db = new Database(path.join(dataDir, 'castore.db'));
  db.pragma('journal_mode = WAL');
  // NORMAL in WAL mode: a crash may lose the last commits but never
  // corrupts the database or makes a half-written object visible.
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 10000');
  const hasTables = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blobs'").get() !== undefined;
  const formatVersion = () => db.pragma('user_version', { simple: true }) as number;
  // Each step only adds columns: existing rows keep their places and meaning. In a write
  // transaction, checked again inside, so two processes opening it at once migrate it once.
  const migrate = (from: number, columns: string[]): void => {
    if (!hasTables || formatVersion() !== from) return;
    db.transaction(() => {
      if (formatVersion() !== from) return;
      for (const column of columns) db.exec(`ALTER TABLE blobs ADD COLUMN ${column}`);
      db.pragma(`user_version = ${from + 1}`);
    }).immediate();
  };
  // Format 3: where adopted blobs live.
  migrate(2, ['store_file TEXT']);
  // Format 4: templated (reference-aware) blobs; every existing blob is an ordinary one.
  migrate(3, ['template TEXT', 'template_record BLOB']);
  const version = formatVersion();
  if (hasTables && version !== FORMAT_VERSION) {
    db.close();
    throw new CastoreError('UNSUPPORTED_FORMAT', `the castore in ${dataDir} has format ${version}, this Ferry reads format ${FORMAT_VERSION}: re-create it (ferry push / fetch again)`);
  }
  db.exec(SCHEMA);
  if (!hasTables) db.pragma(`user_version = ${FORMAT_VERSION}`);
  return db;
}
