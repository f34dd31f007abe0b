// The live fleet page's server-sent events (coordinator/viewer/live-streams.ts)
// over real HTTP on 127.0.0.1: refused without a session; the fleet now on
// opening, then each committed change (a health report, a presence event);
// a burst of events coalesced to a few messages a second; closed on logout,
// beyond the per-session and overall limits, and when the server stops; and,
// on the routes with a clock the test moves, when the session expires or
// its key is revoked.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { addKey, recordPresence } from '../coordinator/domain/commands.js';
import { liveLogSource, Viewer } from '../coordinator/viewer/index.js';
import { fleetNow, liveFleetPage, MAX_LIVE_GRAPHS } from '../coordinator/viewer/live-fleet.js';
import { LiveStreams, MAX_LIVE_STREAMS, MAX_LIVE_STREAMS_PER_KEY, MAX_LIVE_STREAMS_PER_SESSION } from '../coordinator/viewer/live-streams.js';
import { viewerRoutes } from '../coordinator/viewer/routes.js';
import { SESSION_COOKIE, ViewerSessions } from '../coordinator/viewer/sessions.js';
import { MAX_LIVE_AGENT_LIMIT } from '../protocol/api/viewer-routes.js';
import { LiveFleetSchema, type LiveFleet } from '../protocol/api/viewer-views.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { bootstrap, coordinatorActor } from './fleet-simulator.js';
import { startScriptedCoordinator, type ScriptedCoordinator } from './viewer-fixture.js';

interface SseMessage {
  event: string;
  data: string;
  id: string | undefined;
  /** When it arrived (ms, performance.now()). */
  at: number;
}

/** A server-sent event stream read as a browser's EventSource reads it (comments skipped). */
class SseReader {
  readonly messages: SseMessage[] = [];
  comments = 0;
  readonly ended: Promise<void>;
  private waiters: (() => void)[] = [];

  constructor(readonly response: Response) {
    this.ended = this.read();
  }

  private async read(): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of this.response.body as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields: Record<string, string> = {};
          let comment = true;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            comment = false;
            const colon = line.indexOf(':');
            fields[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, '');
          }
          if (comment) this.comments++;
          else if (fields.event !== undefined) this.messages.push({ event: fields.event, data: fields.data ?? '', id: fields.id, at: performance.now() });
          this.wake();
        }
      }
    } catch {
      // Aborted by the test.
    }
    this.wake();
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  fleets(): LiveFleet[] {
    return this.messages.filter((m) => m.event === 'fleet').map((m) => JSON.parse(m.data) as LiveFleet);
  }

  /** Waits for a message matching `predicate` (among all received so far and after). */
  async next(predicate: (message: SseMessage) => boolean, timeoutMs = 10_000): Promise<SseMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no such message within ${timeoutMs} ms; got ${this.messages.map((m) => m.event).join(', ')}`);
      await Promise.race([new Promise<void>((resolve) => this.waiters.push(resolve)), sleep(Math.max(1, deadline - Date.now()))]);
    }
  }

  /** Waits for a fleet message satisfying `predicate`. */
  async fleet(predicate: (fleet: LiveFleet) => boolean, timeoutMs?: number): Promise<LiveFleet> {
    const message = await this.next((m) => m.event === 'fleet' && predicate(JSON.parse(m.data) as LiveFleet), timeoutMs);
    return JSON.parse(message.data) as LiveFleet;
  }
}

describe('the live page’s stream on a running coordinator', () => {
  let scripted: ScriptedCoordinator;
  const readers: { reader: SseReader; abort: AbortController }[] = [];

  async function login(identity: Identity): Promise<string> {
    const { loginPath } = await new CoordinatorHttpClient(scripted.http.url, identity).call('viewer.session');
    const response = await fetch(new URL(loginPath, scripted.http.url), { redirect: 'manual' });
    expect(response.status).toBe(303);
    return response.headers.get('set-cookie')!.split(';')[0]!;
  }
  async function open(cookie: string | undefined, query = ''): Promise<SseReader> {
    const abort = new AbortController();
    const response = await fetch(`${scripted.http.url}/viewer/live/stream${query}`, { headers: cookie ? { cookie } : {}, signal: abort.signal });
    const reader = new SseReader(response);
    readers.push({ reader, abort });
    return reader;
  }
  function closeAll(): void {
    for (const { abort } of readers.splice(0)) abort.abort();
  }

  beforeAll(async () => {
    scripted = await startScriptedCoordinator();
  });
  afterAll(async () => {
    closeAll();
    await scripted?.close();
  });

  it('refuses a stream (and the page, and its JSON) without a session, with a forged one, or with a bad query', async () => {
    for (const cookie of [undefined, `${SESSION_COOKIE}=forged`]) {
      const stream = await fetch(`${scripted.http.url}/viewer/live/stream`, { headers: cookie ? { cookie } : {} });
      expect(stream.status).toBe(401);
      expect(stream.headers.get('content-type')).toMatch(/application\/json/);
      expect(((await stream.json()) as { error: { code: string } }).error.code).toBe('UNAUTHENTICATED');
      expect((await fetch(`${scripted.http.url}/viewer/live`, { headers: cookie ? { cookie } : {} })).status).toBe(401);
      expect((await fetch(`${scripted.http.url}/viewer/api/live`, { headers: cookie ? { cookie } : {} })).status).toBe(401);
    }
    const cookie = await login(scripted.viewer);
    for (const query of ['?agentLimit=0', '?agentLimit=501', '?agentOffset=-1', '?colour=blue', `?agentQuery=${'q'.repeat(257)}`]) {
      const refused = await fetch(`${scripted.http.url}/viewer/live/stream${query}`, { headers: { cookie } });
      expect(refused.status, query).toBe(400);
      expect(((await refused.json()) as { error: { code: string } }).error.code, query).toBe('INVALID');
    }
    // Pushers cannot get in at all; the page itself opens for a session.
    await expect(new CoordinatorHttpClient(scripted.http.url, scripted.pusher).call('viewer.live')).rejects.toMatchObject({ status: 403 });
    const page = await fetch(`${scripted.http.url}/viewer/live`, { headers: { cookie } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('/viewer/assets/live.js');
  });

  it('sends the fleet now, then each committed change: a health report, a presence event', async () => {
    const { coordinator } = scripted;
    const cookie = await login(scripted.viewer);
    const stream = await open(cookie);
    expect(stream.response.status).toBe(200);
    expect(stream.response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(stream.response.headers.get('cache-control')).toBe('no-store');
    const first = await stream.fleet(() => true);
    expect(LiveFleetSchema.parse(first)).toEqual(first);
    expect(first.seq).toBe(coordinator.lastSeq);
    const edge = coordinator.state.get('graphs', 'edge')!;
    expect(first.graphs.rows).toEqual([expect.objectContaining({ id: 'edge', head: edge.head, following: 2, rollout: { succeeded: 2, failed: 0, pending: 0, unreported: 0 }, phases: { active: 1, 'rolled-back': 1 }, degraded: 0 })]);
    expect(first.agents.rows.map((a) => [a.name, a.health, a.presence])).toEqual([
      ['gw-1', null, 'online'],
      ['gw-2', null, 'online'],
    ]);
    // The stream's messages are what the JSON route answers.
    const viewerClient = new CoordinatorHttpClient(scripted.http.url, scripted.viewer);
    expect({ ...(await viewerClient.call('viewer.live')), at: 0 }).toEqual({ ...first, at: 0 });

    // gw-2's periodic check fails: one event, one message.
    const gw2 = new CoordinatorHttpClient(scripted.http.url, scripted.agents[1]!);
    const answer = await gw2.call('agent.health', { configId: edge.head, health: 'degraded', reason: 'app.service: inactive (dead)' });
    expect(answer.outcome).toBe('recorded');
    const degraded = await stream.fleet((fleet) => fleet.seq === answer.seq);
    expect(degraded.agents.rows.find((a) => a.name === 'gw-2')).toMatchObject({ health: 'degraded', healthReason: 'app.service: inactive (dead)', healthConfig: edge.head });
    expect(degraded.counts.byHealth).toEqual({ healthy: 0, degraded: 1, unchecked: 1 });
    expect(degraded.graphs.rows[0]!.degraded).toBe(1);

    // The coordinator records gw-1 offline (its sweep's command): the recorded presence follows.
    const recorded = coordinator.record(coordinatorActor(coordinator), (context) => recordPresence(context, { agentId: scripted.agents[0]!.keyId, presence: 'offline', lastSeen: null }))!;
    const offline = await stream.fleet((fleet) => fleet.seq === recorded.seq);
    expect(offline.agents.rows.find((a) => a.name === 'gw-1')!.recordedPresence).toBe('offline');
    // A filter: only the degraded agent.
    const filtered = await open(cookie, '?agentQuery=degraded');
    expect((await filtered.fleet(() => true)).agents).toMatchObject({ total: 2, matching: 1, rows: [expect.objectContaining({ name: 'gw-2' })] });
    closeAll();
  });

  it('coalesces a burst of events: a few messages a second, the last one up to date', async () => {
    const { coordinator } = scripted;
    const cookie = await login(scripted.viewer);
    const stream = await open(cookie);
    await stream.fleet(() => true);
    const self = coordinatorActor(coordinator);
    const started = performance.now();
    const before = stream.messages.length;
    // 400 events over a few seconds (a busy fleet), each committed on its own.
    for (let batch = 0; batch < 25; batch++) {
      for (let i = 0; i < 16; i++) coordinator.record(self, (context) => addKey(context, { keyId: Identity.generate().keyId, role: 'viewer', label: `burst ${batch}.${i}` }));
      await sleep(50);
    }
    const last = coordinator.lastSeq;
    await stream.fleet((fleet) => fleet.seq === last, 5000);
    const elapsed = performance.now() - started;
    const sent = stream.messages.slice(before).filter((m) => m.event === 'fleet');
    // At most one per 500 ms (DEFAULT_LIVE_STREAM_TIMINGS.minIntervalMs), plus the one at the start of the burst.
    expect(sent.length).toBeLessThanOrEqual(Math.ceil(elapsed / 500) + 1);
    expect(sent.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < sent.length; i++) expect(sent[i]!.at - sent[i - 1]!.at).toBeGreaterThan(400);
    closeAll();
  });

  it('closes a stream on logout, and the oldest of a session beyond its limit, saying why', async () => {
    const cookie = await login(scripted.viewer);
    const streams: SseReader[] = [];
    for (let i = 0; i < MAX_LIVE_STREAMS_PER_SESSION; i++) {
      streams.push(await open(cookie));
      await streams[i]!.fleet(() => true);
    }
    const extra = await open(cookie);
    await extra.fleet(() => true);
    const bumped = await streams[0]!.next((m) => m.event === 'closed');
    expect(JSON.parse(bumped.data)).toMatch(/another live page of this session/);
    await streams[0]!.ended;
    expect(streams.slice(1).every((s) => !s.messages.some((m) => m.event === 'closed'))).toBe(true);

    expect((await fetch(`${scripted.http.url}/viewer/logout`, { headers: { cookie } })).status).toBe(200);
    for (const stream of [...streams.slice(1), extra]) {
      expect(JSON.parse((await stream.next((m) => m.event === 'closed')).data)).toBe('logged out');
      await stream.ended;
    }
    // And the session is gone for a new stream too.
    expect((await fetch(`${scripted.http.url}/viewer/live/stream`, { headers: { cookie } })).status).toBe(401);
    closeAll();
  });

  it(`serves at most ${MAX_LIVE_STREAMS} streams at once (429 TOO_MANY_STREAMS), and ${MAX_LIVE_STREAMS_PER_KEY} per key`, async () => {
    const { coordinator } = scripted;
    const self = coordinatorActor(coordinator);
    const keys = Array.from({ length: MAX_LIVE_STREAMS / MAX_LIVE_STREAMS_PER_KEY + 1 }, () => Identity.generate());
    for (const key of keys) coordinator.record(self, (context) => addKey(context, { keyId: key.keyId, role: 'viewer', label: 'many tabs' }));
    const open64: SseReader[] = [];
    for (const key of keys.slice(0, -1)) {
      const perKey: SseReader[] = [];
      for (let session = 0; session < MAX_LIVE_STREAMS_PER_KEY / MAX_LIVE_STREAMS_PER_SESSION; session++) {
        const cookie = await login(key);
        for (let i = 0; i < MAX_LIVE_STREAMS_PER_SESSION; i++) perKey.push(await open(cookie));
      }
      for (const stream of perKey) await stream.fleet(() => true);
      open64.push(...perKey);
    }
    expect(open64.every((s) => s.response.status === 200)).toBe(true);
    const lastCookie = await login(keys.at(-1)!);
    const refused = await fetch(`${scripted.http.url}/viewer/live/stream`, { headers: { cookie: lastCookie } });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('TOO_MANY_STREAMS');
    // A key beyond its own limit closes its own oldest, not someone else's.
    const firstKeyCookie = await login(keys[0]!);
    const ninth = await open(firstKeyCookie);
    await ninth.fleet(() => true);
    expect(JSON.parse((await open64[0]!.next((m) => m.event === 'closed')).data)).toMatch(/another live page of this key/);
    expect(open64.slice(MAX_LIVE_STREAMS_PER_KEY).every((s) => !s.messages.some((m) => m.event === 'closed'))).toBe(true);
    // A client that goes away frees its place.
    readers.find((r) => r.reader === open64[1])!.abort.abort();
    await sleep(200);
    const admitted = await open(lastCookie);
    expect(admitted.response.status).toBe(200);
    await admitted.fleet(() => true);
    closeAll();
  });

  it('sends a bounded page however large the fleet: 10,000 agents and 1,000 graphs are a few hundred KiB at most', () => {
    const now = fleetNow(scripted.coordinator);
    const [agent] = now.agents;
    const [graph] = now.graphs;
    const big = {
      ...now,
      agents: Array.from({ length: 10_000 }, (_, i) => ({ ...agent!, row: { ...agent!.row, id: i.toString(16).padStart(64, '0'), name: `agent-${i}`, lastError: 'e'.repeat(200) } })),
      graphs: Array.from({ length: 1000 }, (_, i) => ({ ...graph!, id: `graph-${String(i).padStart(4, '0')}`, headMessage: 'm'.repeat(200) })),
    };
    const largest = liveFleetPage(big, { agentLimit: MAX_LIVE_AGENT_LIMIT, agentOffset: 9_000 });
    expect(largest.agents).toMatchObject({ total: 10_000, matching: 10_000, offset: 9_000 });
    expect(largest.agents.rows).toHaveLength(MAX_LIVE_AGENT_LIMIT);
    expect(largest.graphs.total).toBe(1000);
    expect(largest.graphs.rows).toHaveLength(MAX_LIVE_GRAPHS);
    expect(LiveFleetSchema.parse(largest)).toEqual(largest);
    expect(Buffer.byteLength(JSON.stringify(largest))).toBeLessThan(512 * 1024);
    expect(Buffer.byteLength(JSON.stringify(liveFleetPage(big)))).toBeLessThan(192 * 1024);
    expect(liveFleetPage(big, { agentQuery: 'agent-9999' }).agents).toMatchObject({ matching: 1, rows: [expect.objectContaining({ name: 'agent-9999' })] });
  });

  it('closes its streams when the server stops, at once rather than after its grace period', async () => {
    const cookie = await login(scripted.viewer);
    const stream = await open(cookie);
    await stream.fleet(() => true);
    const started = performance.now();
    let ended = 0;
    void stream.ended.then(() => (ended = performance.now()));
    await scripted.restart();
    const closed = await stream.next((m) => m.event === 'closed');
    expect(JSON.parse(closed.data)).toMatch(/stopping|stopped/);
    await stream.ended;
    // The server lets requests under way finish for 5 s (server.ts) before cutting them: a stream must not take it.
    expect(closed.at - started).toBeLessThan(1000);
    expect(ended - started).toBeLessThan(1000);
  });
});

describe('the live stream on the viewer’s routes, with a clock the test moves', () => {
  let dir: string;
  let coordinator: Coordinator;
  let clock = Date.now();
  let allowed = true;
  let sessions: ViewerSessions;
  let app: ReturnType<typeof viewerRoutes>;
  let streams: LiveStreams<ReturnType<typeof fleetNow>>;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-viewer-live-'));
    coordinator = Coordinator.open(dir);
    bootstrap(coordinator);
    sessions = new ViewerSessions({ now: () => clock, sessionTtlMs: 3_600_000 });
    streams = new LiveStreams(
      { read: () => fleetNow(coordinator), page: liveFleetPage, onCommit: (listener) => coordinator.commits.subscribe(listener), now: () => clock },
      { tickMs: 50, heartbeatMs: 100 },
      () => undefined,
    );
    app = viewerRoutes({ viewer: new Viewer(liveLogSource(coordinator)), sessions, live: streams, stillAllowed: () => allowed, log: () => undefined });
  });
  afterAll(() => {
    streams.stop('done');
    coordinator?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const principal = { keyId: 'a'.repeat(64), role: 'viewer' };
  async function session(): Promise<string> {
    const redeemed = await app.request(`http://viewer/viewer/login?token=${sessions.issueLoginToken(principal).token}`);
    return redeemed.headers.get('set-cookie')!.split(';')[0]!;
  }

  it('sends heartbeats, and closes a stream once its session expires or its key is revoked', async () => {
    const cookie = await session();
    const expiring = new SseReader(await app.request('http://viewer/viewer/live/stream', { headers: { cookie } }));
    await expiring.fleet(() => true);
    clock += 100;
    await sleep(300);
    expect(expiring.comments).toBeGreaterThan(0);
    clock += 3_600_000;
    expect(JSON.parse((await expiring.next((m) => m.event === 'closed', 2000)).data)).toMatch(/session ended/);
    await expiring.ended;

    const revoked = new SseReader(await app.request('http://viewer/viewer/live/stream', { headers: { cookie: await session() } }));
    await revoked.fleet(() => true);
    allowed = false;
    expect(JSON.parse((await revoked.next((m) => m.event === 'closed', 2000)).data)).toMatch(/session ended/);
    await revoked.ended;
    expect(streams.size).toBe(0);
  });

  it('reads the fleet once for streams opened (and JSON asked for) in a row, and again once an event commits', async () => {
    allowed = true;
    const cookie = await session();
    const before = streams.reads;
    const opened = [];
    for (let i = 0; i < 3; i++) {
      opened.push(new SseReader(await app.request('http://viewer/viewer/live/stream', { headers: { cookie } })));
      expect((await app.request('http://viewer/viewer/api/live', { headers: { cookie } })).status).toBe(200);
    }
    for (const stream of opened) await stream.fleet(() => true);
    const opening = streams.reads - before;
    expect(opening).toBeLessThanOrEqual(1);
    const recorded = coordinator.record(coordinatorActor(coordinator), (context) => addKey(context, { keyId: Identity.generate().keyId, role: 'viewer', label: 'one more' }))!;
    for (const stream of opened) await stream.fleet((fleet) => fleet.seq === recorded.seq);
    expect(streams.reads - before).toBe(opening + 1);
    streams.closeSession(sessions.keyOf(cookie.split('=')[1]!), 'done');
    for (const stream of opened) await stream.ended;
  });

  it('is not served offline: the page, its stream and its JSON are 404 NOT_FOUND', async () => {
    allowed = true;
    const cookie = await session();
    const offline = viewerRoutes({ viewer: new Viewer(liveLogSource(coordinator)), sessions, log: () => undefined });
    for (const target of ['/viewer/live', '/viewer/live/stream', '/viewer/api/live']) {
      const response = await offline.request(`http://viewer${target}`, { headers: { cookie } });
      expect(response.status, target).toBe(404);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    }
  });
});
