// Hostile input against every route of the coordinator's HTTP API
// (coordinator/api/http.ts ROUTES, plus /v1/agent/watch,
// /v1/relay/prefetch and /v1/audit/export), on a real socket on 127.0.0.1, with requests a
// well-behaved client never sends: unsigned, signed by strangers, by every
// role below the route's access, stale, replayed, tampered; bodies that are
// not JSON objects, over the limit (declared, or chunked without a length),
// with unknown fields or oversized strings; traversal in route parameters;
// and enrollment with bad, used-up, expired and revoked tokens. Each case
// asserts the exact status and error code, and that nothing was audited or
// became visible (the log's head, every state table, the castore's store
// paths). Issue 16, the systematic part of the hostile suite.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Access } from '../coordinator/api/actors.js';
import { OPERATIONS, type OperationName } from '../coordinator/api/operations.js';
import { API_ROUTES, API_STREAMS } from '../protocol/api/routes.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { addKey, revokeKey } from '../coordinator/domain/commands.js';
import type { Role } from '../coordinator/domain/events.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { ErrorCodeSchema, httpStatusOf, isSentErrorCode } from '../protocol/errors.js';
import { Identity } from '../protocol/identity.js';
import { MAX_REQUEST_SKEW_MS } from '../protocol/request-signing.js';
import { signedConfig } from './data-plane-fixture.js';
import { addStorePath, bootstrap, coordinatorActor } from './fleet-simulator.js';
import { rawRequest, signedHeaders, visibleState, type RawResponse } from './hostile-http.js';

const MiB = 1024 * 1024;
/** The API's body limit (HttpApiOptions.maxBodyBytes default). */
const MAX_BODY = MiB;

let dir: string;
let coordinator: Coordinator;
let server: RunningServer;
/** The coordinator's clock runs `skew` ms ahead of the wall clock (expired tokens without waiting a day). */
let skew = 0;
const now = (): number => Date.now() + skew;
const log: string[] = [];

let admin: Identity;
const operator = Identity.generate();
const pusher = Identity.generate();
const viewer = Identity.generate();
const revokedKey = Identity.generate();
const stranger = Identity.generate();
/** An enrolled agent (the one acting), another enrolled agent (whose state it must not read), one waiting for approval, one revoked. */
const agentA = Identity.generate();
const agentB = Identity.generate();
const pendingAgent = Identity.generate();
const revokedAgent = Identity.generate();
/** An enrolled site relay (role relay). */
const relay = Identity.generate();
const RELAY_FP = 'ab'.repeat(32);
let tokenId: string;
let configId: string;
let submission: ReturnType<typeof signedConfig>;

/** The actor of each role that the tables use. */
const ROLE_KEYS = (): Record<Role, Identity> => ({ admin, operator, pusher, viewer, agent: agentA, relay });

interface Call {
  as?: Identity;
  body?: Buffer | string;
  /** Sign at this time instead of the coordinator's now. */
  at?: number;
  headers?: Record<string, string>;
}

/** A request signed (when `as` is given) over the path as the server will see it, sent exactly as written. */
function call(method: string, rawPath: string, options: Call = {}): Promise<RawResponse> {
  const normalized = new URL(rawPath, 'http://x');
  const headers: Record<string, string> = { ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers };
  if (options.as) Object.assign(headers, signedHeaders(options.as, method, normalized.pathname + normalized.search, options.body, options.at ?? now()), options.headers);
  return rawRequest(server.url, { method, path: rawPath, headers, ...(options.body !== undefined ? { body: options.body } : {}) });
}

/** Every error answer in this file, for the check that each code is the enum's, with its status. */
const refusals: RawResponse[] = [];

/** Sends `send()`, asserts the answer's status and code, and that nothing was audited or became visible. */
async function expectRefused(send: () => Promise<RawResponse>, status: number, code: string, message?: RegExp): Promise<RawResponse> {
  const before = visibleState(coordinator);
  const response = await send();
  if (response.status >= 400) refusals.push(response);
  expect({ status: response.status, code: response.error?.code }, response.body.toString('utf8').slice(0, 300)).toEqual({ status, code });
  if (message) expect(response.error!.message).toMatch(message);
  expect(visibleState(coordinator)).toBe(before);
  return response;
}

async function ok(method: string, rawPath: string, options: Call): Promise<unknown> {
  const response = await call(method, rawPath, options);
  expect(response.status, response.body.toString('utf8')).toBeLessThan(300);
  return JSON.parse(response.body.toString('utf8'));
}

async function newToken(body: Record<string, unknown> = { uses: 1, autoApprove: true }): Promise<{ token: string; tokenId: string }> {
  return (await ok('POST', '/v1/tokens', { as: admin, body: JSON.stringify(body) })) as { token: string; tokenId: string };
}

async function enroll(agent: Identity, token: string): Promise<void> {
  await ok('POST', '/v1/enroll', { as: agent, body: JSON.stringify({ token, name: `agent-${agent.keyId.slice(0, 6)}`, facts: { system: 'x86_64-linux', hostname: 'h' } }) });
}

interface Route {
  method: 'GET' | 'POST';
  /** With its parameters filled in with things that exist. */
  path: string;
  /** The template, as in ROUTES (`:agentId`…), for traversal cases. */
  template: string;
  op: OperationName | 'watch' | 'prefetch' | 'export';
  /** A body the route accepts from an allowed caller (POST routes). */
  body?: Record<string, unknown>;
}

/** Every route of coordinator/api/http.ts, parameters filled in. The first test checks it covers OPERATIONS. */
function routes(): Route[] {
  const params: Record<string, string> = { agentId: agentB.keyId, keyId: viewer.keyId, tokenId, graph: 'web', configId, alertId: '0123456789abcdef', relayId: relay.keyId, name: 'standing' };
  const route = (method: Route['method'], template: string, op: Route['op'], body?: Record<string, unknown>): Route => ({
    method,
    template,
    path: template.replace(/:([A-Za-z]+)/g, (_, name: string) => params[name]!),
    op,
    ...(body ? { body } : {}),
  });
  return [
    route('GET', '/v1/info', 'info'),
    route('POST', '/v1/enroll', 'enroll', { token: 'ffffffffffffffff.AAAAAAAAAAAAAAAAAAAAAAAA', name: 'x', facts: { system: 'x86_64-linux', hostname: 'h' } }),
    route('POST', '/v1/keys', 'keys.add', { keyId: Identity.generate().keyId, role: 'viewer' }),
    route('GET', '/v1/keys', 'keys.list'),
    route('POST', '/v1/keys/:keyId/revoke', 'keys.revoke', {}),
    route('POST', '/v1/tokens', 'tokens.create', { uses: 1 }),
    route('GET', '/v1/tokens', 'tokens.list'),
    route('POST', '/v1/tokens/:tokenId/revoke', 'tokens.revoke', {}),
    route('GET', '/v1/agents', 'agents.list'),
    route('GET', '/v1/agents/:agentId', 'agents.show'),
    route('GET', '/v1/agents/:agentId/facts', 'agents.facts'),
    route('POST', '/v1/agents/:agentId/approve', 'agents.approve', {}),
    route('POST', '/v1/agents/:agentId/reject', 'agents.reject', {}),
    route('POST', '/v1/agents/:agentId/revoke', 'agents.revoke', {}),
    route('POST', '/v1/agents/:agentId/assign', 'agents.assign', { graph: 'other' }),
    route('POST', '/v1/agents/:agentId/pin', 'agents.pin', { configId }),
    route('POST', '/v1/agents/:agentId/retry', 'agents.retry', {}),
    route('POST', '/v1/agents/:agentId/rules', 'agents.follow-rules', {}),
    route('POST', '/v1/agents/label', 'agents.label', { agentIds: [agentB.keyId], set: { site: 'hostile' } }),
    route('GET', '/v1/rules', 'rules.list'),
    route('POST', '/v1/rules', 'rules.add', { name: 'hostile', where: ['labels.site=x*'], follow: 'web' }),
    route('POST', '/v1/rules/:name/remove', 'rules.remove', {}),
    route('POST', '/v1/rules/:name/move', 'rules.move', { position: 0 }),
    route('POST', '/v1/agent/facts', 'agent.facts', { facts: { system: 'x86_64-linux', hostname: 'changed' } }),
    route('POST', '/v1/agent/status', 'agent.status', { configId: null, phase: 'failed' }),
    route('GET', '/v1/agent/desired', 'agent.desired'),
    route('POST', '/v1/agent/health', 'agent.health', { configId, health: 'degraded', reason: 'x' }),
    route('POST', '/v1/agent/activity', 'agent.activity', { phase: 'idle', configId: null, bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0, events: [] }),
    route('GET', '/v1/graphs', 'graphs.list'),
    route('GET', '/v1/graphs/:graph', 'graphs.show'),
    route('POST', '/v1/graphs/:graph/configs', 'graphs.submit', submission as unknown as Record<string, unknown>),
    route('POST', '/v1/graphs/:graph/rollback', 'graphs.rollback', {}),
    route('POST', '/v1/graphs/:graph/rollout/policy', 'rollouts.policy', { policy: { batches: [{ agents: 1 }, { percent: 100 }], pauseSeconds: 0, maxFailures: { count: 0 } } }),
    route('GET', '/v1/graphs/:graph/rollout', 'rollouts.show'),
    route('POST', '/v1/graphs/:graph/rollout/pause', 'rollouts.pause', {}),
    route('POST', '/v1/graphs/:graph/rollout/resume', 'rollouts.resume', {}),
    route('POST', '/v1/graphs/:graph/rollout/abort', 'rollouts.abort', {}),
    route('GET', '/v1/configs/:configId', 'configs.show'),
    route('GET', '/v1/configs/:configId/diff', 'configs.diff'),
    route('POST', '/v1/alerts', 'alerts.add', { url: 'https://hooks.example.com/x', on: ['offline'] }),
    route('GET', '/v1/alerts', 'alerts.list'),
    route('POST', '/v1/alerts/:alertId/remove', 'alerts.remove', {}),
    route('POST', '/v1/relays/enroll', 'relays.enroll', { token: 'ffffffffffffffff.AAAAAAAAAAAAAAAAAAAAAAAA', name: 'r', url: 'https://127.0.0.1:9', fingerprint: RELAY_FP }),
    route('GET', '/v1/relays', 'relays.list'),
    route('POST', '/v1/relays/:relayId/assign', 'relays.assign', { where: ['labels.site=x'] }),
    route('POST', '/v1/relays/:relayId/upstream', 'relays.upstream', { upstream: null }),
    route('POST', '/v1/relays/:relayId/revoke', 'relays.revoke', {}),
    route('GET', '/v1/audit/events', 'audit.events'),
    route('GET', '/v1/audit/verify', 'audit.verify'),
    route('POST', '/v1/gc', 'gc', { dryRun: true }),
    route('POST', '/v1/secrets/:name', 'secrets.set', { ciphertext: Buffer.from('age-encryption.org/v1\n-> X25519 hostile\n').toString('base64'), recipients: [agentB.keyId], selector: { agents: [agentB.keyId] } }),
    route('GET', '/v1/secrets', 'secrets.list'),
    route('GET', '/v1/params', 'params.list'),
    route('POST', '/v1/params', 'params.set', { layer: { graph: 'web' }, values: { UPSTREAM: 'hostile' } }),
    route('POST', '/v1/params/unset', 'params.unset', { layer: { graph: 'web' }, keys: ['UPSTREAM'] }),
    route('GET', '/v1/secrets/:name', 'secrets.show'),
    route('POST', '/v1/secrets/:name/remove', 'secrets.remove', {}),
    route('GET', '/v1/agent/watch?wait=0', 'watch'),
    route('GET', '/v1/relay/prefetch?wait=0', 'prefetch'),
    route('GET', '/v1/audit/export', 'export'),
  ];
}

function accessOf(route: Route): Access {
  if (route.op === 'watch') return API_ROUTES['agent.watch'].access;
  if (route.op === 'prefetch') return API_ROUTES['relay.prefetch'].access;
  if (route.op === 'export') return API_STREAMS['audit.export'].access;
  return API_ROUTES[route.op].access;
}

const signed = (route: Route): boolean => accessOf(route) !== 'public';
/** A caller the route admits (for cases about what comes after authentication). */
function allowedCaller(route: Route): Identity {
  const access = accessOf(route);
  if (access === 'self-signed') return Identity.generate();
  if (access === 'public') return admin;
  return ROLE_KEYS()[(access as readonly Role[]).includes('admin') ? 'admin' : (access as readonly Role[])[0]!];
}
const bodyOf = (route: Route): string | undefined => (route.method === 'POST' ? JSON.stringify(route.body ?? {}) : undefined);
const label = (route: Route): string => `${route.method} ${route.template}`;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-api-'));
  coordinator = Coordinator.open(dir, { now });
  const boot = bootstrap(coordinator);
  admin = boot.admin;
  const self = coordinatorActor(coordinator);
  for (const [identity, role] of [
    [operator, 'operator'],
    [pusher, 'pusher'],
    [viewer, 'viewer'],
    [revokedKey, 'operator'],
  ] as const) {
    coordinator.record(self, (context) => addKey(context, { keyId: identity.keyId, role, label: role }));
  }
  coordinator.record(boot.adminActor, (context) => revokeKey(context, { keyId: revokedKey.keyId }));
  const storePath = await addStorePath(coordinator, 'app-1');
  server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: (line) => log.push(line) });
  submission = signedConfig(admin, 'web', [], { 'x86_64-linux': storePath });
  configId = ((await ok('POST', '/v1/graphs/web/configs', { as: admin, body: JSON.stringify(submission) })) as { configId: string }).configId;
  // A second submission of the same body would be a CONFLICT, not a role check: the table submits a child.
  submission = signedConfig(admin, 'web', [configId], { 'x86_64-linux': storePath }, 'second');
  const tokens = await newToken({ uses: 3, autoApprove: true });
  tokenId = tokens.tokenId;
  for (const agent of [agentA, agentB, revokedAgent]) await enroll(agent, tokens.token);
  await enroll(pendingAgent, (await newToken({ uses: 1 })).token);
  await ok('POST', '/v1/relays/enroll', { as: relay, body: JSON.stringify({ token: (await newToken({ uses: 1, relay: true })).token, name: 'relay-1', url: 'https://127.0.0.1:9443', fingerprint: RELAY_FP }) });
  await ok('POST', `/v1/agents/${agentA.keyId}/assign`, { as: admin, body: JSON.stringify({ graph: 'web' }) });
  await ok('POST', `/v1/agents/${revokedAgent.keyId}/revoke`, { as: admin, body: '{}' });
  // A standing rule (the :name the rule routes name), and a second one to move it around.
  await ok('POST', '/v1/rules', { as: admin, body: JSON.stringify({ name: 'standing', where: ['labels.site=nowhere'], follow: 'web' }) });
  await ok('POST', '/v1/rules', { as: admin, body: JSON.stringify({ name: 'second', where: ['labels.site=elsewhere'], follow: 'web' }) });
}, 60_000);

afterAll(async () => {
  await server?.close();
  coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the route table', () => {
  it('covers every operation of the API', () => {
    expect(new Set(routes().map((route) => route.op))).toEqual(new Set([...Object.keys(OPERATIONS), 'watch', 'prefetch', 'export']));
  });
});

describe('authentication, on every route', () => {
  it('refuses an unsigned request (401 UNAUTHENTICATED)', async () => {
    for (const route of routes().filter(signed)) {
      await expectRefused(() => call(route.method, route.path, { ...(route.method === 'POST' ? { body: bodyOf(route) } : {}) }), 401, 'UNAUTHENTICATED');
    }
  });

  it('refuses a key the coordinator does not know (401 UNKNOWN_KEY); enrollment is the one route for new keys', async () => {
    for (const route of routes().filter((route) => signed(route) && accessOf(route) !== 'self-signed')) {
      await expectRefused(() => call(route.method, route.path, { as: stranger, body: bodyOf(route) }), 401, 'UNKNOWN_KEY');
    }
  });

  it('refuses a timestamp beyond the allowed skew, past or future (401 STALE_REQUEST)', async () => {
    for (const route of routes().filter(signed)) {
      for (const offset of [-(MAX_REQUEST_SKEW_MS + 60_000), MAX_REQUEST_SKEW_MS + 60_000]) {
        await expectRefused(() => call(route.method, route.path, { as: allowedCaller(route), body: bodyOf(route), at: now() + offset }), 401, 'STALE_REQUEST');
      }
    }
  });

  it('refuses a nonce used before, even by a request that was itself refused (401 REPLAYED_NONCE)', async () => {
    // Enrollment stores no nonce (coordinator/api/http.ts authenticate): its replay is refused by the command, below.
    for (const route of routes().filter((route) => signed(route) && accessOf(route) !== 'self-signed')) {
      // The first request passes authentication and is refused for its input: its nonce is spent all the same.
      const target = route.method === 'POST' ? route.path : `${route.path}${route.path.includes('?') ? '&' : '?'}colour=blue`;
      const body = route.method === 'POST' ? JSON.stringify({ ...route.body, colour: 'blue' }) : undefined;
      const normalized = new URL(target, 'http://x');
      const headers = { ...signedHeaders(allowedCaller(route), route.method, normalized.pathname + normalized.search, body, now()), 'content-type': 'application/json' };
      const first = await rawRequest(server.url, { method: route.method, path: target, headers, ...(body ? { body } : {}) });
      // export takes no input to validate: its first request succeeds (it only reads).
      expect([first.status, first.error?.code], label(route)).toEqual(route.op === 'export' ? [200, undefined] : [400, 'INVALID']);
      await expectRefused(() => rawRequest(server.url, { method: route.method, path: target, headers, ...(body ? { body } : {}) }), 401, 'REPLAYED_NONCE');
    }
  });

  it('refuses a signature over another path, query, method or body, and malformed signature headers (401 UNAUTHENTICATED)', async () => {
    for (const route of routes().filter(signed)) {
      const as = allowedCaller(route);
      const body = bodyOf(route);
      const good = (): Record<string, string> => signedHeaders(as, route.method, route.path, body, now());
      const tampered: [string, () => Promise<RawResponse>][] = [
        ['another path', () => rawRequest(server.url, { method: route.method, path: route.path, headers: signedHeaders(as, route.method, '/v1/info', body, now()), ...(body ? { body } : {}) })],
        ['an added query', () => rawRequest(server.url, { method: route.method, path: `${route.path}${route.path.includes('?') ? '&' : '?'}limit=1`, headers: good(), ...(body ? { body } : {}) })],
        ['another method', () => rawRequest(server.url, { method: route.method, path: route.path, headers: signedHeaders(as, route.method === 'GET' ? 'POST' : 'GET', route.path, body, now()), ...(body ? { body } : {}) })],
        // (GET bodies are not read at all: the server hands hono a GET without one.)
        ...(route.method === 'POST'
          ? [['another body', () => rawRequest(server.url, { method: route.method, path: route.path, headers: good(), body: JSON.stringify({ ...route.body, extra: 1 }) })] as [string, () => Promise<RawResponse>]]
          : []),
        ['a timestamp that is not a number', () => rawRequest(server.url, { method: route.method, path: route.path, headers: { ...good(), 'x-ferry-timestamp': 'soon' }, ...(body ? { body } : {}) })],
        ['a short nonce', () => rawRequest(server.url, { method: route.method, path: route.path, headers: { ...good(), 'x-ferry-nonce': 'abc' }, ...(body ? { body } : {}) })],
        ['a key id that is not one', () => rawRequest(server.url, { method: route.method, path: route.path, headers: { ...good(), 'x-ferry-key': '../../etc/passwd' }, ...(body ? { body } : {}) })],
        ['a signature that is not base64', () => rawRequest(server.url, { method: route.method, path: route.path, headers: { ...good(), 'x-ferry-signature': '!'.repeat(88) }, ...(body ? { body } : {}) })],
        ['a signature header of 15 KB', () => rawRequest(server.url, { method: route.method, path: route.path, headers: { ...good(), 'x-ferry-signature': 'A'.repeat(15_000) }, ...(body ? { body } : {}) })],
      ];
      for (const [what, send] of tampered) {
        const response = await expectRefused(send, 401, 'UNAUTHENTICATED');
        expect(response.error!.message, `${label(route)}: ${what}`).toBeTruthy();
      }
    }
  });

  it('refuses a revoked key and revoked or unapproved agents (403 REVOKED / NOT_APPROVED)', async () => {
    for (const route of routes().filter((route) => signed(route) && accessOf(route) !== 'self-signed')) {
      await expectRefused(() => call(route.method, route.path, { as: revokedKey, body: bodyOf(route) }), 403, 'REVOKED');
      await expectRefused(() => call(route.method, route.path, { as: revokedAgent, body: bodyOf(route) }), 403, 'REVOKED');
      // An agent waiting for approval may ask about itself (GET /v1/agents/<its id>), nothing else.
      const ownState = route.op === 'agents.show' ? route.path.replace(agentB.keyId, pendingAgent.keyId) : undefined;
      if (ownState) expect((await call('GET', ownState, { as: pendingAgent })).status).toBe(200);
      else await expectRefused(() => call(route.method, route.path, { as: pendingAgent, body: bodyOf(route) }), 403, 'NOT_APPROVED');
    }
  });
});

describe('authorization: every role below the route’s access', () => {
  it('refuses each role the route does not admit, and an agent reading another agent (403 FORBIDDEN)', async () => {
    let cases = 0;
    for (const route of routes().filter((route) => signed(route) && accessOf(route) !== 'self-signed')) {
      const access = accessOf(route) as readonly Role[];
      for (const [role, identity] of Object.entries(ROLE_KEYS()) as [Role, Identity][]) {
        // agents.show and agents.facts admit agents, for their own state only: agentA asks about agentB.
        const forbidden = !access.includes(role) || (role === 'agent' && route.path.includes(agentB.keyId));
        if (!forbidden) continue;
        cases++;
        await expectRefused(() => call(route.method, route.path, { as: identity, body: bodyOf(route) }), 403, 'FORBIDDEN');
      }
    }
    expect(cases).toBeGreaterThan(40);
  });

  it('keeps relay and agent tokens apart: a relay cannot enroll with an agent token, nor an agent with a relay token (401 BAD_TOKEN)', async () => {
    const agentToken = await newToken({ uses: 1, autoApprove: true });
    const relayToken = await newToken({ uses: 1, relay: true });
    const relayBody = (token: string) => JSON.stringify({ token, name: 'r2', url: 'https://127.0.0.1:9444', fingerprint: RELAY_FP });
    await expectRefused(() => call('POST', '/v1/relays/enroll', { as: Identity.generate(), body: relayBody(agentToken.token) }), 401, 'BAD_TOKEN', /enrolls agents, not relays/);
    await expectRefused(
      () => call('POST', '/v1/enroll', { as: Identity.generate(), body: JSON.stringify({ token: relayToken.token, name: 'a', facts: { system: 'x86_64-linux', hostname: 'h' } }) }),
      401,
      'BAD_TOKEN',
      /enrolls relays, not agents/,
    );
    // An enrolled agent's key cannot become a relay, nor a relay's an agent.
    await expectRefused(() => call('POST', '/v1/relays/enroll', { as: agentB, body: relayBody(relayToken.token) }), 409, 'CONFLICT');
    await expectRefused(() => call('POST', '/v1/enroll', { as: relay, body: JSON.stringify({ token: agentToken.token, name: 'a', facts: { system: 'x86_64-linux', hostname: 'h' } }) }), 409, 'CONFLICT');
    // A relay is assigned by operator labels, never by what agents report (facts) or presence.
    for (const where of ['facts.site=x', 'presence=online']) {
      await expectRefused(() => call('POST', `/v1/relays/${relay.keyId}/assign`, { as: admin, body: JSON.stringify({ where: [where] }) }), 400, 'INVALID');
    }
  });

  it('lets no agent move itself: an agent cannot approve, assign, pin or revoke itself or another (403 FORBIDDEN)', async () => {
    for (const action of ['approve', 'assign', 'pin', 'revoke']) {
      const body = action === 'assign' ? { graph: 'other' } : action === 'pin' ? { configId } : {};
      for (const target of [agentA, pendingAgent]) {
        await expectRefused(() => call('POST', `/v1/agents/${target.keyId}/${action}`, { as: agentA, body: JSON.stringify(body) }), 403, 'FORBIDDEN');
      }
    }
  });
});

describe('request bodies, on every route', () => {
  it('refuses a body that is not a JSON object, or not UTF-8 (400 BAD_JSON)', async () => {
    const bodies: [string, Buffer][] = [
      ['not JSON', Buffer.from('{nope')],
      ['an array', Buffer.from('[]')],
      ['a string', Buffer.from('"admin"')],
      ['null', Buffer.from('null')],
      ['a number', Buffer.from('42')],
      ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
      ['JSON followed by a NUL', Buffer.from('{"a":1}\u0000')],
    ];
    for (const route of routes().filter((route) => route.method === 'POST')) {
      for (const [what, body] of bodies) {
        const response = await expectRefused(() => call(route.method, route.path, { as: allowedCaller(route), body }), 400, 'BAD_JSON');
        expect(response.error!.message, `${label(route)}: ${what}`).toMatch(/JSON/);
      }
    }
  });

  it('refuses a body over the limit before authenticating it: declared, or chunked without a length (413 BODY_TOO_LARGE)', async () => {
    for (const route of routes()) {
      // Declared: answered at once, though the body never comes.
      await expectRefused(() => rawRequest(server.url, { method: route.method, path: route.path, declaredLength: MAX_BODY + 1, body: '{' }), 413, 'BODY_TOO_LARGE');
      await expectRefused(() => rawRequest(server.url, { method: route.method, path: route.path, declaredLength: 2 ** 53, body: '{' }), 413, 'BODY_TOO_LARGE');
      // Chunked: answered once the limit is crossed, not after reading 64 MiB. A GET's body is never
      // read (the server hands hono a GET without one): it gets the answer it would get without one.
      const [status, code] = route.method === 'POST' ? [413, 'BODY_TOO_LARGE'] : accessOf(route) === 'public' ? [200, undefined] : [401, 'UNAUTHENTICATED'];
      const chunked = await expectRefused(() => rawRequest(server.url, { method: route.method, path: route.path, chunked: 64 * MiB }), status, code as string);
      expect(chunked.sent, label(route)).toBeLessThan(16 * MiB);
    }
  });

  it('refuses unknown fields, in the body or the query, naming them (400 INVALID)', async () => {
    for (const route of routes().filter((route) => route.op !== 'export')) {
      const as = accessOf(route) === 'public' ? undefined : allowedCaller(route);
      const send =
        route.method === 'POST'
          ? () => call('POST', route.path, { ...(as ? { as } : {}), body: JSON.stringify({ ...route.body, colour: 'blue' }) })
          : () => call('GET', `${route.path}${route.path.includes('?') ? '&' : '?'}colour=blue`, as ? { as } : {});
      await expectRefused(send, 400, 'INVALID', /colour/);
    }
  });

  it('refuses oversized and out-of-range fields, naming the field (400 INVALID)', async () => {
    const long = (n: number): string => 'x'.repeat(n);
    const facts = { system: 'x86_64-linux', hostname: 'h' };
    const { token } = await newToken();
    const config = (change: (body: Record<string, any>) => void): Record<string, unknown> => {
      const copy = JSON.parse(JSON.stringify(submission)) as { body: Record<string, any>; signature: string };
      change(copy.body);
      return copy;
    };
    const cases: [as: Identity, method: 'GET' | 'POST', path: string, body: Record<string, unknown> | undefined, field: string][] = [
      [admin, 'POST', '/v1/keys', { keyId: Identity.generate().keyId, role: 'viewer', label: long(257) }, 'label'],
      [admin, 'POST', '/v1/keys', { keyId: Identity.generate().keyId, role: 'agent' }, 'role'],
      [admin, 'POST', '/v1/keys', { keyId: 'A'.repeat(64), role: 'viewer' }, 'keyId'],
      [admin, 'POST', '/v1/tokens', { label: long(257) }, 'label'],
      [admin, 'POST', '/v1/tokens', { labels: { site: long(257) } }, 'labels.site'],
      [admin, 'POST', '/v1/tokens', { labels: { [long(64)]: 'x' } }, 'labels'],
      [admin, 'POST', '/v1/tokens', { labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) }, 'labels'],
      [admin, 'POST', '/v1/tokens', { uses: 1_000_001 }, 'uses'],
      [admin, 'POST', '/v1/tokens', { ttlSeconds: 1e12 }, 'ttlSeconds'],
      [Identity.generate(), 'POST', '/v1/enroll', { token, name: long(254), facts }, 'name'],
      [Identity.generate(), 'POST', '/v1/enroll', { token, name: 'n', type: long(65), facts }, 'type'],
      [Identity.generate(), 'POST', '/v1/enroll', { token, name: 'n', facts: { ...facts, hostname: long(254) } }, 'facts.hostname'],
      [Identity.generate(), 'POST', '/v1/enroll', { token, name: 'n', facts: { ...facts, blob: long(70_000) } }, 'facts'],
      [agentA, 'POST', '/v1/agent/facts', { facts: { ...facts, os: long(257) } }, 'facts.os'],
      [agentA, 'POST', '/v1/agent/facts', { facts: { ...facts, addresses: Array.from({ length: 65 }, () => '10.0.0.1') } }, 'facts.addresses'],
      [agentA, 'POST', '/v1/agent/status', { configId: null, phase: 'active', error: long(8193) }, 'error'],
      [agentA, 'POST', '/v1/agent/status', { configId: null, phase: long(100_000) }, 'phase'],
      [agentA, 'POST', '/v1/agent/activity', { phase: long(33), configId: null, bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0, events: [] }, 'phase'],
      [
        agentA,
        'POST',
        '/v1/agent/activity',
        { phase: 'idle', configId: null, bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0, events: Array.from({ length: 51 }, () => ({ at: 0, kind: 'k', message: 'm' })) },
        'events',
      ],
      [
        agentA,
        'POST',
        '/v1/agent/activity',
        { phase: 'idle', configId: null, bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0, events: [{ at: 0, kind: 'k', message: long(2049) }] },
        'events.0.message',
      ],
      [admin, 'POST', '/v1/graphs/web/configs', config((body) => (body.message = long(4097))), 'body.message'],
      [admin, 'POST', '/v1/graphs/web/configs', config((body) => (body.activation.command = long(1025))), 'body.activation.command'],
      [admin, 'POST', '/v1/graphs/web/configs', config((body) => (body.activation.environment = { PATH: long(4097) })), 'body.activation.environment.PATH'],
      [admin, 'POST', '/v1/graphs/web/configs', config((body) => (body.parents = Array.from({ length: 17 }, () => configId))), 'body.parents'],
      [admin, 'POST', '/v1/graphs/web/configs', { ...submission, signature: long(129) }, 'signature'],
      [admin, 'POST', `/v1/agents/${agentB.keyId}/assign`, { graph: long(64) }, 'graph'],
      [admin, 'GET', `/v1/audit/events?actor=${long(129)}`, undefined, 'actor'],
      [admin, 'GET', `/v1/audit/events?subject=${long(257)}`, undefined, 'subject'],
      [admin, 'GET', '/v1/audit/events?after=-1', undefined, 'after'],
      [admin, 'GET', `/v1/keys?after=${long(129)}`, undefined, 'after'],
      [admin, 'GET', '/v1/agents?limit=1001', undefined, 'limit'],
      [admin, 'GET', '/v1/agents?limit=abc', undefined, 'limit'],
      [admin, 'GET', '/v1/agents?limit=1e400', undefined, 'limit'],
      [admin, 'GET', '/v1/graphs/web?limit=0', undefined, 'limit'],
      [admin, 'GET', `/v1/agents/${agentB.keyId}/facts?history=maybe`, undefined, 'history'],
    ];
    for (const [as, method, target, body, field] of cases) {
      const escaped = field.replace(/\./g, '\\.');
      await expectRefused(() => call(method, target, { as, ...(body ? { body: JSON.stringify(body) } : {}) }), 400, 'INVALID', new RegExp(`^${escaped}\\b`));
    }
  });

  it('refuses a --where clause that is not key=value, however long (400 INVALID)', async () => {
    // A query is bounded by the HTTP header limit (16 KiB): beyond it, Node refuses the request itself.
    await expectRefused(() => call('GET', `/v1/agents?where=${'x'.repeat(8000)}`, { as: admin }), 400, 'INVALID', /--where/);
    await expectRefused(() => call('GET', `/v1/agents?${Array.from({ length: 500 }, (_, i) => `where=k${i}`).join('&')}`, { as: admin }), 400, 'INVALID', /--where/);
    const overlong = await call('GET', `/v1/agents?where=${'x'.repeat(20_000)}`, { as: admin });
    expect(overlong.status).toBe(431);
  });
});

describe('route parameters', () => {
  it('answers traversal, NUL, bad escapes and overlong parameters with 400 or 404, never a 500, on every route with one', async () => {
    const hostile = ['..%2F..%2Fkeys', '..%2f..%2f..%2fetc%2fpasswd', '%2e%2e', '..', '.', '%00', 'a%00b', '%ff%fe', '%', '%E2%80%AE', 'x'.repeat(4096), `${'a'.repeat(64)}%2F..`];
    let cases = 0;
    for (const route of routes().filter((route) => route.template.includes('/:'))) {
      for (const value of hostile) {
        const target = route.template.replace(/:([A-Za-z]+)/, value).replace(/:([A-Za-z]+)/g, '');
        const before = visibleState(coordinator);
        const response = await call(route.method, target, { as: admin, body: bodyOf(route) });
        // The exact code depends on where the request ends up: no route, or a parameter that does not validate.
        expect([[400, 'INVALID'], [404, 'NOT_FOUND']], `${label(route)} with ${value.slice(0, 40)}: ${response.status} ${response.body.toString().slice(0, 200)}`).toContainEqual([
          response.status,
          response.error?.code,
        ]);
        expect(visibleState(coordinator)).toBe(before);
        expect(response.body.toString()).not.toMatch(/root:|INTERNAL/);
        cases++;
      }
    }
    expect(cases).toBeGreaterThan(100);
    expect(log.filter((line) => /internal error/.test(line))).toEqual([]);
  });

  it('answers unknown routes and methods with 404 NOT_FOUND', async () => {
    for (const [method, target] of [
      ['DELETE', '/v1/keys'],
      ['PUT', '/v1/tokens'],
      ['POST', '/v1/info'],
      ['GET', '/v1/enroll'],
      ['GET', '/v1/agents/../../etc/passwd'],
      ['GET', '/v1//keys'],
      ['GET', '/v1/keys/'],
      ['GET', '/%2e%2e/%2e%2e/etc/passwd'],
    ] as const) {
      await expectRefused(() => call(method, target, { as: admin }), 404, 'NOT_FOUND');
    }
  });
});

describe('enrollment', () => {
  const facts = { system: 'x86_64-linux', hostname: 'h' };
  const enrollAs = (agent: Identity, token: string, at?: number) => () =>
    call('POST', '/v1/enroll', { as: agent, body: JSON.stringify({ token, name: 'newcomer', facts }), ...(at !== undefined ? { at } : {}) });

  it('refuses unknown, malformed, wrong-secret, used-up, revoked and expired tokens, spending no use (401 BAD_TOKEN / 400 INVALID)', async () => {
    const single = await newToken({ uses: 1, autoApprove: true });
    await enroll(Identity.generate(), single.token);
    const revoked = await newToken();
    await ok('POST', `/v1/tokens/${revoked.tokenId}/revoke`, { as: admin, body: '{}' });
    const short = await newToken({ uses: 5, ttlSeconds: 60 });
    const spare = await newToken({ uses: 2 });
    const [spareId, spareSecret] = spare.token.split('.') as [string, string];

    await expectRefused(enrollAs(Identity.generate(), `${'0'.repeat(16)}.${'A'.repeat(32)}`), 401, 'BAD_TOKEN', /unknown/);
    await expectRefused(enrollAs(Identity.generate(), `${spareId}.${'A'.repeat(spareSecret.length)}`), 401, 'BAD_TOKEN', /unknown/);
    await expectRefused(enrollAs(Identity.generate(), `${spareId}.${spareSecret}x`), 401, 'BAD_TOKEN', /unknown/);
    await expectRefused(enrollAs(Identity.generate(), single.token), 401, 'BAD_TOKEN', /no uses left/);
    await expectRefused(enrollAs(Identity.generate(), revoked.token), 401, 'BAD_TOKEN', /revoked/);
    for (const malformed of ['', 'nope', `${spareId}.`, `${spareId}.${'A'.repeat(65)}`, `../${spareId}.${spareSecret}`, `${spareId}.${spareSecret}\n`]) {
      await expectRefused(enrollAs(Identity.generate(), malformed), 400, 'INVALID', /^token\b/);
    }
    // Expired: the coordinator's clock moves past the token's ttl (requests are signed on that clock).
    skew += 61_000;
    try {
      await expectRefused(enrollAs(Identity.generate(), short.token), 401, 'BAD_TOKEN', /expired/);
    } finally {
      skew -= 61_000;
    }
    // None of the refusals spent a use.
    expect(coordinator.state.get('tokens', spareId)!.usesLeft).toBe(2);
    expect(coordinator.state.get('tokens', short.tokenId)!.usesLeft).toBe(5);
  });

  it('refuses a second enrollment of the same key, and enrolling an operator’s key, with any token (409 CONFLICT)', async () => {
    const { token } = await newToken({ uses: 5 });
    for (const agent of [agentA, pendingAgent, revokedAgent]) await expectRefused(enrollAs(agent, token), 409, 'CONFLICT', /already/);
    for (const key of [admin, operator, viewer, revokedKey]) await expectRefused(enrollAs(key, token), 409, 'CONFLICT', /not an agent|admin key/);
    expect(coordinator.state.get('tokens', token.split('.')[0]!)!.usesLeft).toBe(5);
  });

  it('refuses a replayed enrollment by the command itself, as http.ts documents (409 CONFLICT), spending no second use', async () => {
    const { token, tokenId: id } = await newToken({ uses: 2, autoApprove: true });
    const body = JSON.stringify({ token, name: 'replayed', facts });
    const headers = { ...signedHeaders(Identity.generate(), 'POST', '/v1/enroll', body, now()), 'content-type': 'application/json' };
    const send = () => rawRequest(server.url, { method: 'POST', path: '/v1/enroll', headers, body });
    expect((await send()).status).toBe(201);
    await expectRefused(send, 409, 'CONFLICT', /already enrolled/);
    expect(coordinator.state.get('tokens', id)!.usesLeft).toBe(1);
  });

  it('refuses an enrollment signed by another key than the one enrolling, or not at all (401 UNAUTHENTICATED)', async () => {
    const { token } = await newToken();
    const body = JSON.stringify({ token, name: 'newcomer', facts });
    const newcomer = Identity.generate();
    const headers = { ...signedHeaders(Identity.generate(), 'POST', '/v1/enroll', body, now()), 'x-ferry-key': newcomer.keyId, 'content-type': 'application/json' };
    await expectRefused(() => rawRequest(server.url, { method: 'POST', path: '/v1/enroll', headers, body }), 401, 'UNAUTHENTICATED');
    await expectRefused(() => call('POST', '/v1/enroll', { body }), 401, 'UNAUTHENTICATED');
  });
});

describe('the error codes', () => {
  it('answered every refusal above with a code of the enum (protocol/errors.ts), and the status the enum gives it', () => {
    expect(refusals.length).toBeGreaterThan(200);
    const answered = new Set(refusals.map((response) => `${response.status} ${response.error?.code}`));
    const expected = new Set(
      refusals.map((response) => {
        const code = ErrorCodeSchema.safeParse(response.error?.code);
        return code.success && isSentErrorCode(code.data) ? `${httpStatusOf(code.data)} ${code.data}` : `(not the enum's) ${response.error?.code}`;
      }),
    );
    expect(answered).toEqual(expected);
  });
});

describe('the log', () => {
  it('recorded every refusal above as a refusal: no internal error, no stack', () => {
    expect(log.filter((line) => /internal error|\n\s+at /.test(line))).toEqual([]);
    expect(log.some((line) => /refused POST \/v1\/tokens: UNAUTHENTICATED/.test(line))).toBe(true);
  });
});
