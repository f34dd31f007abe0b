// Migrations on a database written by an older coordinator: hand-written
// back-fills must leave the live state equal to what replaying the log builds.
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCoordinatorDatabase } from './database.js';

const MIGRATIONS = fileURLToPath(new URL('./migrations', import.meta.url));

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-migrations-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A database migrated only up to (and including) migration `tag`, as an older coordinator left it. */
function databaseAt(tag: string): string {
  const folder = path.join(dir, 'migrations');
  cpSync(MIGRATIONS, folder, { recursive: true });
  const journalFile = path.join(folder, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: { tag: string }[] };
  const last = journal.entries.findIndex((entry) => entry.tag === tag);
  expect(last, tag).toBeGreaterThanOrEqual(0);
  writeFileSync(journalFile, JSON.stringify({ ...journal, entries: journal.entries.slice(0, last + 1) }));
  const file = path.join(dir, 'coordinator.db');
  const sqlite = new Database(file);
  migrate(drizzle(sqlite), { migrationsFolder: folder });
  sqlite.close();
  return file;
}

describe('0002_keys_revoked_seq', () => {
  it('dates keys revoked before the column existed by the last key.revoke event naming them', () => {
    const file = databaseAt('0001_audit_append_only');
    const old = new Database(file);
    const event = old.prepare(
      "INSERT INTO audit_events (seq, hlc, wall_time, actor_key, actor_role, action, subject, payload, request_signature, prev_hash, hash) VALUES (?, 'h', 0, 'admin', 'admin', ?, ?, '{}', NULL, 'p', 'h')",
    );
    const key = old.prepare('INSERT INTO keys (id, role, label, revoked, added_seq) VALUES (?, ?, ?, ?, ?)');
    // "twice": revoked, re-added (what addKey used to allow), revoked again; "active": never revoked.
    for (const [seq, action, subject] of [[2, 'key.add', 'twice'], [3, 'key.revoke', 'twice'], [4, 'key.add', 'twice'], [5, 'key.add', 'active'], [6, 'key.revoke', 'twice']] as const) {
      event.run(seq, action, subject);
    }
    key.run('twice', 'viewer', '', 1, 4);
    key.run('active', 'pusher', '', 0, 5);
    old.close();

    const { sqlite } = openCoordinatorDatabase(file);
    try {
      expect(sqlite.prepare('SELECT id, revoked, revoked_seq AS revokedSeq FROM keys ORDER BY id').all()).toEqual([
        { id: 'active', revoked: 0, revokedSeq: null },
        { id: 'twice', revoked: 1, revokedSeq: 6 },
      ]);
    } finally {
      sqlite.close();
    }
  });
});
