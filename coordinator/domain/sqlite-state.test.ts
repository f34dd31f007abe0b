import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConfigId } from '../../protocol/config.js';
import { openCoordinatorDatabase, type CoordinatorDatabase } from '../db/database.js';
import { SqliteStateStore } from './sqlite-state.js';

const head = (n: number) => String(n).repeat(64) as ConfigId;

describe('SqliteStateStore: rows kept in memory', () => {
  let dir: string;
  let database: CoordinatorDatabase;
  let state: SqliteStateStore;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-state-'));
    database = openCoordinatorDatabase(path.join(dir, 'coordinator.db'));
    state = new SqliteStateStore(database.db);
  });
  afterEach(() => {
    database.sqlite.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers a kept row without SQLite, and a put replaces it', () => {
    state.put('graphs', { id: 'web', head: head(1), updatedSeq: 1 });
    expect(state.get('graphs', 'web')?.head).toBe(head(1));
    // Changed behind the store's back (nothing does this but the test): the kept copy is what is read.
    database.sqlite.prepare("UPDATE graphs SET head = ? WHERE id = 'web'").run(head(2));
    expect(state.get('graphs', 'web')?.head).toBe(head(1));
    state.put('graphs', { id: 'web', head: head(3), updatedSeq: 2 });
    expect(state.get('graphs', 'web')).toStrictEqual({ id: 'web', head: head(3), updatedSeq: 2 });
    // A missing row is kept as missing, and a put makes it appear.
    expect(state.get('graphs', 'db')).toBeUndefined();
    state.put('graphs', { id: 'db', head: head(4), updatedSeq: 3 });
    expect(state.get('graphs', 'db')?.head).toBe(head(4));
  });

  it('keeps nothing a rolled-back transaction wrote or read', () => {
    state.put('graphs', { id: 'web', head: head(1), updatedSeq: 1 });
    expect(state.get('graphs', 'web')?.head).toBe(head(1));
    expect(() =>
      state.batch(() => {
        state.put('graphs', { id: 'web', head: head(2), updatedSeq: 2 });
        state.put('graphs', { id: 'new', head: head(2), updatedSeq: 2 });
        // Read inside the transaction: what it wrote, from SQLite.
        expect(state.get('graphs', 'web')?.head).toBe(head(2));
        expect(state.get('graphs', 'new')?.head).toBe(head(2));
        throw new Error('refused');
      }),
    ).toThrow('refused');
    expect(state.get('graphs', 'web')?.head).toBe(head(1));
    expect(state.get('graphs', 'new')).toBeUndefined();
  });

  it('hands out kept rows frozen, nested values too: a reader cannot change what the next one reads', () => {
    state.put('agents', {
      id: 'a1', name: 'a1', type: 'machine', status: 'enrolled', labels: { site: 'paris' }, tokenId: 't', factsRevision: 0,
      system: null, desiredGraph: null, pinnedConfig: null, currentConfig: null, phase: null, lastError: null, health: null, healthReason: null, healthConfig: null, healthAt: null, recordedPresence: null, retrySeq: null, stopRequested: false, control: 'rules', rule: null, enrolledSeq: 1, updatedSeq: 1,
    });
    const row = state.get('agents', 'a1')!;
    expect(() => ((row as { status: string }).status = 'revoked')).toThrow(TypeError);
    expect(() => ((row.labels as Record<string, string>).site = 'tokyo')).toThrow(TypeError);
    expect(state.get('agents', 'a1')).toMatchObject({ status: 'enrolled', labels: { site: 'paris' } });
  });
});
