import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Identity } from '../protocol/identity.js';
import { addStorePath, bootstrap, simulateFleet } from '../test/fleet-simulator.js';
import { verifyChain } from './audit/chain.js';
import { Coordinator } from './coordinator.js';
import { openCoordinatorDatabase } from './db/database.js';
import * as commands from './domain/commands.js';
import { applyEvent } from './domain/reducer.js';
import { SqliteStateStore } from './domain/sqlite-state.js';
import { MemoryStateStore, STATE_TABLES } from './domain/state.js';

let dir: string;
let coordinator: Coordinator;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-coordinator-'));
  coordinator = Coordinator.open(dir, { checkpointEvery: 50 });
});
afterEach(() => {
  coordinator.close();
  rmSync(dir, { recursive: true, force: true });
});

async function populatedFleet(steps: number) {
  const { admin, adminActor } = bootstrap(coordinator);
  const storePaths = [await addStorePath(coordinator, 'app-1'), await addStorePath(coordinator, 'app-2')];
  const result = simulateFleet(coordinator, adminActor, admin, storePaths, steps, 42);
  return { admin, adminActor, result };
}

describe('event sourcing', () => {
  it('replaying the log into an empty database (and into memory) rebuilds the live state exactly', async () => {
    const { result } = await populatedFleet(1500);
    expect(result.recorded).toBeGreaterThan(500);
    expect(result.refused).toBeGreaterThan(50);
    const replayDb = openCoordinatorDatabase(path.join(dir, 'replay.db'));
    const replayed = new SqliteStateStore(replayDb.db);
    const memory = new MemoryStateStore();
    let count = 0;
    replayDb.sqlite.transaction(() => {
      for (const event of coordinator.events()) {
        applyEvent(replayed, event);
        applyEvent(memory, event);
        count++;
      }
    })();
    expect(count).toBe(coordinator.lastSeq);
    for (const table of STATE_TABLES) {
      const live = coordinator.state.all(table);
      expect(live.length, table).toBeGreaterThan(0);
      expect(replayed.all(table), table).toEqual(live);
      expect([...memory.tables[table].values()].sort((a, b) => (a.id < b.id ? -1 : 1)), table).toEqual(live);
    }
    replayDb.sqlite.close();
  });

  it('a refused command records nothing', async () => {
    const { adminActor } = await populatedFleet(10);
    const before = coordinator.lastSeq;
    expect(() => coordinator.record(adminActor, (context) => commands.revokeKey(context, { keyId: 'f'.repeat(64) }))).toThrow(/no active key/);
    const viewer = Identity.generate();
    coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: viewer.keyId, role: 'viewer' }));
    expect(() => coordinator.record({ keyId: viewer.keyId, role: 'viewer' }, (context) => commands.createToken(context, {}).draft)).toThrow(/role 'viewer' may not/);
    expect(coordinator.lastSeq).toBe(before + 1);
  });
});

describe('audit log', () => {
  it('verifies, with signed checkpoints, and survives a reopen', async () => {
    await populatedFleet(300);
    const report = coordinator.verifyAudit();
    expect(report).toMatchObject({ ok: true, firstBad: null });
    expect(report.verifiedThrough).toBe(coordinator.lastSeq);
    expect(report.lastCheckpoint?.seq).toBe(Math.floor(coordinator.lastSeq / 50) * 50);
    const seq = coordinator.lastSeq;
    coordinator.close();
    coordinator = Coordinator.open(dir, { checkpointEvery: 50 });
    coordinator.record({ keyId: coordinator.identity.keyId, role: 'coordinator' }, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer' }));
    expect(coordinator.lastSeq).toBe(seq + 1);
    expect(coordinator.verifyAudit().ok).toBe(true);
  });

  it('refuses UPDATE and DELETE on the log (triggers)', async () => {
    await populatedFleet(20);
    coordinator.checkpoint();
    const sqlite = coordinator.database.sqlite;
    expect(() => sqlite.prepare("UPDATE audit_events SET subject = 'x' WHERE seq = 3").run()).toThrow(/append-only/);
    expect(() => sqlite.prepare('DELETE FROM audit_events WHERE seq = 3').run()).toThrow(/append-only/);
    expect(() => sqlite.prepare('DELETE FROM audit_checkpoints').run()).toThrow(/append-only/);
  });

  describe('detects tampering by someone who bypasses the triggers, naming the first bad seq', () => {
    const tamper = (sql: string): void => {
      const raw = new Database(Coordinator.paths(dir).database);
      raw.exec('DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;');
      raw.exec(sql);
      raw.close();
    };
    it('an edited payload', async () => {
      await populatedFleet(120);
      tamper(`UPDATE audit_events SET payload = replace(payload, '"label"', '"lab3l"') WHERE seq = 2`);
      expect(coordinator.verifyAudit().firstBad).toMatchObject({ seq: 2, reason: expect.stringMatching(/edited/) });
    });
    it('a deleted row', async () => {
      await populatedFleet(120);
      tamper('DELETE FROM audit_events WHERE seq = 17');
      expect(coordinator.verifyAudit().firstBad).toMatchObject({ seq: 17, reason: expect.stringMatching(/missing/) });
    });
    it('reordered rows', async () => {
      await populatedFleet(120);
      tamper('UPDATE audit_events SET seq = -1 WHERE seq = 30; UPDATE audit_events SET seq = 30 WHERE seq = 31; UPDATE audit_events SET seq = 31 WHERE seq = -1;');
      expect(coordinator.verifyAudit().firstBad?.seq).toBe(30);
    });
    it('an inserted row, even with a recomputed hash', async () => {
      await populatedFleet(120);
      tamper(
        'UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 40; UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1040; ' +
          'INSERT INTO audit_events SELECT 40, hlc, wall_time, actor_key, actor_role, action, subject, payload, request_signature, prev_hash, hash FROM audit_events WHERE seq = 39;',
      );
      expect(coordinator.verifyAudit().firstBad?.seq).toBe(40);
    });
    it('rows cut off the end, past a checkpoint', async () => {
      await populatedFleet(200);
      const checkpoint = coordinator.checkpoints().at(-1)!;
      tamper(`DELETE FROM audit_events WHERE seq >= ${checkpoint.seq - 5}`);
      expect(coordinator.verifyAudit().firstBad?.reason).toMatch(/cut off the end/);
    });
  });

  it('a checkpoint signed by another key fails offline verification', async () => {
    await populatedFleet(120);
    const events = [...coordinator.events()];
    expect(verifyChain(events, coordinator.checkpoints(), coordinator.identity.publicKey).ok).toBe(true);
    expect(verifyChain(events, coordinator.checkpoints(), Identity.generate().publicKey).firstBad?.reason).toMatch(/not the coordinator's/);
  });
});
