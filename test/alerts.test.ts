// Alerts (docs/coordinator.md, "Alerts"): webhooks registered through the API, admins only, with
// their input refused when hostile; signed deliveries a receiver verifies with the coordinator key;
// --where; retries of a receiver that fails, without one hung receiver holding up another; the
// outbox's bound; and audit-broken, found by the coordinator's own check of its chain.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import * as commands from '../coordinator/domain/commands.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { ALERT_SIGNATURE_HEADER, signAlert, verifyAlert, MAX_ALERT_URL_LENGTH } from '../protocol/alerts.js';
import { API_ROUTES } from '../protocol/api/routes.js';
import { bootstrap, coordinatorActor } from './fleet-simulator.js';
import { startAlertReceiver, type AlertReceiver } from './alert-receiver.js';

let dir: string;
let running: RunningCoordinator;
let admin: CoordinatorHttpClient;
let operator: CoordinatorHttpClient;
let viewer: CoordinatorHttpClient;
const receivers: AlertReceiver[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-alerts-'));
  running = await startCoordinator({
    dataDir: path.join(dir, 'coordinator'),
    listen: { host: '127.0.0.1', port: 0 },
    quic: false,
    log: () => undefined,
    coordinator: { alerts: { baseDelayMs: 50, maxDelayMs: 200, timeoutMs: 800, pollMs: 50, maxPendingPerAlert: 3, auditCheckMs: 3_600_000 } },
  });
  const { coordinator } = running;
  const boot = bootstrap(coordinator);
  admin = new CoordinatorHttpClient(running.url, boot.admin);
  for (const role of ['operator', 'viewer'] as const) {
    const key = Identity.generate();
    coordinator.record(coordinatorActor(coordinator), (context) => commands.addKey(context, { keyId: key.keyId, role, label: role }));
    if (role === 'operator') operator = new CoordinatorHttpClient(running.url, key);
    else viewer = new CoordinatorHttpClient(running.url, key);
  }
});
afterEach(async () => {
  // Each test registers its own alerts; removing them keeps the next test's deliveries its own.
  for (const alert of (await admin.call('alerts.list')).alerts) await admin.call('alerts.remove', { alertId: alert.id });
  for (const receiver of receivers.splice(0)) await receiver.close();
});
afterAll(async () => {
  await running?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function receiver(): Promise<AlertReceiver> {
  const started = await startAlertReceiver(running.coordinator.identity.keyId);
  receivers.push(started);
  return started;
}

async function agent(name: string, labels: Record<string, string> = {}): Promise<CoordinatorHttpClient> {
  const identity = Identity.generate();
  const { token } = await admin.call('tokens.create', { uses: 1, autoApprove: true, labels });
  const client = new CoordinatorHttpClient(running.url, identity);
  await client.call('enroll', { token, name, facts: { system: 'x86_64-linux', hostname: name } });
  return client;
}

const rollBack = (client: CoordinatorHttpClient, error = 'health check failed') => client.call('agent.status', { configId: null, phase: 'rolled-back', error });

async function refusal(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, 'the call was refused').toBeInstanceOf(ApiError);
  return { code: (error as ApiError).code, message: (error as ApiError).message };
}

describe('registering alerts', () => {
  it('is the admins’: operators may list (URLs hold secrets), viewers may not, neither may change', async () => {
    const hook = await receiver();
    expect(API_ROUTES['alerts.add'].access).toEqual(['admin']);
    expect((await refusal(operator.call('alerts.add', { url: hook.url, on: ['offline'] }))).code).toBe('FORBIDDEN');
    expect((await refusal(viewer.call('alerts.add', { url: hook.url, on: ['offline'] }))).code).toBe('FORBIDDEN');
    const { alertId } = await admin.call('alerts.add', { url: hook.url, on: ['offline'] });
    expect((await operator.call('alerts.list')).alerts.map((alert) => alert.url)).toEqual([hook.url]);
    expect((await refusal(viewer.call('alerts.list'))).code).toBe('FORBIDDEN');
    expect((await refusal(operator.call('alerts.remove', { alertId }))).code).toBe('FORBIDDEN');
    expect((await admin.call('alerts.list')).alerts).toHaveLength(1);
  });

  it('records the change in the audit log with the URL’s origin and digest, never the URL (viewers read the log)', async () => {
    const hook = await receiver();
    const { alertId, seq } = await admin.call('alerts.add', { url: hook.url, on: ['rolled-back', 'audit-broken'], where: ['labels.site=barn-3'] });
    const { events } = await viewer.call('audit.events', { after: seq - 1, limit: 1 });
    expect(events[0]).toMatchObject({ action: 'alert.add', subject: alertId, actorRole: 'admin' });
    expect(events[0]!.payload).toEqual({ alertId, kinds: ['rolled-back', 'audit-broken'], where: ['labels.site=barn-3'], target: new URL(hook.url).origin, urlDigest: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(JSON.stringify(events[0])).not.toContain('s3cret');
    const removed = await admin.call('alerts.remove', { alertId });
    expect((await viewer.call('audit.events', { after: removed.seq! - 1, limit: 1 })).events[0]).toMatchObject({ action: 'alert.remove', payload: { alertId } });
    expect((await refusal(admin.call('alerts.remove', { alertId }))).code).toBe('NOT_FOUND');
    // The URL is forgotten with the alert.
    expect(running.coordinator.database.sqlite.prepare('SELECT count(*) AS n FROM alert_endpoints WHERE id = ?').get(alertId)).toEqual({ n: 0 });
  });

  it('refuses bad URLs, unknown kinds and oversized or unknown --where clauses, saying which', async () => {
    const add = (input: Record<string, unknown>) => refusal(admin.call('alerts.add', { url: 'https://hooks.example.com/x', on: ['offline'], ...input } as never));
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ url: 'ftp://hooks.example.com/x' }, /url: a webhook URL is http:\/\/ or https:\/\/, not ftp:/],
      [{ url: 'file:///etc/passwd' }, /url: a webhook URL is http:\/\/ or https:\/\//],
      [{ url: 'javascript:alert(1)' }, /url: a webhook URL is http/],
      [{ url: 'hooks.example.com/x' }, /url: 'hooks.example.com\/x' is not an absolute URL/],
      [{ url: 'https://user:pw@hooks.example.com/x' }, /url: a webhook URL may not hold credentials/],
      [{ url: 'https://hooks.example.com/x#frag' }, /url: a webhook URL may not have a #fragment/],
      [{ url: `https://hooks.example.com/${'a'.repeat(MAX_ALERT_URL_LENGTH)}` }, /url: a webhook URL is at most 2048 characters/],
      [{ on: ['exploded'] }, /on\.0: .*rolled-back.*degraded.*offline.*audit-broken/],
      [{ on: [] }, /on: name at least one kind/],
      [{ on: ['offline', 'offline'] }, /on: a kind is named twice/],
      [{ where: Array.from({ length: 17 }, (_, i) => `labels.k${i}=v`) }, /where: at most 16 --where clauses/],
      [{ where: [`labels.site=${'x'.repeat(300)}`] }, /where\.0: a --where clause is at most 256 characters/],
      [{ where: ['site=barn'] }, /--where 'site=barn': 'site' is not an agent field/],
      // A bare key is an existence test now (labels.gpu), so a key that is no field says so.
      [{ where: ['no-equals-sign'] }, /--where 'no-equals-sign': 'no-equals-sign' is not an agent field/],
      [{ where: ['labels.site~barn'] }, /--where 'labels.site~barn': unexpected "~"/],
      [{ extra: 1 }, /extra/],
    ];
    for (const [input, message] of cases) {
      const refused = await add(input);
      expect(refused.code, JSON.stringify(input).slice(0, 80)).toBe('INVALID');
      expect(refused.message, JSON.stringify(input).slice(0, 80)).toMatch(message);
    }
    expect((await admin.call('alerts.list')).alerts).toEqual([]);
    const hook = await receiver();
    const { alertId } = await admin.call('alerts.add', { url: hook.url, on: ['offline'] });
    const again = await refusal(admin.call('alerts.add', { url: hook.url, on: ['degraded'] }));
    expect(again).toEqual({ code: 'CONFLICT', message: expect.stringContaining(`alert ${alertId} already posts to this URL`) });
  });
});

describe('delivering alerts', () => {
  it('POSTs a signed alert the receiver verifies with the coordinator key, and only for agents --where selects', async () => {
    const all = await receiver();
    const barn = await receiver();
    await admin.call('alerts.add', { url: all.url, on: ['rolled-back', 'offline'] });
    const { alertId } = await admin.call('alerts.add', { url: barn.url, on: ['rolled-back'], where: ['labels.site=barn-3'] });
    const inBarn = await agent('gw-barn', { site: 'barn-3' });
    const elsewhere = await agent('gw-city', { site: 'city' });
    const { seq } = await rollBack(elsewhere, 'activation failed: exit 1');
    await rollBack(inBarn);

    const [first, second] = await all.waitForAccepted(2);
    expect(first).toEqual({
      id: `${first!.alertId}:rolled-back:${seq}`,
      alertId: first!.alertId,
      kind: 'rolled-back',
      seq,
      action: 'agent.report',
      agent: { id: elsewhere.identity!.keyId, name: 'gw-city' },
      config: null,
      reason: 'activation failed: exit 1',
      coordinator: { name: 'test', key: running.coordinator.identity.keyId },
      time: expect.any(Number),
    });
    expect(second!.agent!.name).toBe('gw-barn');
    const [barnAlert] = await barn.waitForAccepted(1);
    expect(barnAlert).toMatchObject({ alertId, agent: { name: 'gw-barn' } });
    expect(all.received.every((alert) => alert.refusal === undefined && alert.key === running.coordinator.identity.keyId)).toBe(true);

    // An offline agent (the coordinator records it) is alerted as such.
    running.coordinator.record(coordinatorActor(running.coordinator), (context) => commands.recordPresence(context, { agentId: inBarn.identity!.keyId, presence: 'offline', lastSeen: 1_700_000_000_000 }));
    const offline = (await all.waitForAccepted(3))[2]!;
    expect(offline).toMatchObject({ kind: 'offline', action: 'agent.presence', agent: { name: 'gw-barn' }, reason: 'not heard from since 2023-11-14T22:13:20.000Z' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(barn.received).toHaveLength(1);

    const listed = (await admin.call('alerts.list')).alerts.find((alert) => alert.id === alertId)!;
    expect(listed.delivery).toMatchObject({ pending: 0, lastOutcome: 'delivered', lastStatus: 200, lastError: null, delivered: 1, failed: 0, dropped: 0 });
  });

  it('alerts degraded health (agent.health), and not healthy again', async () => {
    const hook = await receiver();
    await admin.call('alerts.add', { url: hook.url, on: ['degraded'] });
    const client = await agent('gw-health');
    const agentId = client.identity!.keyId;
    const configId = 'c0'.repeat(32);
    const health = (state: 'healthy' | 'degraded', reason: string) =>
      // The event as the health route records it (its command wants a config the agent runs; alerts only read the event).
      running.coordinator.record({ keyId: agentId, role: 'agent' }, () => ({ action: 'agent.health', subject: agentId, payload: { agentId, configId, health: state, reason, suppressed: 0 } }))!;
    health('healthy', 'ok');
    const { seq } = health('degraded', 'check failed 3 times: curl: (7) connection refused');
    health('healthy', 'ok');
    const [alert] = await hook.waitForAccepted(1);
    expect(alert).toMatchObject({ kind: 'degraded', seq, action: 'agent.health', agent: { id: agentId, name: 'gw-health' }, config: configId, reason: 'check failed 3 times: curl: (7) connection refused' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(hook.received).toHaveLength(1);
  });

  it('signatures cover the exact body, the key and the time: a receiver refuses anything else', () => {
    const coordinator = running.coordinator.identity;
    const body = JSON.stringify({ hello: 1 });
    const t = Date.now();
    const headers = signAlert(coordinator, body, t);
    const check = (options: Partial<Parameters<typeof verifyAlert>[0]>) => () => verifyAlert({ body, signature: headers[ALERT_SIGNATURE_HEADER], coordinatorKey: coordinator.keyId, ...options });
    // The signature holds, and then the body is checked for what it is.
    expect(check({})).toThrow(/alert refused: the body is not an alert/);
    expect(check({ body: body.replace('1', '2') })).toThrow(/not coordinator .*'s over this body/);
    expect(check({ coordinatorKey: Identity.generate().keyId })).toThrow(/not coordinator/);
    expect(check({ key: Identity.generate().keyId })).toThrow(/Ferry-Key names key/);
    expect(check({ now: t + 10 * 60_000 })).toThrow(/from this clock/);
    expect(check({ signature: undefined })).toThrow(/no single Ferry-Signature header/);
    expect(check({ signature: 'sig=abc' })).toThrow(/is not t=<ms>,sig=/);
    expect(check({ signature: headers[ALERT_SIGNATURE_HEADER]!.replace(`t=${t}`, `t=${t + 1}`) })).toThrow(/not coordinator/);
  });

  it('retries a receiver that answers 500, and one that hangs holds up no other alert', async () => {
    const failing = await receiver();
    const hanging = await receiver();
    const healthy = await receiver();
    failing.answer = 500;
    hanging.answer = 'hang';
    const { alertId: failingId } = await admin.call('alerts.add', { url: failing.url, on: ['rolled-back'] });
    const { alertId: hangingId } = await admin.call('alerts.add', { url: hanging.url, on: ['rolled-back'] });
    await admin.call('alerts.add', { url: healthy.url, on: ['rolled-back'] });
    const client = await agent('gw-retry');
    const { seq } = await rollBack(client);

    // The healthy receiver gets it at once, while the hung one has not answered.
    const [delivered] = await healthy.waitForAccepted(1, 2000);
    expect(delivered!.seq).toBe(seq);
    await failing.waitForReceived(3);
    const failingStatus = (await admin.call('alerts.list')).alerts.find((alert) => alert.id === failingId)!.delivery;
    expect(failingStatus).toMatchObject({ pending: 1, lastOutcome: 'retrying', lastStatus: 500, lastError: 'HTTP 500', delivered: 0 });
    // Every attempt carries the same body (and id), signed afresh.
    expect(new Set(failing.received.map((alert) => alert.body.toString())).size).toBe(1);
    expect(failing.received.every((alert) => alert.payload?.seq === seq)).toBe(true);
    failing.answer = 200;
    await failing.waitForAccepted(1);

    await hanging.waitForReceived(2, 5000);
    const hangingStatus = (await admin.call('alerts.list')).alerts.find((alert) => alert.id === hangingId)!.delivery;
    expect(hangingStatus).toMatchObject({ pending: 1, lastOutcome: 'retrying', lastStatus: null, lastError: 'no answer within 800 ms' });
    expect(healthy.received).toHaveLength(1);
  });

  it('keeps at most maxPendingPerAlert deliveries for a dead receiver, dropping the oldest and counting them', async () => {
    const dead = await receiver();
    const url = dead.url;
    await dead.close();
    receivers.splice(receivers.indexOf(dead), 1);
    const { alertId } = await admin.call('alerts.add', { url, on: ['rolled-back'] });
    const client = await agent('gw-flood');
    for (let i = 0; i < 5; i++) await rollBack(client, `failure ${i}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const status = (await admin.call('alerts.list')).alerts.find((alert) => alert.id === alertId)!.delivery;
    expect(status).toMatchObject({ pending: 3, dropped: 2, lastOutcome: 'retrying', lastStatus: null, lastError: expect.stringMatching(/ECONNREFUSED/) });
    const bodies = running.coordinator.database.sqlite.prepare('SELECT body FROM alert_deliveries WHERE alert_id = ? ORDER BY id').all(alertId) as { body: string }[];
    expect(bodies.map((row) => (JSON.parse(row.body) as { reason: string }).reason)).toEqual(['failure 2', 'failure 3', 'failure 4']);
  });
});

describe('audit-broken', () => {
  it('is alerted once per break the coordinator’s check of its own chain finds', async () => {
    const hook = await receiver();
    await admin.call('alerts.add', { url: hook.url, on: ['audit-broken'] });
    expect(await running.alerts.checkAudit()).toMatchObject({ ok: true });
    // Checks after the first verify what was appended since: an edit of a newer event is found at once
    // (one inside the verified prefix, by the whole-chain check every fullAuditCheckEvery checks).
    const { seq } = await admin.call('tokens.revoke', { tokenId: (await admin.call('tokens.create', { uses: 1 })).tokenId });
    const sqlite = running.coordinator.database.sqlite;
    sqlite.exec('DROP TRIGGER audit_events_no_update');
    try {
      sqlite.prepare("UPDATE audit_events SET subject = 'forged' WHERE seq = ?").run(seq! - 1);
    } finally {
      sqlite.exec("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE refused'); END;");
    }
    expect(await running.alerts.checkAudit()).toMatchObject({ ok: false, firstBad: { seq: seq! - 1 } });
    const [alert] = await hook.waitForAccepted(1);
    expect(alert).toMatchObject({ kind: 'audit-broken', seq: seq! - 1, action: null, agent: null, reason: 'its contents do not match its hash (the row was edited)' });
    // The same break again: no second alert.
    await running.alerts.checkAudit();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(hook.received).toHaveLength(1);
  });
});
