// The coordinator's HTTP API on a real socket: signed requests, every kind
// of refusal (each logged, none changing state), enrollment, facts, configs
// and the audit log, through the same client the CLI uses.
import { mkdtempSync, rmSync } from 'node:fs';
import { asStorePath } from '../nix/store-path.js';
import { asConfigId } from '../protocol/config.js';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { configId, configSigningMessage } from '../coordinator/domain/commands.js';
import { parseAuditExport, verifyAuditExport } from '../coordinator/audit/export.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { formatHlc } from '../protocol/hlc.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { signRequest } from '../protocol/request-signing.js';
import { addStorePath, bootstrap } from './fleet-simulator.js';

let dir: string;
let coordinator: Coordinator;
let server: RunningServer;
let admin: CoordinatorHttpClient;
let adminIdentity: Identity;
const logLines: string[] = [];
let storePath: string;

async function refusal(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    return error as ApiError;
  }
  throw new Error('expected the request to be refused');
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-http-'));
  coordinator = Coordinator.open(dir);
  adminIdentity = bootstrap(coordinator).admin;
  storePath = await addStorePath(coordinator, 'app-1');
  server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: (line) => logLines.push(line) });
  admin = new CoordinatorHttpClient(server.url, adminIdentity);
});
afterAll(async () => {
  await server?.close();
  coordinator?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('authentication and authorization', () => {
  it('serves public info without a signature', async () => {
    const info = await new CoordinatorHttpClient(server.url).call('info');
    expect(info.coordinatorKey).toBe(coordinator.identity.keyId);
  });

  it('refuses a body over the limit as it arrives, without reading it to its end (chunked, no content-length)', async () => {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const refused = await new Promise<{ status: number; sent: number }>((resolve, reject) => {
      const request = httpRequest(new URL('/v1/tokens', server.url), { method: 'POST', headers: { 'content-type': 'application/json' } });
      let sent = 0;
      let answered = false;
      request.on('response', (response) => {
        answered = true;
        response.resume();
        resolve({ status: response.statusCode!, sent });
        request.destroy();
      });
      request.on('error', (error) => answered || reject(error));
      // Up to 64 MiB, unless answered first: a server that buffers the whole body answers only after all of it.
      const pump = (): void => {
        while (!answered && sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!request.write(chunk)) return void request.once('drain', pump);
        }
        if (!answered) request.end();
      };
      pump();
    });
    expect(refused.status).toBe(413);
    expect(refused.sent).toBeLessThan(16 * 1024 * 1024); // the limit is 1 MiB; the rest is socket buffers
  });

  it('refuses, logs, and changes nothing for every kind of bad request', async () => {
    const before = coordinator.lastSeq;
    const logged = logLines.length;
    expect((await refusal(new CoordinatorHttpClient(server.url).post('/v1/tokens', {}))).code).toBe('UNAUTHENTICATED');
    expect((await refusal(new CoordinatorHttpClient(server.url, Identity.generate()).post('/v1/tokens', {}))).code).toBe('UNKNOWN_KEY');
    expect((await refusal(admin.request('POST', '/v1/tokens', { body: {}, now: Date.now() - 10 * 60_000 }))).code).toBe('STALE_REQUEST');
    // Replay: the same signed request twice.
    const body = JSON.stringify({ uses: 1 });
    const headers = { ...signRequest(adminIdentity, 'POST', '/v1/tokens', body), 'content-type': 'application/json' };
    expect((await fetch(`${server.url}/v1/tokens`, { method: 'POST', headers, body })).status).toBe(201);
    const replayed = await fetch(`${server.url}/v1/tokens`, { method: 'POST', headers, body });
    expect(replayed.status).toBe(401);
    expect(((await replayed.json()) as { error: { code: string } }).error.code).toBe('REPLAYED_NONCE');
    // A body changed after signing.
    const tampered = await fetch(`${server.url}/v1/tokens`, { method: 'POST', headers: { ...signRequest(adminIdentity, 'POST', '/v1/tokens', body), 'content-type': 'application/json' }, body: JSON.stringify({ uses: 9 }) });
    expect(tampered.status).toBe(401);
    // A viewer may read but not write.
    const viewer = Identity.generate();
    await admin.call('keys.add', { keyId: viewer.keyId, role: 'viewer', label: 'auditor' });
    const asViewer = new CoordinatorHttpClient(server.url, viewer);
    expect((await asViewer.call('audit.verify')).ok).toBe(true);
    const forbidden = await refusal(asViewer.post('/v1/tokens', {}));
    expect([forbidden.status, forbidden.code]).toEqual([403, 'FORBIDDEN']);
    expect(coordinator.lastSeq).toBe(before + 2); // the one accepted token and the viewer key
    expect(logLines.length - logged).toBe(6);
    expect(logLines.slice(logged).join('\n')).toMatch(/REPLAYED_NONCE/);
  });

  it('refuses malformed JSON, unknown fields, bad values and oversized bodies with clear 4xx', async () => {
    const raw = async (body: string) => {
      const headers = { ...signRequest(adminIdentity, 'POST', '/v1/tokens', body), 'content-type': 'application/json' };
      const response = await fetch(`${server.url}/v1/tokens`, { method: 'POST', headers, body });
      return { status: response.status, error: ((await response.json()) as { error: { code: string; message: string } }).error };
    };
    expect(await raw('{nope')).toMatchObject({ status: 400, error: { code: 'BAD_JSON' } });
    expect(await raw('{"uses": 1, "colour": "blue"}')).toMatchObject({ status: 400, error: { code: 'INVALID', message: expect.stringMatching(/colour/) } });
    expect(await raw('{"uses": -3}')).toMatchObject({ status: 400, error: { code: 'INVALID', message: expect.stringMatching(/^uses:/) } });
    expect(await raw(JSON.stringify({ label: 'x'.repeat(2 * 1024 * 1024) }))).toMatchObject({ status: 413, error: { code: 'BODY_TOO_LARGE' } });
    expect((await refusal(admin.get('/v1/agents/not-a-key'))).status).toBe(400);
    expect((await refusal(admin.get(`/v1/agents/${'a'.repeat(64)}`))).code).toBe('NOT_FOUND');
  });
});

describe('enrollment, facts, configs', () => {
  const agent = Identity.generate();
  const agentClient = () => new CoordinatorHttpClient(server.url, agent);
  const facts = { system: 'aarch64-linux', hostname: 'barn-3-gw', cpus: 4, labels: { site: 'barn-3' } };

  it('enrolls with a token, waits for approval, then reports facts', async () => {
    const { token } = await admin.call('tokens.create', { uses: 1, labels: { fleet: 'edge' } });
    expect((await refusal(agentClient().post('/v1/enroll', { token: `${token.slice(0, 17)}${'x'.repeat(32)}`, name: 'gw', facts }))).code).toBe('BAD_TOKEN');
    expect(await agentClient().call('enroll', { token, name: 'gw', type: 'gateway', facts })).toMatchObject({ agentId: agent.keyId, status: 'enrolling' });
    expect((await refusal(new CoordinatorHttpClient(server.url, Identity.generate()).post('/v1/enroll', { token, name: 'other', facts }))).message).toMatch(/no uses left/);
    expect((await refusal(agentClient().get('/v1/agent/desired'))).code).toBe('NOT_APPROVED');
    expect((await agentClient().call('agents.show', { agentId: agent.keyId })).status).toBe('enrolling');
    await admin.call('agents.approve', { agentId: agent.keyId });
    expect(await agentClient().call('agent.facts', { facts })).toEqual({ changed: false });
    expect(await agentClient().call('agent.facts', { facts: { ...facts, cpus: 8 } })).toEqual({ changed: true });
    const history = await admin.call('agents.facts', { agentId: agent.keyId, history: '1' });
    expect(history.revisions.map((r) => [r.revision, r.facts.cpus])).toEqual([[1, 4], [2, 8]]);
    const found = await admin.call('agents.list', { where: ['system=aarch64-linux', 'labels.fleet=edge'] });
    expect(found.agents.map((a) => a.id)).toEqual([agent.keyId]);
    // Labels are the token's (the operator's); what the agent reports under facts.labels stays a fact.
    expect(found.agents[0]!.labels).toEqual({ fleet: 'edge' });
    expect((await admin.call('agents.list', { where: 'labels.site=barn-3' })).agents).toEqual([]);
    expect((await admin.call('agents.list', { where: 'facts.labels.site=barn-3' })).agents.map((a) => a.id)).toEqual([agent.keyId]);
    expect((await refusal(agentClient().get(`/v1/agents/${adminIdentity.keyId}`))).code).toBe('FORBIDDEN');
  });

  function signedConfig(parents: string[], target: string, message: string) {
    const body = {
      graph: 'edge',
      parents: parents.map(asConfigId),
      targets: { 'aarch64-linux': asStorePath(target) },
      activation: { command: 'activate', environment: {}, timeoutSeconds: 60 },
      health: null,
      message,
      author: adminIdentity.keyId,
      hlc: formatHlc({ wall: Date.now(), counter: 0, node: 'cli' }),
    };
    return { body, signature: Buffer.from(adminIdentity.sign(configSigningMessage(configId(body)))).toString('base64') };
  }

  it('submits configs with optimistic concurrency, assigns, reports and rolls back', async () => {
    const missing = '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-not-pushed';
    expect((await refusal(admin.post('/v1/graphs/edge/configs', signedConfig([], missing, 'nope')))).code).toBe('MISSING_STORE_PATH');
    const first = await admin.call('graphs.submit', { graph: 'edge', ...signedConfig([], storePath, 'first') });
    const second = await admin.call('graphs.submit', { graph: 'edge', ...signedConfig([first.configId], storePath, 'second') });
    const stale = await refusal(admin.post('/v1/graphs/edge/configs', signedConfig([first.configId], storePath, 'stale')));
    expect(stale.code).toBe('HEAD_MOVED');
    expect(stale.message).toContain(second.configId);
    expect(stale.message).toContain(first.configId);
    const forced = await admin.call('graphs.submit', { graph: 'edge', ...signedConfig([first.configId], storePath, 'forced'), force: true });
    expect(forced.forced).toBe(true);
    const badSignature = { ...signedConfig([], storePath, 'x'), signature: Buffer.alloc(64).toString('base64') };
    expect((await refusal(admin.post('/v1/graphs/edge/configs', badSignature))).code).toBe('BAD_SIGNATURE');

    await admin.call('agents.assign', { agentId: agent.keyId, graph: 'edge' });
    const desired = await agentClient().call('agent.desired');
    const head = (await admin.call('graphs.show', { graph: 'edge' })).head;
    expect(desired.configId).toBe(head);
    expect(desired.config?.targets['aarch64-linux']).toBe(storePath);
    await agentClient().call('agent.status', { configId: head, phase: 'active', error: null });
    expect((await admin.call('configs.show', { configId: head })).summary).toEqual({ succeeded: 1, failed: 0, pending: 0, unreported: 0 });
    const rolledBack = await admin.call('graphs.rollback', { graph: 'edge' });
    expect(rolledBack.to).toBe(first.configId);
    expect((await admin.call('graphs.show', { graph: 'edge' })).head).toBe(first.configId);
  });

  it('refuses a revoked agent everywhere', async () => {
    await admin.call('agents.revoke', { agentId: agent.keyId });
    expect((await refusal(agentClient().get('/v1/agent/desired'))).code).toBe('REVOKED');
    expect((await refusal(agentClient().post('/v1/agent/facts', { facts }))).code).toBe('REVOKED');
  });

  it('exports an audit log that verifies offline with only the public key', async () => {
    const response = await admin.send('GET', '/v1/audit/export');
    const parsed = parseAuditExport(await response.text());
    expect(parsed.events.length).toBe(coordinator.lastSeq);
    expect(verifyAuditExport(parsed, coordinator.identity.publicKey)).toMatchObject({ ok: true, lastCheckpoint: { seq: coordinator.lastSeq } });
    expect(verifyAuditExport(parsed, Identity.generate().publicKey).ok).toBe(false);
    const events = await admin.call('audit.events', { action: 'agent.enroll' });
    expect(events.events.map((e) => e.action)).toEqual(['agent.enroll']);
  });
});
