// Defect 7 of the security-hardening issue: deeply nested JSON. Facts nested ~1,900 deep made
// the coordinator answer 500 (stack overflow in the facts size check and in canonicalJson);
// ~1,875 deep were accepted and became a permanent event that `ferry audit verify` and the
// viewer then failed on, intermittently. Now: depth is bounded where JSON comes in (400
// JSON_TOO_DEEP, nothing audited), and everything that walks stored JSON takes any depth.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAuditExport, verifyAuditExport } from '../coordinator/audit/export.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { openCoordinatorDatabase } from '../coordinator/db/database.js';
import * as commands from '../coordinator/domain/commands.js';
import type { Actor } from '../coordinator/domain/commands.js';
import type { Facts } from '../coordinator/domain/events.js';
import { replayLog } from '../coordinator/domain/reducer.js';
import { SqliteStateStore } from '../coordinator/domain/sqlite-state.js';
import { MemoryStateStore, STATE_TABLES } from '../coordinator/domain/state.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { exportLogSource, Viewer } from '../coordinator/viewer/index.js';
import { canonicalJson } from '../protocol/canonical-json.js';
import { MAX_REPLY_HEADER_BYTES } from '../protocol/data-protocol.js';
import { FrameError, FrameReader } from '../protocol/framing.js';
import { formatHlc } from '../protocol/hlc.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, publicKeyOf, type KeyId } from '../protocol/identity.js';
import { cloneJson, JSON_TOO_DEEP_PLACEHOLDER, jsonBoundsViolation, MAX_VIEWER_JSON_DEPTH, stringifyJson } from '../protocol/json-bounds.js';
import { signRequest } from '../protocol/request-signing.js';
import { startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { bootstrap, coordinatorActor } from './fleet-simulator.js';

/** The JSON text of `{"a":…}` nested `depth` deep around `leaf`: built as text, since JSON.stringify cannot. */
function nestedText(depth: number, leaf = '1'): string {
  return `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
}

/** The value of nestedText, built without recursion. */
function nested(depth: number, leaf: unknown = 1): unknown {
  let value = leaf;
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

/** Facts `depth` deep: the facts object is the first level, a custom field holds the rest. */
function deepFactsText(depth: number): string {
  return `{"system":"x86_64-linux","hostname":"deep","deep":${nestedText(depth - 1)}}`;
}

interface Answer {
  status: number;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
}

/** A request signed by `identity` with exactly `body` (text the client's JSON.stringify could not write). */
async function signedPost(baseUrl: string, identity: Identity, route: string, body: string): Promise<Answer> {
  const headers = { ...signRequest(identity, 'POST', route, body), 'content-type': 'application/json' };
  const response = await fetch(new URL(route, baseUrl), { method: 'POST', headers, body });
  return { status: response.status, body: (await response.json()) as Answer['body'] };
}

describe('defect 7: deeply nested JSON is refused where it comes in, and nothing is audited', () => {
  let test: TestCoordinator;
  let token: string;
  beforeAll(async () => {
    test = await startTestCoordinator({ quic: false });
    ({ token } = await test.adminClient.call('tokens.create', { uses: 10, autoApprove: true }));
  });
  afterAll(() => test?.close());

  it('defect 7: enrollment with facts nested 2,000 and 100,000 deep is refused 400 JSON_TOO_DEEP', async () => {
    const tokenId = token.split('.')[0]!;
    for (const depth of [2_000, 100_000]) {
      const before = test.coordinator.lastSeq;
      const agent = Identity.generate();
      const answer = await signedPost(test.http.url, agent, '/v1/enroll', `{"token":"${token}","name":"deep","facts":${deepFactsText(depth)}}`);
      expect(answer.status, `${depth} deep`).toBe(400);
      expect(answer.body.error).toEqual({ code: 'JSON_TOO_DEEP', message: `request body nests deeper than 64 levels (at $.facts.deep${'.a'.repeat(62)})` });
      expect(test.coordinator.lastSeq).toBe(before);
      expect(test.coordinator.state.get('agents', agent.keyId)).toBeUndefined();
      expect(test.coordinator.state.get('tokens', tokenId)?.usesLeft).toBe(10);
    }
  });

  it('defect 7: facts reports nested 2,000 and 100,000 deep are refused 400 JSON_TOO_DEEP', async () => {
    const agent = Identity.generate();
    await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name: 'shallow', facts: { system: 'x86_64-linux', hostname: 'shallow' } });
    const revision = test.coordinator.state.get('agents', agent.keyId)!.factsRevision;
    for (const depth of [2_000, 100_000]) {
      const before = test.coordinator.lastSeq;
      const answer = await signedPost(test.http.url, agent, '/v1/agent/facts', `{"facts":${deepFactsText(depth)}}`);
      expect(answer.status, `${depth} deep`).toBe(400);
      expect(answer.body.error?.code).toBe('JSON_TOO_DEEP');
      expect(answer.body.error?.message).toMatch(/^request body nests deeper than 64 levels \(at \$\.facts\.deep\.a\.a/);
      expect(test.coordinator.lastSeq).toBe(before);
      expect(test.coordinator.state.get('agents', agent.keyId)!.factsRevision).toBe(revision);
    }
  });

  it('defect 7: facts may nest 32 levels; at 33 (within the body bound) they are refused 400 INVALID, naming where', async () => {
    const agent = Identity.generate();
    await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name: 'edge', facts: { system: 'x86_64-linux', hostname: 'edge' } });
    const before = test.coordinator.lastSeq;
    expect((await signedPost(test.http.url, agent, '/v1/agent/facts', `{"facts":${deepFactsText(32)}}`)).status).toBe(201);
    expect(test.coordinator.lastSeq).toBe(before + 1);
    const refused = await signedPost(test.http.url, agent, '/v1/agent/facts', `{"facts":${deepFactsText(33)}}`);
    expect(refused).toEqual({ status: 400, body: { error: { code: 'INVALID', message: `facts: nests deeper than 32 levels (at $.deep${'.a'.repeat(31)})` } } });
    const enrolling = await signedPost(test.http.url, Identity.generate(), '/v1/enroll', `{"token":"${token}","name":"edge2","facts":${deepFactsText(33)}}`);
    expect(enrolling.body.error?.code).toBe('INVALID');
    expect(test.coordinator.lastSeq).toBe(before + 1);
  });

  it('defect 7: a data-plane request header nested 65 and 100,000 deep is answered JSON_TOO_DEEP on /v1/data', async () => {
    for (const depth of [65, 100_000]) {
      const header = Buffer.from(`{"op":"blobs.get","ids":${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}}`);
      const frame = Buffer.concat([Buffer.alloc(4), header]);
      frame.writeUInt32BE(header.length);
      const headers = { ...signRequest(test.pusher, 'POST', '/v1/data', header), 'content-type': 'application/x-ferry-frames' };
      const response = await fetch(`${test.http.url}/v1/data`, { method: 'POST', headers, body: frame });
      const reader = new FrameReader((async function* () {
        yield new Uint8Array(await response.arrayBuffer());
      })());
      expect(await reader.readHeader(MAX_REPLY_HEADER_BYTES), `${depth} deep`).toEqual({
        error: { code: 'JSON_TOO_DEEP', message: `frame header nests deeper than 64 levels (at $.ids${'[0]'.repeat(63)})` },
      });
    }
    expect(test.log.join('\n')).not.toMatch(/internal error/);
  });

  it('defect 7: the QUIC server reads headers through the same bounded reader', async () => {
    // quic-server.ts: DataRequestSchema.parse(await reader.readHeader(MAX_REQUEST_HEADER_BYTES)).
    const header = Buffer.from(`{"op":"hello","x":${nestedText(100_000)}}`);
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(header.length);
    const reader = new FrameReader((async function* () {
      yield prefix;
      yield header;
    })());
    await expect(reader.readHeader(8 * 1024 * 1024)).rejects.toThrow(FrameError);
    const again = new FrameReader((async function* () {
      yield Buffer.concat([prefix, header]);
    })());
    await expect(again.readHeader(8 * 1024 * 1024)).rejects.toMatchObject({ code: 'JSON_TOO_DEEP' });
  });
});

describe('defect 7: what walks stored JSON takes any depth', () => {
  it('defect 7: sameJson, cloneJson and the in-memory state store take values 100,000 deep', () => {
    const deep = nested(100_000, [1, { b: 2 }]);
    expect(commands.sameJson(deep, cloneJson(deep))).toBe(true);
    expect(commands.sameJson(deep, nested(100_000, [1, { b: 3 }]))).toBe(false);
    expect(commands.sameJson(deep, nested(99_999, [1, { b: 2 }]))).toBe(false);
    const store = new MemoryStateStore();
    store.put('agentFacts', { id: 'x#1', agentId: 'x', revision: 1, facts: { deep }, hlc: 'h', seq: 1 });
    expect(stringifyJson(store.get('agentFacts', 'x#1')!.facts)).toBe(stringifyJson({ deep }));
  });
});

describe('defect 7: a log that already holds facts nested 5,000 deep', () => {
  const depth = 5_000;
  let dir: string;
  let coordinator: Coordinator;
  let server: RunningServer | undefined;
  let viewerIdentity: Identity;
  let admin: Identity;
  let agentId: string;
  let deepSeq: number;
  const deepFacts = JSON.parse(deepFactsText(depth)) as Facts;
  const log: string[] = [];

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-deep-log-'));
    const writer = Coordinator.open(dir);
    ({ admin } = bootstrap(writer));
    const adminActor: Actor = { keyId: admin.keyId, role: 'admin', requestSignature: null };
    viewerIdentity = Identity.generate();
    writer.record(coordinatorActor(writer), (context) => commands.addKey(context, { keyId: viewerIdentity.keyId, role: 'viewer', label: 'auditor' }));
    const token = writer.execute(adminActor, (context) => {
      const created = commands.createToken(context, { uses: 1, autoApprove: true });
      return { draft: created.draft, result: created.token };
    })!.result;
    const agent = Identity.generate();
    agentId = agent.keyId;
    const agentActor: Actor = { keyId: agentId, role: 'agent', requestSignature: null };
    writer.record(agentActor, (context) => commands.enrollAgent(context, { token, name: 'deep', facts: { system: 'x86_64-linux', hostname: 'deep' } }));
    // Around the boundary, as a coordinator before the bounds accepted it: the command path
    // (record: canonical JSON, hash chain, reducer, state tables) with a draft no input schema saw.
    deepSeq = writer.record(agentActor, () => ({
      action: 'agent.facts',
      subject: agentId,
      payload: { agentId: agentId as KeyId, facts: deepFacts, hlc: writer.tickHlc() },
    }))!.seq;
    // Then the agent reports ordinary facts again, compared with the deep ones (sameJson).
    const hlc = formatHlc({ wall: Date.now(), counter: 0, node: 'agent' });
    expect(writer.record(agentActor, (context) => commands.reportFacts(context, { facts: { system: 'x86_64-linux', hostname: 'deep' } }, hlc))).toBeDefined();
    writer.close();
    coordinator = Coordinator.open(dir);
  });
  afterAll(async () => {
    await server?.close();
    coordinator?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('defect 7: `ferry audit verify` (verifyAudit) reports the chain ok, every time', async () => {
    for (let round = 0; round < 3; round++) {
      expect(await coordinator.verifyAudit()).toMatchObject({ ok: true, events: coordinator.lastSeq, firstBad: null });
    }
    expect(coordinator.lastSeq).toBe(deepSeq + 1);
  });

  it('defect 7: replay into an empty database and into memory rebuilds the live state', () => {
    for (let round = 0; round < 3; round++) {
      const replayDb = openCoordinatorDatabase(path.join(dir, `replay-${round}.db`));
      try {
        const replayed = new SqliteStateStore(replayDb.db);
        const memory = new MemoryStateStore();
        expect(coordinator.replayInto(replayed)).toEqual({ events: coordinator.lastSeq, lastSeq: coordinator.lastSeq });
        expect(replayLog(coordinator.events(), memory).lastSeq).toBe(coordinator.lastSeq);
        for (const table of STATE_TABLES) {
          // Compared as text: vitest's deep equality recurses.
          const live = stringifyJson(coordinator.state.all(table));
          expect(stringifyJson(replayed.all(table)), table).toBe(live);
          expect(stringifyJson([...memory.tables[table].values()].sort((a, b) => (a.id < b.id ? -1 : 1))), table).toBe(live);
        }
        expect(canonicalJson(replayed.get('agentFacts', `${agentId}#2`)!.facts)).toBe(canonicalJson(deepFacts));
      } finally {
        replayDb.sqlite.close();
      }
    }
  });

  it('defect 7: the viewer serves the event, the fleet at it, search and verification (over-deep parts as a placeholder)', async () => {
    server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: (line) => log.push(line) });
    const viewer = new CoordinatorHttpClient(server.url, viewerIdentity);
    for (let round = 0; round < 3; round++) {
      const info = await viewer.call('viewer.info');
      expect(info).toMatchObject({ lastSeq: coordinator.lastSeq, replayableThrough: coordinator.lastSeq, stoppedAt: null, verification: { ok: true } });

      const detail = await viewer.call('viewer.event', { seq: String(deepSeq) });
      expect(detail.entry).toMatchObject({ seq: deepSeq, action: 'agent.facts', agent: agentId });
      expect(detail.verification.state).toBe('verified');
      expect(detail.replayProblem).toBeNull();
      expect(detail.diff?.map((change) => [change.table, change.kind])).toEqual([
        ['agentFacts', 'added'],
        ['agents', 'changed'],
      ]);
      expect(jsonBoundsViolation(detail, { maxDepth: MAX_VIEWER_JSON_DEPTH })).toBeUndefined();
      expect(stringifyJson(detail.event.payload)).toContain(JSON_TOO_DEEP_PLACEHOLDER);
      expect((detail.event.payload as { facts: { hostname: string } }).facts.hostname).toBe('deep');

      for (const at of [deepSeq, deepSeq + 1]) {
        const state = await viewer.call('viewer.state', { at: String(at), full: '1' });
        const row = state.state.agents.rows.find((agent) => agent.id === agentId)!;
        expect(row.factsRevision).toBe(at === deepSeq ? 2 : 3);
        expect(stringifyJson(row.facts).includes(JSON_TOO_DEEP_PLACEHOLDER)).toBe(at === deepSeq);
      }
      const found = await viewer.call('viewer.events', { q: '"a":{"a":{"a"' });
      expect(found.entries.map((entry) => entry.seq)).toEqual([deepSeq]);
      expect(await viewer.call('viewer.verify', { refresh: '1' })).toMatchObject({ ok: true });
    }
    expect(log.join('\n')).not.toMatch(/internal error|call stack/);
  });

  it('defect 7: the API returns the stored facts and events exactly, and the export verifies and replays offline', async () => {
    server ??= await startHttpServer(coordinator, '127.0.0.1', 0, { log: (line) => log.push(line) });
    const client = new CoordinatorHttpClient(server.url, admin);
    for (let round = 0; round < 3; round++) {
      const { revisions } = await client.call('agents.facts', { agentId, history: '1' });
      // Canonically: the log holds the facts in canonical JSON (sorted keys).
      expect(canonicalJson(revisions.find((revision) => revision.seq === deepSeq)!.facts)).toBe(canonicalJson(deepFacts));
      const { events } = await client.call('audit.events', { after: String(deepSeq - 1), limit: '1' });
      expect(canonicalJson((events[0]!.payload as { facts: unknown }).facts)).toBe(canonicalJson(deepFacts));

      const exported = parseAuditExport(await (await client.send('GET', '/v1/audit/export')).text());
      expect(verifyAuditExport(exported, publicKeyOf(coordinator.identity.keyId as KeyId))).toMatchObject({ ok: true });
      const offline = new Viewer(exportLogSource(exported, coordinator.identity.keyId as KeyId));
      expect(await offline.ready()).toMatchObject({ ok: true });
      expect(offline.event(deepSeq).replayProblem).toBeNull();
      expect(offline.replayIndex.replayableThrough).toBe(coordinator.lastSeq);
    }
    expect(log.join('\n')).not.toMatch(/internal error|call stack/);
  });

  it('defect 7: an exported line nested deeper than any log can hold is refused with its line number', () => {
    const header = JSON.stringify({ type: 'header', format: 'ferry-audit-export-v1', coordinatorKey: 'k', name: 'n', exportedAt: 1 });
    expect(() => parseAuditExport(`${header}\n{"type":"event","payload":${nestedText(70_000)}}\n`)).toThrow(
      /^audit export line 2: JSON_TOO_DEEP: the line nests deeper than 65536 levels/,
    );
  });
});
