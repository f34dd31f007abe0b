// The viewer's JSON routes and their description (protocol/api/viewer-routes.ts):
// it serves exactly the described routes, and checks its own replies against
// them when asked to (as the test suite asks: vitest.config.ts).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { API_ROUTES } from '../../protocol/api/routes.js';
import { VIEWER_ROUTES } from '../../protocol/api/viewer-routes.js';
import { bootstrap } from '../../test/fleet-simulator.js';
import { Coordinator } from '../coordinator.js';
import { liveLogSource } from './live-source.js';
import { viewerRoutes } from './routes.js';
import { SESSION_COOKIE, ViewerSessions } from './sessions.js';
import { Viewer } from './viewer.js';

let dir: string;
let coordinator: Coordinator;
let viewer: Viewer;
let sessions: ViewerSessions;
let cookie: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-viewer-routes-'));
  coordinator = Coordinator.open(dir);
  bootstrap(coordinator); // a log with events to show
  viewer = new Viewer(liveLogSource(coordinator));
  sessions = new ViewerSessions();
  const { sessionId } = sessions.redeem(sessions.issueLoginToken({ keyId: 'k'.repeat(64), role: 'viewer' }).token)!;
  cookie = `${SESSION_COOKIE}=${sessionId}`;
});
afterEach(() => {
  coordinator.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the viewer's JSON routes and their description", () => {
  it('serves every described route, and describes every route it serves under /viewer/api/', () => {
    const app = viewerRoutes({ viewer, sessions, log: () => undefined });
    const served = app.routes.filter((route) => route.path.startsWith('/viewer/api/') && route.method !== 'ALL').map((route) => `${route.method} ${route.path}`);
    const described = Object.values(VIEWER_ROUTES).map((route) => `${route.method} ${route.path}`);
    expect(new Set(described).size).toBe(described.length);
    expect(new Set(served).size).toBe(served.length);
    expect([...served].sort()).toEqual([...described].sort());
  });

  it('is listed in docs/viewer.md, route by route', () => {
    const docs = readFileSync(path.join(import.meta.dirname, '..', '..', 'docs', 'viewer.md'), 'utf8');
    const described = Object.entries(VIEWER_ROUTES).map(([name, route]) => `| \`${name}\` | \`${route.method} ${route.path}\` |`);
    expect(described.filter((row) => !docs.includes(row))).toEqual([]);
  });

  it('names its routes apart from the API’s, so the client calls both by name', () => {
    expect(Object.keys(VIEWER_ROUTES).filter((name) => name in API_ROUTES)).toEqual([]);
  });

  it('answers a reply that drifted from its description INTERNAL, naming the field, when it checks replies', async () => {
    const honest = viewer.info.bind(viewer);
    viewer.info = () => ({ ...honest(), lastSeq: 'many' }) as unknown as ReturnType<typeof honest>;
    const logged: string[] = [];
    const checking = viewerRoutes({ viewer, sessions, log: (line) => logged.push(line), checkReplies: true });
    const refused = await checking.request('/viewer/api/info', { headers: { cookie } });
    expect(refused.status).toBe(500);
    expect(await refused.json()).toEqual({ error: { code: 'INTERNAL', message: expect.stringMatching(/^the reply of viewer\.info does not match its description: lastSeq: /) } });
    // Unchecked (production's default), the same reply goes out as the handler made it.
    const trusting = viewerRoutes({ viewer, sessions, log: () => undefined, checkReplies: false });
    expect(((await (await trusting.request('/viewer/api/info', { headers: { cookie } })).json()) as { lastSeq: unknown }).lastSeq).toBe('many');
  });

  it('checks its honest replies and sends them unchanged', async () => {
    const app = viewerRoutes({ viewer, sessions, log: () => undefined, checkReplies: true });
    for (const [name, target] of [['viewer.info', '/viewer/api/info'], ['viewer.state', '/viewer/api/state?full=1'], ['viewer.event', '/viewer/api/events/1'], ['viewer.events', '/viewer/api/events'], ['viewer.verify', '/viewer/api/verify']] as const) {
      const response = await app.request(target, { headers: { cookie } });
      expect(response.status, target).toBe(200);
      const reply: unknown = await response.json();
      expect(VIEWER_ROUTES[name].output.parse(reply), target).toEqual(reply);
    }
  });
});
