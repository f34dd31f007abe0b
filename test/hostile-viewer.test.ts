// Hostile input against the audit-log viewer (coordinator/viewer/routes.ts)
// on a real coordinator on 127.0.0.1, and against its routes with a clock
// the test controls (expiry): requests without a session, with forged,
// expired, used or revoked sessions and login links; traversal in asset
// paths; seq and position parameters that are no numbers or too large; and
// sessions trying to write. Each case asserts the exact status and code and
// that nothing was audited or became visible. Issue 16, the systematic part
// of the hostile suite.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { liveLogSource, Viewer } from '../coordinator/viewer/index.js';
import { viewerRoutes } from '../coordinator/viewer/routes.js';
import { MAX_LOGINS_PER_KEY, MAX_SESSIONS_PER_KEY, SESSION_COOKIE, ViewerSessions } from '../coordinator/viewer/sessions.js';
import { VIEWER_ROUTES } from '../protocol/api/viewer-routes.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { encodeHeaderFrame } from '../protocol/framing.js';
import { signRequest } from '../protocol/request-signing.js';
import { startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { bootstrap } from './fleet-simulator.js';
import { rawRequest, visibleState, type RawResponse } from './hostile-http.js';

let test: TestCoordinator;
let viewerKey: Identity;
/** A live viewer session of the viewer key, and one of the admin: `name=value` cookies. */
let viewerCookie: string;
let adminCookie: string;

const get = (target: string, headers: Record<string, string> = {}): Promise<RawResponse> => rawRequest(test.http.url, { method: 'GET', path: target, headers });

/** Sends `send()`, asserts status and code, and that nothing was audited or became visible. */
async function expectRefused(send: () => Promise<RawResponse>, status: number, code: string | undefined, message?: RegExp): Promise<RawResponse> {
  const before = visibleState(test.coordinator);
  const response = await send();
  expect({ status: response.status, code: response.error?.code }, response.body.toString('utf8').slice(0, 300)).toEqual({ status, code });
  if (message) expect(response.error!.message).toMatch(message);
  expect(visibleState(test.coordinator)).toBe(before);
  return response;
}

/** A session for `identity`, through the real login exchange (`ferry audit view`). */
async function login(identity: Identity): Promise<string> {
  const { loginPath } = await new CoordinatorHttpClient(test.http.url, identity).call('viewer.session');
  const response = await get(loginPath);
  expect(response.status).toBe(303);
  const cookie = String(response.headers['set-cookie']);
  // Only for the viewer's path, out of scripts' reach, never sent by other sites.
  expect(cookie).toMatch(/; Path=\/viewer(;|$)/);
  expect(cookie).toMatch(/; HttpOnly/);
  expect(cookie).toMatch(/; SameSite=Strict/);
  return cookie.split(';')[0]!;
}

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  viewerKey = Identity.generate();
  await test.adminClient.call('keys.add', { keyId: viewerKey.keyId, role: 'viewer' });
  viewerCookie = await login(viewerKey);
  adminCookie = await login(test.admin);
}, 60_000);

afterAll(async () => {
  await test?.close();
});

/** Every endpoint of the viewer that needs a caller and takes a session: the described ones (VIEWER_ROUTES), a seq filled in. */
const ENDPOINTS = Object.values(VIEWER_ROUTES)
  .filter((route) => route.session)
  .map((route) => route.path.replace(':seq', '1'));

describe('who may look', () => {
  it('refuses every endpoint without a session (401 UNAUTHENTICATED; the page: 401 and the logged-out page)', async () => {
    for (const endpoint of [...ENDPOINTS, '/viewer/live/stream']) await expectRefused(() => get(endpoint), 401, 'UNAUTHENTICATED');
    for (const page of ['/viewer', '/viewer/', '/viewer/live']) {
      const response = await expectRefused(() => get(page), 401, undefined);
      expect(response.body.toString()).toContain('ferry audit view');
    }
    // The two static assets are public (no state in them), and the same for everyone.
    expect((await get('/viewer/assets/viewer.js')).status).toBe(200);
    expect((await get('/viewer/assets/viewer.css')).status).toBe(200);
    expect((await get('/viewer/assets/live.js')).status).toBe(200);
  });

  it('refuses forged session cookies: random, empty, overlong, the login token itself, another case (401)', async () => {
    const { loginPath } = await new CoordinatorHttpClient(test.http.url, viewerKey).call('viewer.session');
    const loginToken = new URL(loginPath, test.http.url).searchParams.get('token')!;
    const sessionId = viewerCookie.split('=')[1]!;
    const forged = [
      'x',
      '',
      'A'.repeat(43),
      'A'.repeat(8000),
      loginToken,
      sessionId.toUpperCase() === sessionId ? sessionId.toLowerCase() : sessionId.toUpperCase(),
      `${sessionId}x`,
      sessionId.slice(0, -1),
      encodeURIComponent(`${sessionId}\u0000`),
      `"${sessionId}`,
    ];
    for (const value of forged) {
      for (const endpoint of ['/viewer/api/info', '/viewer/api/state', '/viewer/api/live', '/viewer/live/stream']) {
        await expectRefused(() => get(endpoint, { cookie: `${SESSION_COOKIE}=${value}` }), 401, 'UNAUTHENTICATED');
      }
      await expectRefused(() => get('/viewer/', { cookie: `${SESSION_COOKIE}=${value}` }), 401, undefined);
      await expectRefused(() => get('/viewer/live', { cookie: `${SESSION_COOKIE}=${value}` }), 401, undefined);
    }
    // A real session under another cookie name is no session either.
    await expectRefused(() => get('/viewer/api/info', { cookie: `ferry_viewer=${sessionId}` }), 401, 'UNAUTHENTICATED');
    // The genuine one still works (and the login token above was never redeemed).
    expect((await get('/viewer/api/info', { cookie: viewerCookie })).status).toBe(200);
  });

  it('refuses forged, overlong, used and wrong-place login links (401), and minting one without a signed request', async () => {
    const { loginPath } = await new CoordinatorHttpClient(test.http.url, viewerKey).call('viewer.session');
    const token = new URL(loginPath, test.http.url).searchParams.get('token')!;
    expect((await get(loginPath)).status).toBe(303);
    for (const target of [
      loginPath, // used once already
      '/viewer/login',
      '/viewer/login?token=',
      `/viewer/login?token=${'A'.repeat(43)}`,
      `/viewer/login?token=${'A'.repeat(129)}`,
      `/viewer/login?token=${token.slice(0, -1)}`,
      `/viewer/login?token=${encodeURIComponent(viewerCookie.split('=')[1]!)}`, // a session id is no login token
    ]) {
      const response = await expectRefused(() => get(target), 401, undefined);
      expect(response.headers['set-cookie'], target).toBeUndefined();
    }
    // A login link is minted by a signed request only: a session cannot extend itself, nor can anyone else.
    await expectRefused(() => rawRequest(test.http.url, { method: 'POST', path: '/viewer/api/session', headers: { cookie: viewerCookie } }), 401, 'UNAUTHENTICATED');
    await expectRefused(() => rawRequest(test.http.url, { method: 'POST', path: '/viewer/api/session', headers: signRequest(Identity.generate(), 'POST', '/viewer/api/session', undefined) }), 401, 'UNKNOWN_KEY');
    await expectRefused(() => rawRequest(test.http.url, { method: 'POST', path: '/viewer/api/session', headers: signRequest(test.pusher, 'POST', '/viewer/api/session', undefined) }), 403, 'FORBIDDEN');
    await expectRefused(
      () => rawRequest(test.http.url, { method: 'POST', path: '/viewer/api/session', headers: signRequest(viewerKey, 'POST', '/viewer/api/session', undefined, Date.now() - 10 * 60_000) }),
      401,
      'STALE_REQUEST',
    );
    // A signed request's body is bounded (64 KiB) before it is authenticated.
    const big = Buffer.alloc(65 * 1024, 0x20);
    await expectRefused(() => rawRequest(test.http.url, { method: 'POST', path: '/viewer/api/session', headers: signRequest(viewerKey, 'POST', '/viewer/api/session', big), body: big }), 413, 'BODY_TOO_LARGE');
    await expectRefused(() => rawRequest(test.http.url, { method: 'GET', path: '/viewer/api/info', headers: signRequest(viewerKey, 'GET', '/viewer/api/info', undefined), declaredLength: 2 ** 40 }), 413, 'BODY_TOO_LARGE');
  });

  it('validates every input with its route’s schema: a body, query or parameter the description does not allow is 400', async () => {
    const session = (body: string) => () =>
      rawRequest(test.http.url, { method: 'POST', path: '/viewer/api/session', headers: { ...signRequest(viewerKey, 'POST', '/viewer/api/session', body), 'content-type': 'application/json' }, body: Buffer.from(body) });
    await expectRefused(session('{"keyId":"someone else"}'), 400, 'INVALID', /keyId/);
    await expectRefused(session('{"ttl":'), 400, 'BAD_JSON');
    await expectRefused(session('[]'), 400, 'BAD_JSON');
    await expectRefused(session('"{}"'), 400, 'BAD_JSON');
    await expectRefused(session(`{"a":${'['.repeat(100)}${']'.repeat(100)}}`), 400, 'JSON_TOO_DEEP');
    expect((await session('{}')()).status).toBe(201);
    for (const target of ['/viewer/api/events/1?colour=blue', '/viewer/api/info?x=1', '/viewer/api/events?limit=1&limit=2', '/viewer/api/state?at=1&at=2', '/viewer/api/verify?refresh=1&refresh=1']) {
      await expectRefused(() => get(target, { cookie: viewerCookie }), 400, 'INVALID');
    }
  });

  it('ends the sessions of a key revoked after it logged in (401), and logs no one else out', async () => {
    const doomed = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: doomed.keyId, role: 'operator' });
    const cookie = await login(doomed);
    expect((await get('/viewer/api/info', { cookie })).status).toBe(200);
    await test.adminClient.call('keys.revoke', { keyId: doomed.keyId });
    await expectRefused(() => get('/viewer/api/info', { cookie }), 401, 'UNAUTHENTICATED');
    await expectRefused(() => get('/viewer/', { cookie }), 401, undefined);
    expect((await get('/viewer/api/info', { cookie: viewerCookie })).status).toBe(200);
  });
});

describe('expiry and bounds, on the viewer’s routes with a clock the test moves', () => {
  let dir: string;
  let coordinator: Coordinator;
  let clock = Date.now();
  let sessions: ViewerSessions;
  let app: ReturnType<typeof viewerRoutes>;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-viewer-'));
    coordinator = Coordinator.open(dir);
    bootstrap(coordinator);
    sessions = new ViewerSessions({ now: () => clock, loginTtlMs: 60_000, sessionTtlMs: 3_600_000 });
    app = viewerRoutes({ viewer: new Viewer(liveLogSource(coordinator)), sessions, log: () => undefined });
  });
  afterAll(() => {
    coordinator?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const request = (target: string, cookie?: string) => app.request(`http://viewer${target}`, cookie ? { headers: { cookie } } : {});
  const principal = { keyId: 'a'.repeat(64), role: 'viewer' };

  it('refuses a login link past its ttl, and a session past its ttl (401)', async () => {
    const late = sessions.issueLoginToken(principal);
    clock += 60_001;
    const refused = await request(`/viewer/login?token=${late.token}`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('set-cookie')).toBeNull();

    const fresh = sessions.issueLoginToken(principal);
    const redeemed = await request(`/viewer/login?token=${fresh.token}`);
    expect(redeemed.status).toBe(303);
    const cookie = redeemed.headers.get('set-cookie')!.split(';')[0]!;
    expect((await request('/viewer/api/info', cookie)).status).toBe(200);
    clock += 3_600_000;
    const expired = await request('/viewer/api/info', cookie);
    expect(expired.status).toBe(401);
    expect(((await expired.json()) as { error: { code: string } }).error.code).toBe('UNAUTHENTICATED');
    expect((await request('/viewer/', cookie)).status).toBe(401);
  });
  it('keeps at most MAX_LOGINS_PER_KEY pending login links and MAX_SESSIONS_PER_KEY sessions per key: one more ends its oldest', async () => {
    // Each used to live its whole ttl: a viewer key minting ~500 sessions a second, each kept 8 hours.
    const tokens = Array.from({ length: MAX_LOGINS_PER_KEY + 1 }, () => sessions.issueLoginToken(principal).token);
    expect((await request(`/viewer/login?token=${tokens[0]}`)).status).toBe(401);
    expect((await request(`/viewer/login?token=${tokens[1]}`)).status).toBe(303);
    const cookies: string[] = [];
    for (let index = 0; index <= MAX_SESSIONS_PER_KEY; index++) {
      const redeemed = await request(`/viewer/login?token=${sessions.issueLoginToken(principal).token}`);
      cookies.push(redeemed.headers.get('set-cookie')!.split(';')[0]!);
    }
    const other = await request(`/viewer/login?token=${sessions.issueLoginToken({ keyId: 'b'.repeat(64), role: 'admin' }).token}`);
    const otherCookie = other.headers.get('set-cookie')!.split(';')[0]!;
    expect((await request('/viewer/api/info', cookies[0])).status).toBe(401);
    for (const cookie of [...cookies.slice(1), otherCookie]) expect((await request('/viewer/api/info', cookie)).status).toBe(200);
  });
});

describe('paths and parameters', () => {
  it('answers traversal in asset paths with 404 (400 for a backslash), reading no file', async () => {
    const traversal = [
      '/viewer/assets/../../package.json',
      '/viewer/assets/..%2f..%2fpackage.json',
      '/viewer/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd',
      '/viewer/assets/%2e%2e/%2e%2e/package.json',
      '/viewer/assets/%252e%252e/%252e%252epackage.json',
      '/viewer/assets/viewer.js%00.css',
      '/viewer/assets/viewer.js/..',
      '/viewer/assets//etc/passwd',
      '/viewer/assets/VIEWER.JS',
      '/viewer/assets/',
      '/viewer/assets/client-script.ts',
      '/viewer/../coordinator/viewer/routes.ts',
      '/viewer/%2e%2e/%2e%2e/etc/passwd',
    ];
    for (const cookie of [undefined, viewerCookie]) {
      for (const target of traversal) {
        const response = await expectRefused(() => get(target, cookie ? { cookie } : {}), 404, 'NOT_FOUND');
        expect(response.body.toString(), target).not.toMatch(/"name": "ferry"|root:|import \{/);
      }
      // Node's server (@hono/node-server) refuses a backslash in the path before any route sees it.
      for (const target of ['/viewer/assets/..\\..\\package.json', '/viewer/assets\\viewer.js']) {
        const response = await expectRefused(() => get(target, cookie ? { cookie } : {}), 400, undefined);
        expect(response.body.length).toBe(0);
      }
    }
  });

  it('refuses seq and position parameters that are no decimal integers, or too large, with 400 INVALID; an unknown position is 404', async () => {
    const cases: [target: string, status: number, code: string][] = [
      ['/viewer/api/events/abc', 400, 'INVALID'],
      ['/viewer/api/events/0', 400, 'INVALID'],
      ['/viewer/api/events/-1', 400, 'INVALID'],
      ['/viewer/api/events/1.5', 400, 'INVALID'],
      ['/viewer/api/events/1e3', 400, 'INVALID'],
      ['/viewer/api/events/0x2', 400, 'INVALID'],
      ['/viewer/api/events/%20%201', 400, 'INVALID'],
      ['/viewer/api/events/Infinity', 400, 'INVALID'],
      ['/viewer/api/events/%00', 400, 'INVALID'],
      ['/viewer/api/events/99999999999999999999', 400, 'INVALID'],
      ['/viewer/api/events/9007199254740993', 400, 'INVALID'],
      [`/viewer/api/events/${'9'.repeat(5000)}`, 400, 'INVALID'],
      ['/viewer/api/events/999999', 404, 'OUT_OF_RANGE'],
      ['/viewer/api/state?at=abc', 400, 'INVALID'],
      ['/viewer/api/state?at=-1', 400, 'INVALID'],
      ['/viewer/api/state?at=1e3', 400, 'INVALID'],
      ['/viewer/api/state?at=0x10', 400, 'INVALID'],
      ['/viewer/api/state?at=99999999999999999999', 400, 'INVALID'],
      ['/viewer/api/state?at=2024-13-45', 400, 'INVALID'],
      [`/viewer/api/state?at=${'1'.repeat(65)}`, 400, 'INVALID'],
      ['/viewer/api/state?at=999999', 404, 'OUT_OF_RANGE'],
      ['/viewer/api/state?agentOffset=-1', 400, 'INVALID'],
      ['/viewer/api/state?agentOffset=1e9', 400, 'INVALID'],
      ['/viewer/api/state?agentLimit=0', 400, 'INVALID'],
      ['/viewer/api/state?agentLimit=1001', 400, 'INVALID'],
      ['/viewer/api/state?full=maybe', 400, 'INVALID'],
      [`/viewer/api/state?agentQuery=${'q'.repeat(257)}`, 400, 'INVALID'],
      ['/viewer/api/state?colour=blue', 400, 'INVALID'],
      ['/viewer/api/events?before=abc', 400, 'INVALID'],
      ['/viewer/api/events?before=1e400', 400, 'INVALID'],
      ['/viewer/api/events?after=-5', 400, 'INVALID'],
      ['/viewer/api/events?around=99999999999999999999', 400, 'INVALID'],
      ['/viewer/api/events?limit=0', 400, 'INVALID'],
      ['/viewer/api/events?limit=1001', 400, 'INVALID'],
      ['/viewer/api/events?limit=', 400, 'INVALID'],
      ['/viewer/api/events?from=yesterday', 400, 'INVALID'],
      ['/viewer/api/events?to=2024-13-45', 400, 'INVALID'],
      ['/viewer/api/events?from=99999999999999999999999', 400, 'INVALID'],
      [`/viewer/api/events?q=${'q'.repeat(257)}`, 400, 'INVALID'],
      [`/viewer/api/events?actor=${'a'.repeat(257)}`, 400, 'INVALID'],
      ['/viewer/api/events?colour=blue', 400, 'INVALID'],
      ['/viewer/api/verify?refresh=maybe', 400, 'INVALID'],
      // Closure diffs: config ids branded (64 hex characters), the rest bounded; an unknown config is no internal error.
      [`/viewer/api/configs/${'0'.repeat(64)}/diff`, 404, 'NOT_FOUND'],
      [`/viewer/api/configs/${'0'.repeat(64)}/diff?from=${'1'.repeat(64)}`, 404, 'NOT_FOUND'],
      ['/viewer/api/configs/not-a-config/diff', 400, 'INVALID'],
      [`/viewer/api/configs/${'A'.repeat(64)}/diff`, 400, 'INVALID'],
      [`/viewer/api/configs/..%2F..%2Fv1%2Fkeys/diff`, 400, 'INVALID'],
      ...['limit=0', 'limit=2001', 'limit=1e2', 'limit=', 'from=abc', `from=${'0'.repeat(65)}`, 'system=../x', 'system=x86_64-linux&system=aarch64-linux', 'colour=blue'].map(
        (query): [string, number, string] => [`/viewer/api/configs/${'0'.repeat(64)}/diff?${query}`, 400, 'INVALID'],
      ),
      // The live fleet's JSON and its stream take one query, validated alike.
      ...['/viewer/api/live', '/viewer/live/stream'].flatMap((live): [string, number, string][] => [
        [`${live}?agentLimit=0`, 400, 'INVALID'],
        [`${live}?agentLimit=501`, 400, 'INVALID'],
        [`${live}?agentLimit=1e2`, 400, 'INVALID'],
        [`${live}?agentOffset=-1`, 400, 'INVALID'],
        [`${live}?agentOffset=99999999999999999999`, 400, 'INVALID'],
        [`${live}?agentQuery=${'q'.repeat(257)}`, 400, 'INVALID'],
        [`${live}?agentQuery=a&agentQuery=b`, 400, 'INVALID'],
        [`${live}?at=1`, 400, 'INVALID'],
      ]),
    ];
    for (const [target, status, code] of cases) {
      const response = await expectRefused(() => get(target, { cookie: viewerCookie }), status, code);
      expect(response.error!.message.length, target).toBeLessThan(400);
    }
    // The same parameters, well formed, are answered.
    for (const target of ['/viewer/api/events/1', '/viewer/api/state?at=1', '/viewer/api/state?at=end', '/viewer/api/state?at=2000-01-01T00:00:00Z', '/viewer/api/events?around=1&limit=5', `/viewer/api/live?agentQuery=${encodeURIComponent('<script>"\'')}&agentLimit=500&agentOffset=10000000`]) {
      expect((await get(target, { cookie: viewerCookie })).status, target).toBe(200);
    }
    expect(test.log.filter((line) => /internal error/.test(line))).toEqual([]);
  });
});

describe('a session is for looking only', () => {
  it('authenticates no write, and no read, outside the viewer: not a viewer’s, not an admin’s (401 UNAUTHENTICATED)', async () => {
    const writes: [string, string, unknown][] = [
      ['POST', '/v1/tokens', { uses: 1 }],
      ['POST', '/v1/keys', { keyId: Identity.generate().keyId, role: 'admin' }],
      ['POST', `/v1/keys/${viewerKey.keyId}/revoke`, {}],
      ['POST', '/v1/graphs/web/rollback', {}],
      ['GET', '/v1/keys', undefined],
      ['GET', '/v1/audit/export', undefined],
    ];
    for (const cookie of [viewerCookie, adminCookie]) {
      for (const [method, target, body] of writes) {
        await expectRefused(
          () => rawRequest(test.http.url, { method, path: target, headers: { cookie, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }),
          401,
          'UNAUTHENTICATED',
        );
      }
      // The data plane's HTTP fallback: its refusal is a frame.
      const frame = encodeHeaderFrame({ op: 'missing', blobs: [] });
      const data = await rawRequest(test.http.url, { method: 'POST', path: '/v1/data', headers: { cookie }, body: frame });
      expect(JSON.parse(data.body.subarray(4).toString()).error.code).toBe('UNAUTHENTICATED');
    }
  });

  it('has no writing routes: other methods on the viewer’s paths are 404 NOT_FOUND', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      for (const target of [...ENDPOINTS, '/viewer/', '/viewer/assets/viewer.js', '/viewer/login', '/viewer/live', '/viewer/live/stream', '/viewer/assets/live.js']) {
        await expectRefused(() => rawRequest(test.http.url, { method, path: target, headers: { cookie: viewerCookie, 'content-type': 'application/json' }, body: '{}' }), 404, 'NOT_FOUND');
      }
    }
  });
});
