// The audit-log viewer without a browser: replay at any position equals a
// replay from zero (snapshots and the cursor, both directions), the last
// position equals the live state tables, diffs, filters and search, the
// HTTP API's access rules (signed requests, one-time login links, sessions,
// revoked keys), offline exports, and tampering shown at the right seq.
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { parseAuditExport } from '../coordinator/audit/export.js';
import { applyEvent } from '../coordinator/domain/reducer.js';
import { MemoryStateStore, STATE_TABLES } from '../coordinator/domain/state.js';
import { exportLogSource, liveLogSource, ReplayIndex, Viewer } from '../coordinator/viewer/index.js';
import { ViewerSessions } from '../coordinator/viewer/sessions.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, type KeyId } from '../protocol/identity.js';
import { addStorePath, bootstrap, simulateFleet } from './fleet-simulator.js';
import { startScriptedCoordinator, type ScriptedCoordinator } from './viewer-fixture.js';

function tables(store: MemoryStateStore): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const table of STATE_TABLES) out[table] = [...store.tables[table].values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  return out;
}

/** The state after `seq`, replayed from zero with the reducer: what the index must match. */
function replayFromZero(coordinator: Coordinator, seq: number): MemoryStateStore {
  const store = new MemoryStateStore();
  for (const event of coordinator.events()) {
    if (event.seq > seq) continue; // consume fully: the generator holds a statement open
    applyEvent(store, event);
  }
  return store;
}

describe('ReplayIndex', () => {
  let dir: string;
  let coordinator: Coordinator;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-replay-index-'));
    coordinator = Coordinator.open(dir, { checkpointEvery: 100 });
    const { admin, adminActor } = bootstrap(coordinator);
    const storePaths = [await addStorePath(coordinator, 'a'), await addStorePath(coordinator, 'b')];
    simulateFleet(coordinator, adminActor, admin, storePaths, 1500, 7);
  });
  afterAll(() => {
    coordinator.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reconstructs every position as a replay from zero does, jumping both ways across snapshots', async () => {
    const index = new ReplayIndex(liveLogSource(coordinator), { snapshotEvery: 50, fullSnapshotEvery: 4, chunk: 97 });
    await index.refresh();
    expect(index.lastSeq).toBe(coordinator.lastSeq);
    expect(index.replayableThrough).toBe(coordinator.lastSeq);
    expect(index.stoppedAt).toBeNull();
    const last = coordinator.lastSeq;
    const positions = [last, 0, 1, 49, 50, 51, Math.floor(last / 2), Math.floor(last / 2) + 1, Math.floor(last / 2) - 1, 3, last - 1, 777, 776, 778, 1000];
    for (const seq of positions.filter((p) => p <= last)) {
      expect(tables(index.stateAt(seq)), `position ${seq}`).toEqual(tables(replayFromZero(coordinator, seq)));
    }
    // The last position equals the live SQLite state, row by row.
    const state = index.stateAt(last);
    for (const table of STATE_TABLES) {
      expect([...state.tables[table].values()].sort((a, b) => (a.id < b.id ? -1 : 1)), table).toEqual(coordinator.state.all(table));
    }
  });

  it('follows a growing log, and its diffs are what the reducer changed', async () => {
    const index = new ReplayIndex(liveLogSource(coordinator), { snapshotEvery: 100 });
    await index.refresh();
    const before = index.lastSeq;
    const self = { keyId: coordinator.identity.keyId, role: 'coordinator' as const };
    coordinator.record(self, () => ({ action: 'key.add', subject: 'x', payload: { keyId: Identity.generate().keyId, role: 'viewer', label: 'late' } }));
    await index.refresh();
    expect(index.lastSeq).toBe(before + 1);
    const { diff } = index.eventWithDiff(before + 1);
    expect(diff).toEqual([expect.objectContaining({ table: 'keys', kind: 'added', fields: expect.arrayContaining([{ field: 'label', before: null, after: 'late' }]) })]);
  });
});

describe('the viewer on a coordinator with a scripted history', () => {
  let scripted: ScriptedCoordinator;
  let viewerClient: CoordinatorHttpClient;
  beforeAll(async () => {
    scripted = await startScriptedCoordinator();
    viewerClient = new CoordinatorHttpClient(scripted.http.url, scripted.viewer);
  });
  afterAll(() => scripted.close());

  it('answers signed requests from viewer keys and up, not from pushers, agents or strangers', async () => {
    const info = await viewerClient.call('viewer.info');
    expect(info).toMatchObject({ mode: 'live', lastSeq: scripted.coordinator.lastSeq, replayableThrough: scripted.coordinator.lastSeq, stoppedAt: null });
    expect(info.verification).toMatchObject({ ok: true, verifiedThrough: scripted.coordinator.lastSeq });
    await expect(new CoordinatorHttpClient(scripted.http.url, scripted.admin).call('viewer.info')).resolves.toBeDefined();
    await expect(new CoordinatorHttpClient(scripted.http.url, scripted.pusher).call('viewer.info')).rejects.toMatchObject({ status: 403, code: 'FORBIDDEN' });
    await expect(new CoordinatorHttpClient(scripted.http.url, Identity.generate()).call('viewer.info')).rejects.toMatchObject({ status: 401, code: 'UNKNOWN_KEY' });
    const anonymous = await fetch(`${scripted.http.url}/viewer/api/info`);
    expect(anonymous.status).toBe(401);
    const page = await fetch(`${scripted.http.url}/viewer/`);
    expect(page.status).toBe(401);
    expect(await page.text()).toContain('ferry audit view');
  });

  it('exchanges a one-time login link for an HttpOnly session cookie', async () => {
    const { loginPath } = await viewerClient.call('viewer.session');
    const login = await fetch(new URL(loginPath, scripted.http.url), { redirect: 'manual' });
    expect(login.status).toBe(303);
    expect(login.headers.get('location')).toBe('/viewer/');
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/ferry_viewer_session=[A-Za-z0-9_-]+/);
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    const session = cookie.split(';')[0]!;
    const page = await fetch(`${scripted.http.url}/viewer/`, { headers: { cookie: session } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await page.text()).toContain('/viewer/assets/viewer.js');
    expect((await fetch(`${scripted.http.url}/viewer/api/info`, { headers: { cookie: session } })).status).toBe(200);
    // One use only.
    expect((await fetch(new URL(loginPath, scripted.http.url), { redirect: 'manual' })).status).toBe(401);
    // Pushers cannot get a link.
    await expect(new CoordinatorHttpClient(scripted.http.url, scripted.pusher).call('viewer.session')).rejects.toMatchObject({ status: 403 });
  });

  it('a session ends when its key is revoked', async () => {
    const auditor = Identity.generate();
    const admin = new CoordinatorHttpClient(scripted.http.url, scripted.admin);
    await admin.call('keys.add', { keyId: auditor.keyId, role: 'viewer', label: 'temp' });
    const { loginPath } = await new CoordinatorHttpClient(scripted.http.url, auditor).call('viewer.session');
    const session = (await fetch(new URL(loginPath, scripted.http.url), { redirect: 'manual' })).headers.get('set-cookie')!.split(';')[0]!;
    expect((await fetch(`${scripted.http.url}/viewer/api/info`, { headers: { cookie: session } })).status).toBe(200);
    await admin.call('keys.revoke', { keyId: auditor.keyId });
    expect((await fetch(`${scripted.http.url}/viewer/api/info`, { headers: { cookie: session } })).status).toBe(401);
  });

  it('shows each position as the reducer left it, with per-config aggregates', async () => {
    const { marks } = scripted;
    const at = (seq: number) => viewerClient.call('viewer.state', { at: String(seq), full: '1' });
    const enrolled = await at(marks.enroll!);
    expect(enrolled.state.agents.rows).toEqual([expect.objectContaining({ name: 'gw-1', status: 'enrolling', labels: { site: 'barn-3' } })]);
    const active = await at(marks.activate1!);
    const c1 = active.state.graphs[0]!.head;
    expect(active.state.agents.rows.map((a) => [a.name, a.phase, a.currentConfig, a.desiredConfig])).toEqual([
      ['gw-1', 'active', c1, c1],
      ['gw-2', 'active', c1, c1],
    ]);
    expect(active.state.configs.rows).toEqual([expect.objectContaining({ id: c1, head: true, summary: { succeeded: 2, failed: 0, pending: 0, unreported: 0 } })]);
    const failed = await at(marks.fail!);
    const c2 = failed.state.graphs[0]!.head;
    expect(c2).not.toBe(c1);
    expect(failed.state.configs.rows.find((c) => c.id === c2)!.summary).toEqual({ succeeded: 0, failed: 1, pending: 1, unreported: 0 });
    const rolledBack = await at(marks.graphRollback!);
    expect(rolledBack.state.graphs[0]).toMatchObject({ head: c1, configCount: 2 });
    expect(rolledBack.state.graphs[0]!.headMoves.map((m) => [m.action, m.to])).toEqual([
      ['config.submit', c1],
      ['config.submit', c2],
      ['graph.rollback', c1],
    ]);
    const end = await at(scripted.coordinator.lastSeq);
    expect(end.state.configs.rows.find((c) => c.id === c1)!.summary).toEqual({ succeeded: 2, failed: 0, pending: 0, unreported: 0 });
    // A time names the last event at or before it.
    const time = new Date(end.position!.wallTime).toISOString();
    expect((await viewerClient.call('viewer.state', { at: time })).seq).toBe(scripted.coordinator.lastSeq);
    expect((await viewerClient.call('viewer.state', { at: '2000-01-01T00:00:00Z' })).seq).toBe(0);
    await expect(viewerClient.call('viewer.state', { at: String(scripted.coordinator.lastSeq + 5) })).rejects.toMatchObject({ status: 404 });
    await expect(viewerClient.call('viewer.state', { at: 'yesterday' })).rejects.toMatchObject({ status: 400, code: 'INVALID' });
  });

  it('explains an event: who, when, verification, signatures and the rows it changed', async () => {
    const fail = await viewerClient.call('viewer.event', { seq: String(scripted.marks.fail) });
    expect(fail.event.action).toBe('agent.report');
    expect(fail.verification).toMatchObject({ state: 'verified' });
    expect(fail.requestSignature).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(fail.diff).toEqual([
      expect.objectContaining({
        table: 'agents',
        kind: 'changed',
        fields: expect.arrayContaining([
          { field: 'phase', before: 'activating', after: 'failed' },
          { field: 'lastError', before: null, after: 'health check failed: bin/check exited with 1' },
        ]),
      }),
    ]);
    const submit = await viewerClient.call('viewer.event', { seq: String(scripted.marks.submit1) });
    expect(submit.configSignature).toMatchObject({ valid: true, author: scripted.admin.keyId });
    expect(submit.diff!.map((change) => [change.table, change.kind])).toEqual([
      ['configs', 'added'],
      ['graphs', 'added'],
    ]);
    const push = await viewerClient.call('viewer.event', { seq: String(scripted.marks.push) });
    expect(push.diff).toEqual([]);
    expect(push.entry.summary).toMatch(/pushed 1 root/);
  });

  it('filters the timeline by actor, action, agent, graph, time and payload text', async () => {
    const events = (query: Record<string, string>) => viewerClient.call('viewer.events', query);
    expect((await events({ action: 'agent.report', agent: 'gw-1' })).entries.map((e) => e.summary)).toEqual([
      expect.stringMatching(/gw-1: fetching/),
      expect.stringMatching(/gw-1: activating/),
      expect.stringMatching(/gw-1: active/),
      expect.stringMatching(/gw-1: fetching/),
      expect.stringMatching(/gw-1: activating/),
      expect.stringMatching(/gw-1: failed .*health check failed/),
      expect.stringMatching(/gw-1: rolled-back/),
    ]);
    expect((await events({ graph: 'edge' })).entries.map((e) => e.action)).toEqual(['config.submit', 'agent.assign', 'agent.assign', 'config.submit', 'graph.rollback']);
    expect((await events({ actor: 'pusher' })).entries.map((e) => e.action)).toEqual(['store.push', 'store.push']);
    expect((await events({ actor: scripted.admin.keyId.slice(0, 10), action: 'agent' })).entries.map((e) => e.action)).toEqual([
      'agent.approve',
      'agent.approve',
      'agent.assign',
      'agent.assign',
    ]);
    expect((await events({ q: 'BIN/CHECK EXITED' })).entries.map((e) => e.seq)).toEqual([scripted.marks.fail]);
    expect((await events({ q: 'no such text anywhere' })).total).toBe(0);
    expect((await events({ from: '2000-01-01T00:00:00Z', to: '2000-01-02T00:00:00Z' })).total).toBe(0);
    const page = await events({ around: String(scripted.marks.fail), limit: '5' });
    expect(page.entries.map((e) => e.seq)).toEqual([-2, -1, 0, 1, 2].map((d) => scripted.marks.fail! + d));
    expect(page).toMatchObject({ hasOlder: true, hasNewer: true });
  });
});

describe('the viewer on an export, and on a tampered log', () => {
  let scripted: ScriptedCoordinator;
  afterEach(() => scripted?.close());

  it('replays an export offline exactly as the coordinator does, and shows where an edited export breaks', async () => {
    scripted = await startScriptedCoordinator();
    const client = new CoordinatorHttpClient(scripted.http.url, scripted.viewer);
    const text = await (await client.send('GET', '/v1/audit/export')).text();
    const key = scripted.coordinator.identity.keyId as KeyId;
    const offline = new Viewer(exportLogSource(parseAuditExport(text), key));
    await offline.ready();
    for (const seq of [scripted.marks.activate1!, scripted.marks.fail!, scripted.marks.end!]) {
      const live = await client.call('viewer.state', { at: String(seq), full: '1' });
      expect(offline.state(seq, { full: true }).state).toEqual(live.state);
    }
    expect(offline.info().verification).toMatchObject({ ok: true, lastCheckpoint: { seq: expect.any(Number) } });

    const lines = text.split('\n');
    const target = lines.findIndex((line) => line.includes('"agent.report"') && line.includes('"failed"'));
    const seq = (JSON.parse(lines[target]!) as { seq: number }).seq;
    lines[target] = lines[target]!.replace('health check failed: bin/check exited with 1', 'all good');
    const tampered = new Viewer(exportLogSource(parseAuditExport(lines.join('\n')), key));
    await tampered.ready();
    expect(tampered.info().verification.firstBad).toMatchObject({ seq, reason: expect.stringMatching(/edited/) });
    expect(tampered.event(seq).verification).toMatchObject({ state: 'broken' });
    expect(tampered.event(seq + 1).verification).toMatchObject({ state: 'after-break', brokenAt: seq });
    expect(tampered.event(seq - 1).verification).toMatchObject({ state: 'verified' });
    // With the wrong key, the first checkpoint fails.
    const wrongKey = new Viewer(exportLogSource(parseAuditExport(text), Identity.generate().keyId));
    await wrongKey.ready();
    expect(wrongKey.info().verification.firstBad?.reason).toMatch(/not the coordinator's/);
  });

  it('shows the seq where rows of the database were edited or deleted', async () => {
    scripted = await startScriptedCoordinator();
    const { marks } = scripted;
    const tamper = (sql: string): void => {
      const raw = new Database(Coordinator.paths(scripted.dataDir).database);
      raw.exec('DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete;');
      raw.exec(sql);
      raw.close();
    };
    const client = (): CoordinatorHttpClient => new CoordinatorHttpClient(scripted.http.url, scripted.viewer);
    expect((await client().call('viewer.info')).verification.ok).toBe(true);
    tamper(`UPDATE audit_events SET payload = replace(payload, 'bin/check exited with 1', 'fine') WHERE seq = ${marks.fail}`);
    // The running viewer notices on its next check (here: forced, as the "Verify now" button does).
    const report = await client().call('viewer.verify', { refresh: '1' });
    expect(report.firstBad).toMatchObject({ seq: marks.fail, reason: expect.stringMatching(/edited/) });
    const detail = await client().call('viewer.event', { seq: String(marks.fail) });
    expect(detail.verification).toMatchObject({ state: 'broken' });
    expect(JSON.stringify(detail.event.payload)).toContain('fine');

    // A deleted row after it: replay stops there, and the viewer says so.
    tamper(`DELETE FROM audit_events WHERE seq = ${marks.graphRollback}`);
    await scripted.restart();
    const info = await client().call('viewer.info');
    expect(info.verification.firstBad).toMatchObject({ seq: marks.fail });
    expect(info.stoppedAt).toMatchObject({ seq: marks.graphRollback, message: expect.stringMatching(/missing/) });
    expect(info.replayableThrough).toBe(marks.graphRollback! - 1);
    await expect(client().call('viewer.state', { at: String(marks.end) })).rejects.toMatchObject({ status: 409 });
  });
});

describe('ViewerSessions', () => {
  it('login tokens are one-time and expire; sessions expire', () => {
    let now = 1_000_000;
    const sessions = new ViewerSessions({ loginTtlMs: 1000, sessionTtlMs: 5000, now: () => now });
    const { token } = sessions.issueLoginToken({ keyId: 'k', role: 'viewer' });
    const late = sessions.issueLoginToken({ keyId: 'k', role: 'viewer' }).token;
    const redeemed = sessions.redeem(token)!;
    expect(sessions.redeem(token)).toBeUndefined();
    expect(sessions.session(redeemed.sessionId)).toEqual({ keyId: 'k', role: 'viewer' });
    now += 1001;
    expect(sessions.redeem(late)).toBeUndefined();
    now += 4000;
    expect(sessions.session(redeemed.sessionId)).toBeUndefined();
  });
});
