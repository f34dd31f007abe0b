// Defect 8 of the security-hardening issue (its last item): request nonces were stored before
// the key was looked up, so every request signed by a self-generated key added a row. Now the
// key and its role are checked first, and only a request that passed them spends a nonce;
// enrollment (any key may ask) stores none, its replay being refused by the command itself.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { RequestNonces } from '../coordinator/api/request-nonces.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { signRequest } from '../protocol/request-signing.js';
import { bootstrap } from './fleet-simulator.js';

let dir: string;
let coordinator: Coordinator;
let server: RunningServer;
let adminIdentity: Identity;
let admin: CoordinatorHttpClient;

const nonceRows = (): number => coordinator.database.sqlite.prepare<[], { n: number }>('SELECT count(*) AS n FROM nonces').get()!.n;

/** Sends `body` signed by `identity` with the given headers (so a request can be sent twice, exactly). */
async function send(method: 'GET' | 'POST', route: string, headers: Record<string, string>, body?: string): Promise<{ status: number; code: string | undefined }> {
  const response = await fetch(new URL(route, server.url), { method, headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body });
  const answer = (await response.json()) as { error?: { code: string } };
  return { status: response.status, code: answer.error?.code };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-nonces-'));
  coordinator = Coordinator.open(dir);
  adminIdentity = bootstrap(coordinator).admin;
  server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: () => undefined });
  admin = new CoordinatorHttpClient(server.url, adminIdentity);
});
afterAll(async () => {
  await server?.close();
  coordinator?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('defect 8: request nonces', () => {
  it('defect 8: 200 requests signed by fresh keys leave the nonces table as it was', async () => {
    await admin.call('agents.list'); // one known request, so the table is not empty to begin with
    const before = nonceRows();
    expect(before).toBeGreaterThan(0);
    for (let i = 0; i < 200; i++) {
      const stranger = Identity.generate();
      const route = i % 2 === 0 ? '/v1/agents' : '/v1/tokens';
      const method = i % 2 === 0 ? 'GET' : 'POST';
      const body = method === 'POST' ? '{"uses":1}' : undefined;
      expect(await send(method, route, signRequest(stranger, method, route, body), body)).toEqual({ status: 401, code: 'UNKNOWN_KEY' });
    }
    expect(nonceRows()).toBe(before);
  });

  it('defect 8: known keys refused for their role, and enrollments by any key, store no nonce either', async () => {
    const pusher = Identity.generate();
    await admin.call('keys.add', { keyId: pusher.keyId, role: 'pusher', label: 'ci' });
    const before = nonceRows();
    for (let i = 0; i < 20; i++) {
      expect(await send('POST', '/v1/tokens', signRequest(pusher, 'POST', '/v1/tokens', '{}'), '{}')).toEqual({ status: 403, code: 'FORBIDDEN' });
      const body = JSON.stringify({ token: `${'0'.repeat(16)}.${'x'.repeat(32)}`, name: `n${i}`, facts: { system: 'x86_64-linux', hostname: 'h' } });
      expect(await send('POST', '/v1/enroll', signRequest(Identity.generate(), 'POST', '/v1/enroll', body), body)).toEqual({ status: 401, code: 'BAD_TOKEN' });
    }
    expect(nonceRows()).toBe(before);
  });

  it('defect 8: a replayed valid request is still refused REPLAYED_NONCE, and a replayed enrollment by the command', async () => {
    const body = '{"uses":1,"autoApprove":true}';
    const headers = signRequest(adminIdentity, 'POST', '/v1/tokens', body);
    const before = nonceRows();
    const seq = coordinator.lastSeq;
    expect(await send('POST', '/v1/tokens', headers, body)).toEqual({ status: 201, code: undefined });
    expect(nonceRows()).toBe(before + 1);
    expect(await send('POST', '/v1/tokens', headers, body)).toEqual({ status: 401, code: 'REPLAYED_NONCE' });
    expect(coordinator.lastSeq).toBe(seq + 1);

    const { token } = await admin.call('tokens.create', { uses: 5, autoApprove: true });
    const agent = Identity.generate();
    const enroll = JSON.stringify({ token, name: 'once', facts: { system: 'x86_64-linux', hostname: 'h' } });
    const enrollHeaders = signRequest(agent, 'POST', '/v1/enroll', enroll);
    expect(await send('POST', '/v1/enroll', enrollHeaders, enroll)).toEqual({ status: 201, code: undefined });
    const enrolled = coordinator.lastSeq;
    expect(await send('POST', '/v1/enroll', enrollHeaders, enroll)).toEqual({ status: 409, code: 'CONFLICT' });
    expect(coordinator.lastSeq).toBe(enrolled);
    expect(coordinator.state.get('tokens', token.split('.')[0]!)?.usesLeft).toBe(4);
  });
});

describe('nonces claimed in groups (one commit per turn of the event loop)', () => {
  it('accepts exactly one of the same request sent 20 times at once, and stores its nonce before answering', async () => {
    const body = '{"uses":1}';
    const headers = signRequest(adminIdentity, 'POST', '/v1/tokens', body);
    const seq = coordinator.lastSeq;
    const answers = await Promise.all(Array.from({ length: 20 }, () => send('POST', '/v1/tokens', headers, body)));
    expect(answers.filter((answer) => answer.status === 201)).toHaveLength(1);
    expect(answers.filter((answer) => answer.code === 'REPLAYED_NONCE')).toHaveLength(19);
    expect(coordinator.lastSeq).toBe(seq + 1);
    const stored = coordinator.database.sqlite.prepare<[string], { n: number }>('SELECT count(*) AS n FROM nonces WHERE id = ?').get(`${adminIdentity.keyId}:${headers['x-ferry-nonce']}`)!.n;
    expect(stored).toBe(1);
  });

  it('serves 200 concurrent distinct requests, each nonce stored once', async () => {
    const before = nonceRows();
    const answers = await Promise.all(Array.from({ length: 200 }, () => send('GET', '/v1/agents', signRequest(adminIdentity, 'GET', '/v1/agents', undefined))));
    expect(answers.every((answer) => answer.status === 200)).toBe(true);
    expect(nonceRows()).toBe(before + 200);
  });

  it('deletes expired nonces each second, keeping those still in their window, never one out of order early', async () => {
    // Its own RequestNonces on this coordinator's database, with a clock the test moves.
    let clock = Date.now();
    const nonces = new RequestNonces(coordinator.database.sqlite, () => clock);
    const stored = (id: string) => coordinator.database.sqlite.prepare<[string], { n: number }>('SELECT count(*) AS n FROM nonces WHERE id = ?').get(id)!.n;
    // The rows the other tests stored expire 10 minutes from now: later than these, so they are before them
    // in rowid order only if stored earlier. Start from an empty table so the order is this test's.
    coordinator.database.sqlite.prepare('DELETE FROM nonces').run();
    expect(await nonces.claim('prune-test:old', clock + 1000)).toBe(true);
    expect(await nonces.claim('prune-test:young', clock + 120_000)).toBe(true);
    // Out of expiry order (as after a clock stepped back): expires before 'young' but was stored after it.
    expect(await nonces.claim('prune-test:late-but-short', clock + 5000)).toBe(true);
    clock += 500;
    expect(await nonces.claim('prune-test:a', clock + 600_000)).toBe(true);
    // Not yet expired, and the last prune was less than a second ago.
    expect(stored('prune-test:old')).toBe(1);
    clock += 10_000;
    expect(await nonces.claim('prune-test:b', clock + 600_000)).toBe(true);
    expect(stored('prune-test:old')).toBe(0);
    expect(stored('prune-test:young')).toBe(1);
    // Expired, but behind a row still in its window: deleted later, and refused as a replay until then.
    expect(stored('prune-test:late-but-short')).toBe(1);
    expect(await nonces.claim('prune-test:young', clock + 600_000)).toBe(false);
    clock += 120_000;
    expect(await nonces.claim('prune-test:c', clock + 600_000)).toBe(true);
    expect(stored('prune-test:young')).toBe(0);
    expect(stored('prune-test:late-but-short')).toBe(0);
    expect(stored('prune-test:a')).toBe(1);
    expect(stored('prune-test:c')).toBe(1);
  });
});
