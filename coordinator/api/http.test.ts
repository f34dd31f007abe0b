// The HTTP API serves its description (protocol/api/routes.ts), no more and no less, and checks its
// own replies against it when asked to (as the test suite asks: vitest.config.ts).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { API_ROUTES, API_STREAMS } from '../../protocol/api/routes.js';
import { VIEWER_ROUTES } from '../../protocol/api/viewer-routes.js';
import { Coordinator } from '../coordinator.js';
import { createHttpApi } from './http.js';
import { OPERATIONS } from './operations.js';

let dir: string;
let coordinator: Coordinator;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-http-api-'));
  coordinator = Coordinator.open(dir);
});
afterEach(() => {
  coordinator.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the HTTP API and its description', () => {
  it('routes every described route, and describes every route it serves under /v1', () => {
    const app = createHttpApi(coordinator, { log: () => undefined });
    const served = new Set(app.routes.filter((route) => route.path.startsWith('/v1/')).map((route) => `${route.method} ${route.path}`));
    const described = [...Object.values(API_ROUTES), ...Object.values(API_STREAMS)].map((route) => `${route.method} ${route.path}`);
    expect(new Set(described).size).toBe(described.length);
    expect([...served].sort()).toEqual([...described].sort());
    // Everything else is mounted with a description of its own: the Nix cache (docs/nix-cache.md) and the viewer,
    // whose JSON routes are exactly VIEWER_ROUTES (protocol/api/viewer-routes.ts; its page and login are not JSON).
    const elsewhere = app.routes.filter((route) => !route.path.startsWith('/v1/') && route.method !== 'ALL').map((route) => route.path);
    expect(elsewhere.filter((routePath) => !routePath.startsWith('/nix-cache') && !routePath.startsWith('/viewer'))).toEqual([]);
    const viewerServed = app.routes.filter((route) => route.path.startsWith('/viewer/api/') && route.method !== 'ALL').map((route) => `${route.method} ${route.path}`);
    expect(viewerServed.sort()).toEqual(Object.values(VIEWER_ROUTES).map((route) => `${route.method} ${route.path}`).sort());
  });

  it('is listed in docs/coordinator.md, route by route', () => {
    const docs = readFileSync(path.join(import.meta.dirname, '..', '..', 'docs', 'coordinator.md'), 'utf8');
    const described = [...Object.entries(API_ROUTES), ...Object.entries(API_STREAMS)].map(([name, route]) => `| \`${name}\` | \`${route.method} ${route.path}\` |`);
    expect(described.filter((row) => !docs.includes(row))).toEqual([]);
  });

  it('has a handler for every JSON route but the watch, which it holds open itself', () => {
    expect(Object.keys(OPERATIONS).sort()).toEqual(Object.keys(API_ROUTES).filter((name) => name !== 'agent.watch' && name !== 'relay.prefetch').sort());
  });

  it('answers a reply that drifted from its description INTERNAL, naming the field, when it checks replies', async () => {
    const honest = OPERATIONS.info;
    const drifted: typeof honest = (...args) => ({ ...(honest(...args) as object), lastSeq: 'many' }) as unknown as ReturnType<typeof honest>;
    OPERATIONS.info = drifted;
    try {
      const checking = createHttpApi(coordinator, { log: () => undefined, checkReplies: true });
      const refused = await checking.request('/v1/info');
      expect(refused.status).toBe(500);
      expect(await refused.json()).toEqual({ error: { code: 'INTERNAL', message: expect.stringMatching(/^the reply of info does not match its description: lastSeq: /) } });
      // Unchecked (production's default), the same reply goes out as the handler made it.
      const trusting = createHttpApi(coordinator, { log: () => undefined, checkReplies: false });
      expect(((await (await trusting.request('/v1/info')).json()) as { lastSeq: unknown }).lastSeq).toBe('many');
    } finally {
      OPERATIONS.info = honest;
    }
  });

  it('checks its honest replies and sends them unchanged', async () => {
    const app = createHttpApi(coordinator, { log: () => undefined, checkReplies: true });
    const info = (await (await app.request('/v1/info')).json()) as Record<string, unknown>;
    expect(API_ROUTES.info.output.parse(info)).toEqual(info);
    expect(info.coordinatorKey).toBe(coordinator.identity.keyId);
  });
});
