import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { blake3Hex } from '../castore/blake3/index.js';
import { canonicalJson } from '../protocol/canonical-json.js';
import { Identity } from '../protocol/identity.js';
import { addStorePath, bootstrap, simulateFleet } from '../test/fleet-simulator.js';
import { eventHash, verifyChain } from './audit/chain.js';
import { Coordinator } from './coordinator.js';
import { openCoordinatorDatabase } from './db/database.js';
import * as schema from './db/schema.js';
import * as commands from './domain/commands.js';
import type { AuditEvent } from './domain/events.js';
import { ReducerError, replayLog } from './domain/reducer.js';
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
  // A fleet of 256+ events started the background WAL checkpointer, whose thread closes its own
  // connection just after close() returns (storage-maintenance.ts): its -shm/-wal may go meanwhile.
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
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
    const actions = new Set([...coordinator.events()].map((event) => event.action));
    for (const action of ['agent.report', 'agent.health', 'agent.presence', 'relay.upstream'] as const) expect(actions, action).toContain(action);
    // Some relay fetches from another one as the run ends (an upstream set by relay.upstream, replayed below).
    expect(coordinator.state.all('relays').some((relay) => relay.upstream !== null)).toBe(true);
    const replayDb = openCoordinatorDatabase(path.join(dir, 'replay.db'));
    const replayed = new SqliteStateStore(replayDb.db);
    const memory = new MemoryStateStore();
    expect(coordinator.replayInto(replayed)).toEqual({ events: coordinator.lastSeq, lastSeq: coordinator.lastSeq });
    expect(replayLog(coordinator.events(), memory)).toEqual({ events: coordinator.lastSeq, lastSeq: coordinator.lastSeq });
    for (const table of STATE_TABLES) {
      const live = coordinator.state.all(table);
      expect(live.length, table).toBeGreaterThan(0);
      expect(replayed.all(table), table).toEqual(live);
      expect([...memory.tables[table].values()].sort((a, b) => (a.id < b.id ? -1 : 1)), table).toEqual(live);
    }
    replayDb.sqlite.close();
  });

  it('replay refuses a log with a gap and, into SQLite, leaves the store untouched', async () => {
    await populatedFleet(200);
    const events = [...coordinator.events()];
    const replayDb = openCoordinatorDatabase(path.join(dir, 'replay.db'));
    try {
      const replayed = new SqliteStateStore(replayDb.db);
      const gap = [...events.slice(0, 20), ...events.slice(21)];
      expect(() => replayLog(gap, replayed)).toThrow(ReducerError);
      expect(() => replayLog(gap, replayed)).toThrow(/event 22 does not apply: it follows event 20/);
      for (const table of STATE_TABLES) expect(replayed.all(table), table).toEqual([]);
      expect(replayLog(events, replayed).events).toBe(events.length);
      for (const table of STATE_TABLES) expect(replayed.all(table), table).toEqual(coordinator.state.all(table));
    } finally {
      replayDb.sqlite.close();
    }
  });

  it('the state store reads back exactly what drizzle reads (JSON columns, booleans, nulls)', async () => {
    await populatedFleet(1000);
    const drizzleDb = coordinator.database.db;
    const tables = { keys: schema.keys, tokens: schema.tokens, agents: schema.agents, agentFacts: schema.agentFacts, graphs: schema.graphs, configs: schema.configs, alerts: schema.alerts, relays: schema.relays, rollouts: schema.rollouts, rolloutReleases: schema.rolloutReleases, secrets: schema.secrets, rules: schema.rules, params: schema.params } as const;
    for (const table of STATE_TABLES) {
      const viaDrizzle = drizzleDb.select().from(tables[table]).orderBy(tables[table].id).all();
      expect(viaDrizzle.length, table).toBeGreaterThan(0);
      expect(coordinator.state.all(table), table).toStrictEqual(viaDrizzle);
      const first = viaDrizzle[0]!;
      expect(coordinator.state.get(table, first.id), table).toStrictEqual(first);
    }
    expect(coordinator.state.get('agents', 'nobody')).toBeUndefined();
    // And what it writes is what drizzle writes: the same raw column values.
    const raw = coordinator.database.sqlite.prepare('SELECT revoked, auto_approve, labels FROM tokens ORDER BY id LIMIT 1').get() as { revoked: number; auto_approve: number; labels: string };
    const token = coordinator.state.all('tokens')[0]!;
    expect(raw).toEqual({ revoked: token.revoked ? 1 : 0, auto_approve: token.autoApprove ? 1 : 0, labels: JSON.stringify(token.labels) });
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

describe('hot-path helpers agree with the reference encodings', () => {
  it('sameJson is canonical-JSON equality', () => {
    const cases: [unknown, unknown][] = [
      [{ a: 1, b: [1, 2, { c: 'x' }] }, { b: [1, 2, { c: 'x' }], a: 1 }],
      [{ a: 1 }, { a: 1, b: undefined }],
      [{ a: 1 }, { a: 2 }],
      [{ a: 1 }, { a: 1, b: null }],
      [{ a: [1, 2] }, { a: [2, 1] }],
      [{ a: [1] }, { a: { 0: 1 } }],
      [{ a: 0 }, { a: -0 }],
      [{ a: '1' }, { a: 1 }],
      [{ a: {} }, { a: [] }],
      [{ a: { b: { c: true } } }, { a: { b: { c: false } } }],
      [{ a: { b: { c: true } } }, { a: { b: { c: true } } }],
      [null, {}],
      ['x', 'x'],
    ];
    for (const [a, b] of cases) {
      expect(commands.sameJson(a, b), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(canonicalJson(a) === canonicalJson(b));
      expect(commands.sameJson(b, a)).toBe(canonicalJson(a) === canonicalJson(b));
    }
  });

  it('an event hash, on the hot path and in verification, is BLAKE3 of canonicalJson of the event without its hash', async () => {
    const reference = ({ hash: _hash, ...unhashed }: AuditEvent) => blake3Hex(canonicalJson(unhashed));
    await populatedFleet(200);
    for (const event of coordinator.events()) {
      expect(event.hash).toBe(reference(event));
      expect(eventHash(event)).toBe(event.hash);
    }
    const strings = ['', 'a', '"quoted"\\', '\u00e9\u20ac\u{1f600}', '\n\t\u0000\u001f', '\ud800', 'x'.repeat(5000)];
    for (let i = 0; i < 200; i++) {
      const pick = (salt: number) => strings[(i * 7 + salt) % strings.length]!;
      const event = {
        seq: i * 1_000_003,
        hlc: pick(1),
        wallTime: Number.MAX_SAFE_INTEGER - i,
        actorKey: pick(2),
        actorRole: pick(3),
        action: pick(4),
        subject: pick(5),
        payload: i % 3 === 0 ? null : { [pick(6)]: [pick(7), i, { b: true, a: -i }], z: pick(8) },
        requestSignature: i % 2 === 0 ? null : pick(9),
        prevHash: pick(10),
        hash: '',
      } as AuditEvent;
      expect(eventHash(event), `event ${i}`).toBe(reference(event));
    }
  });
});

describe('audit log', () => {
  it('verifies, with signed checkpoints, and survives a reopen', async () => {
    await populatedFleet(300);
    const report = await coordinator.verifyAudit();
    expect(report).toMatchObject({ ok: true, firstBad: null });
    expect(report.verifiedThrough).toBe(coordinator.lastSeq);
    expect(report.lastCheckpoint?.seq).toBe(Math.floor(coordinator.lastSeq / 50) * 50);
    const seq = coordinator.lastSeq;
    coordinator.close();
    coordinator = Coordinator.open(dir, { checkpointEvery: 50 });
    coordinator.record({ keyId: coordinator.identity.keyId, role: 'coordinator' }, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer' }));
    expect(coordinator.lastSeq).toBe(seq + 1);
    expect((await coordinator.verifyAudit()).ok).toBe(true);
  });

  it('checkpoints the WAL itself, outside the commands (the automatic checkpoint is only a backstop)', async () => {
    const sqlite = coordinator.database.sqlite;
    expect(sqlite.pragma('wal_autocheckpoint', { simple: true })).toBeGreaterThanOrEqual(10_000);
    expect(sqlite.pragma('synchronous', { simple: true })).toBe(1); // NORMAL: in WAL mode, durable across a process crash
    const file = Coordinator.paths(dir).database;
    const fileSize = () => statSync(file).size;
    // Until a checkpoint, commits only grow the WAL; the database file keeps its size.
    coordinator.close();
    coordinator = Coordinator.open(dir, { checkpointEvery: 50, walCheckpointEvery: 1_000_000, backgroundWalCheckpoints: false });
    const empty = fileSize();
    await populatedFleet(100);
    expect(fileSize()).toBe(empty);
    coordinator.maintenance.checkpointWal();
    expect(fileSize()).toBeGreaterThan(empty);
    // With a threshold, the coordinator folds the WAL back by itself after that many events.
    coordinator.close();
    rmSync(dir, { recursive: true, force: true });
    coordinator = Coordinator.open(dir, { checkpointEvery: 50, walCheckpointEvery: 40, backgroundWalCheckpoints: false });
    const fresh = fileSize();
    await populatedFleet(100);
    expect(coordinator.lastSeq).toBeGreaterThan(40);
    expect(fileSize()).toBeGreaterThan(fresh);
  });

  it('loses no acknowledged event when SIGKILLed while the WAL is being checkpointed (worker and command thread)', async () => {
    coordinator.close();
    // The writer appends a line per acknowledged event to a plain file (a write to a full pipe could fail with EAGAIN).
    const acks = path.join(dir, 'acks.log');
    const script = path.join(dir, 'writer.mts');
    writeFileSync(
      script,
      `import { openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Coordinator } from ${JSON.stringify(new URL('./coordinator.ts', import.meta.url).href)};
import * as commands from ${JSON.stringify(new URL('./domain/commands.ts', import.meta.url).href)};
const out = openSync(process.argv[3], 'a');
const coordinator = Coordinator.open(process.argv[2], { walCheckpointEvery: 500 });
const self = { keyId: coordinator.identity.keyId, role: 'coordinator' };
coordinator.record(self, () => ({ action: 'coordinator.init', subject: self.keyId, payload: { name: 'kill', coordinatorKey: self.keyId } }));
for (;;) {
  const keyId = randomBytes(32).toString('hex');
  const event = coordinator.record(self, (context) => commands.addKey(context, { keyId, role: 'viewer', label: 'k' }));
  writeSync(out, event.seq + ' ' + keyId + ' ' + (coordinator.maintenance.backgroundWalCheckpointing ? 'bg' : '-') + '\\n');
}
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script, dir, acks], { stdio: ['ignore', 'ignore', 'inherit'] });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    const lines = (): string[] => {
      try {
        return readFileSync(acks, 'utf8').split('\n').slice(0, -1); // the last piece may be a line cut mid-write
      } catch {
        return [];
      }
    };
    while (lines().length < 3000 && child.exitCode === null) await new Promise((resolve) => setTimeout(resolve, 20));
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const acknowledged = lines().map((line) => {
      const [seq, keyId, background] = line.split(' ') as [string, string, string];
      return { seq: Number(seq), keyId, background: background === 'bg' };
    });
    expect(acknowledged.length).toBeGreaterThanOrEqual(3000);
    expect(acknowledged.some((ack) => ack.background)).toBe(true);
    coordinator = Coordinator.open(dir, { checkpointEvery: 50 });
    expect((await coordinator.verifyAudit())).toMatchObject({ ok: true });
    expect(coordinator.lastSeq).toBeGreaterThanOrEqual(acknowledged.at(-1)!.seq);
    for (const ack of acknowledged) expect(coordinator.state.get('keys', ack.keyId)?.addedSeq, ack.keyId).toBe(ack.seq);
  });

  it('checkpoints the WAL in a background thread once busy, while commands go on', async () => {
    coordinator.close();
    coordinator = Coordinator.open(dir, { checkpointEvery: 50, walCheckpointEvery: 1_000_000 });
    const file = Coordinator.paths(dir).database;
    const empty = statSync(file).size;
    await populatedFleet(100);
    expect(coordinator.maintenance.backgroundWalCheckpointing).toBe(false); // a short burst (a CLI command) starts no thread
    await populatedFleet(1000);
    expect(coordinator.lastSeq).toBeGreaterThan(256);
    expect(coordinator.maintenance.backgroundWalCheckpointing).toBe(true);
    const deadline = Date.now() + 10_000;
    while (statSync(file).size === empty && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(statSync(file).size).toBeGreaterThan(empty);
    expect((await coordinator.verifyAudit()).ok).toBe(true);
    // Closing stops the worker; the data directory reopens with everything in it.
    const seq = coordinator.lastSeq;
    coordinator.close();
    coordinator = Coordinator.open(dir, { checkpointEvery: 50 });
    expect(coordinator.lastSeq).toBe(seq);
    expect((await coordinator.verifyAudit()).ok).toBe(true);
  });

  it('keeps serving while it verifies a log of several pages, and shares one run between callers', async () => {
    const { adminActor } = await populatedFleet(4000);
    expect(coordinator.lastSeq).toBeGreaterThan(2000); // more than two pages of 1,000
    const order: string[] = [];
    const verifying = coordinator.verifyAudit();
    expect(coordinator.verifyAudit()).toBe(verifying);
    // Runs between two pages (a synchronous verification would run it after the report): a command commits meanwhile.
    setImmediate(() => {
      coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer' }));
      order.push('command');
    });
    const report = await verifying.then((result) => (order.push('verified'), result));
    expect(order).toEqual(['command', 'verified']);
    // The event appended mid-run was read and verified too.
    expect(report).toMatchObject({ ok: true, verifiedThrough: coordinator.lastSeq });
    const next = coordinator.verifyAudit();
    expect(next).not.toBe(verifying);
    await next;
  });

  it('accepts commands while an export reads the log (no statement left open between pages)', async () => {
    const { adminActor } = await populatedFleet(2500);
    const before = coordinator.lastSeq;
    const reading = coordinator.events();
    expect(reading.next().value?.seq).toBe(1);
    // better-sqlite3 refuses every statement on a connection that has an iteration open: this was "busy".
    coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer' }));
    expect(coordinator.lastSeq).toBe(before + 1);
    expect([...reading].map((event) => event.seq)).toEqual(Array.from({ length: before }, (_, index) => index + 2));
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
      expect((await coordinator.verifyAudit()).firstBad).toMatchObject({ seq: 2, reason: expect.stringMatching(/edited/) });
    });
    it('a deleted row', async () => {
      await populatedFleet(120);
      tamper('DELETE FROM audit_events WHERE seq = 17');
      expect((await coordinator.verifyAudit()).firstBad).toMatchObject({ seq: 17, reason: expect.stringMatching(/missing/) });
    });
    it('reordered rows', async () => {
      await populatedFleet(120);
      tamper('UPDATE audit_events SET seq = -1 WHERE seq = 30; UPDATE audit_events SET seq = 30 WHERE seq = 31; UPDATE audit_events SET seq = 31 WHERE seq = -1;');
      expect((await coordinator.verifyAudit()).firstBad?.seq).toBe(30);
    });
    it('an inserted row, even with a recomputed hash', async () => {
      await populatedFleet(120);
      tamper(
        'UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 40; UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1040; ' +
          'INSERT INTO audit_events SELECT 40, hlc, wall_time, actor_key, actor_role, action, subject, payload, request_signature, prev_hash, hash FROM audit_events WHERE seq = 39;',
      );
      expect((await coordinator.verifyAudit()).firstBad?.seq).toBe(40);
    });
    it('rows cut off the end, past a checkpoint', async () => {
      await populatedFleet(200);
      const checkpoint = coordinator.checkpoints().at(-1)!;
      tamper(`DELETE FROM audit_events WHERE seq >= ${checkpoint.seq - 5}`);
      expect((await coordinator.verifyAudit()).firstBad?.reason).toMatch(/cut off the end/);
    });
  });

  it('a checkpoint signed by another key fails offline verification', async () => {
    await populatedFleet(120);
    const events = [...coordinator.events()];
    expect(verifyChain(events, coordinator.checkpoints(), coordinator.identity.publicKey).ok).toBe(true);
    expect(verifyChain(events, coordinator.checkpoints(), Identity.generate().publicKey).firstBad?.reason).toMatch(/not the coordinator's/);
  });
});

describe('agent presence', () => {
  it('coalesces heartbeats in memory, writes them in one batch, and keeps them across a close', () => {
    const stored = (id: string) =>
      coordinator.database.sqlite.prepare<[string], { last_seen: number }>('SELECT last_seen FROM agent_presence WHERE id = ?').get(id)?.last_seen ?? null;
    const agents = Array.from({ length: 50 }, () => Identity.generate().keyId);
    for (const id of agents) coordinator.presence.touch(id);
    // Seen at once, written nowhere yet: a heartbeat is no SQLite commit.
    expect(agents.every((id) => coordinator.presence.lastSeen(id) !== null)).toBe(true);
    expect(stored(agents[0]!)).toBeNull();
    coordinator.presence.flush();
    expect(agents.every((id) => stored(id) === coordinator.presence.lastSeen(id))).toBe(true);
    // Never backwards: an older time written later (a slow flush) does not replace a newer one.
    coordinator.database.sqlite.prepare('UPDATE agent_presence SET last_seen = last_seen + 60000 WHERE id = ?').run(agents[1]!);
    coordinator.presence.touch(agents[1]!);
    coordinator.presence.flush();
    expect(stored(agents[1]!)).toBeGreaterThan(Date.now() + 30_000);
    // Pending heartbeats are written when the coordinator closes.
    const late = Identity.generate().keyId;
    coordinator.presence.touch(late);
    coordinator.close();
    coordinator = Coordinator.open(dir);
    expect(coordinator.presence.lastSeen(late)).not.toBeNull();
  });
  it('reads the whole fleet’s last-seen times at once as it reads them one by one (the live page’s reading)', () => {
    const flushed = Array.from({ length: 5 }, () => Identity.generate().keyId);
    const pending = Array.from({ length: 5 }, () => Identity.generate().keyId);
    const never = Identity.generate().keyId;
    for (const id of flushed) coordinator.presence.touch(id);
    coordinator.presence.flush();
    for (const id of [...pending, flushed[0]!]) coordinator.presence.touch(id);
    const all = coordinator.presence.lastSeenAll();
    for (const id of [...flushed, ...pending, never]) {
      expect(all.get(id) ?? null, id).toBe(coordinator.presence.lastSeen(id));
      expect(coordinator.presence.presenceSeen(id, all.get(id) ?? null)).toBe(coordinator.presence.presenceOf(id));
    }
    expect(all.has(never)).toBe(false);
    expect(coordinator.presence.presenceOf(never)).toBe('offline');
  });
});
