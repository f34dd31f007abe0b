// Site relays (docs/relays.md) with a real relay process (`ferry relay run`, HTTPS on 127.0.0.1) between a
// real coordinator (HTTP + QUIC on 127.0.0.1) and agents: a deploy through the relay, fetched from the
// coordinator once for the whole site; the relay SIGKILLed mid-transfer; a relay that flips bytes; and
// requests to the relay without a grant it accepts. The CLI runs from build/ (`npm run build`).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import type { Digest } from '../castore/index.js';
import { storePathLocation } from '../nix/store-path.js';
import { signProof } from '../protocol/coordinator-proofs.js';
import { encodeHeaderFrame } from '../protocol/framing.js';
import { pinnedFetch } from '../protocol/pinned-fetch.js';
import { signRequest } from '../protocol/request-signing.js';
import { DataClient, DataError } from '../protocol/data-client.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { formatJoinString } from '../protocol/join-string.js';
import { encodeRelayGrant, RELAY_GRANT_HEADER, relayGrantMessage, RelayStatusSchema, type RelayGrant, type RelayStatus } from '../protocol/relays.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { ferryBin, freePort, runFerry as ferry } from './cli-process.js';
import { enrollSiteAgent, expectSameTree, startCountingProxy, type CountingProxy } from './relay-fixtures.js';


const system = nixSystem();

let test: TestCoordinator;
let work: string;
const siteAgent = (name: string, graph: string, site = 'barn-3') => enrollSiteAgent(test, work, name, graph, site);
let relayDir: string;
let relayId: string;
let relayFingerprint: string;
let relayPort: number;
let relay: ChildProcess | undefined;
/** A proxy in front of the relay (the URL agents are given), which can kill it mid-transfer (killAfter). */
let front: CountingProxy;
const relayLog: string[] = [];

/** Relay -> agent bytes after which the proxy in front of the relay SIGKILLs it (once). */
let killAfter: number | undefined;



/**
 * HTTPS only until the QUIC tests: agents' HTTPS goes through the kill-switch proxy, their QUIC would go to the
 * relay's UDP port past it. Under --no-quic an agent still asks for QUIC first (GET /v1/quic, 404): the fallback.
 */
let relayTransportArgs = ['--no-quic'];

async function startRelay(env: Record<string, string> = {}): Promise<void> {
  // Without prefetch: these tests count what agents' requests fetch through (test/relay-prefetch.test.ts prefetches).
  relay = spawn(process.execPath, [ferryBin, 'relay', 'run', '--state-dir', relayDir, '--no-prefetch', ...relayTransportArgs], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let text = '';
    relay!.stderr!.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      relayLog.push(chunk.toString('utf8'));
      if (text.includes('listening on')) resolve();
    });
    relay!.once('exit', (code) => reject(new Error(`the relay exited (${code}): ${text}`)));
  });
}

async function stopRelay(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const child = relay;
  relay = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The relay's status as `ferry relay status --json` prints it. */
async function relayStatus(): Promise<RelayStatus> {
  const result = await ferry(['relay', 'status', '--state-dir', relayDir, '--json']);
  expect(result.status, result.stderr).toBe(0);
  return RelayStatusSchema.parse(JSON.parse(result.stdout));
}

/** A new tree, ingested on the coordinator as a store path, and a config of it in `graph`. */
async function newConfig(graph: string, shape: { small: number; large: number; largeSize?: number }): Promise<{ configId: string; target: string; tree: string }> {
  const tree = path.join(work, `tree-${graph}`);
  writeTree(tree, graph, shape);
  const target = fakeStorePath(`relay-${graph}`);
  await addTreeAsStorePath(test.coordinator.castore, tree, target);
  const { configId } = await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, [], { [system]: target }, graph, { activate: 'true' }) });
  return { configId, target, tree };
}


function eventsOf(stateDir: string): { kind: string; message: string }[] {
  return readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { kind: string; message: string });
}


beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-relay-'));
  relayDir = path.join(work, 'relay');
  relayPort = await freePort();
  front = await startCountingProxy(
    () => relayPort,
    (down) => {
      if (killAfter === undefined || down < killAfter) return;
      killAfter = undefined;
      relay?.kill('SIGKILL');
    },
  );
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  const join = formatJoinString({ httpUrl: test.http.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
  const enrolled = await ferry(['relay', 'enroll', join, '--state-dir', relayDir, '--url', `https://127.0.0.1:${front.port}`, '--listen', `127.0.0.1:${relayPort}`, '--name', 'barn-3', '--json']);
  expect(enrolled.status, enrolled.stderr).toBe(0);
  ({ relayId, fingerprint: relayFingerprint } = JSON.parse(enrolled.stdout) as { relayId: string; fingerprint: string });
  await test.adminClient.call('relays.assign', { relayId, where: ['labels.site=barn-3'] });
  await startRelay();
}, 60_000);

afterAll(async () => {
  await stopRelay();
  await front?.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A data client to the relay over one transport only (QUIC: its UDP port, its certificate; no HTTPS fallback to hide a refusal). */
function relayClientOver(transport: 'https' | 'quic', identity: Identity, given: RelayGrant | undefined): DataClient {
  const headers = given ? { headers: { [RELAY_GRANT_HEADER]: encodeRelayGrant(given) } } : {};
  if (transport === 'https') return new DataClient({ identity, httpUrl: `https://127.0.0.1:${front.port}`, pinnedFingerprint: relayFingerprint, httpOnly: true, retries: 0, ...headers });
  return new DataClient({
    identity,
    // Nothing listens there: a request that QUIC did not carry fails instead of being answered over HTTPS.
    httpUrl: 'https://127.0.0.1:9',
    quicAddress: `127.0.0.1:${relayPort}`,
    certificatePem: readFileSync(path.join(relayDir, 'tls', 'cert.pem'), 'utf8'),
    quicSignedRequests: true,
    retries: 0,
    ...headers,
  });
}

/**
 * The grant cases, over `transport`: an insider with its grant is served; no grant, another agent's, an expired
 * or forged one, a grant for another config, an object outside it and an upload are refused (FORBIDDEN).
 */
/** The first file's blob of store path `target` (depth first), as the coordinator holds it. */
function firstBlob(target: string): Digest {
  const walk = (id: Digest): Digest | undefined => {
    for (const entry of test.coordinator.castore.readDirectory(id)) {
      const found = entry.type === 'file' ? entry.digest : entry.type === 'directory' ? walk(entry.digest) : undefined;
      if (found) return found;
    }
    return undefined;
  };
  const root = test.coordinator.castore.getStorePath(target)!.root;
  const found = root.type === 'file' ? root.digest : root.type === 'directory' ? walk(root.digest) : undefined;
  if (!found) throw new Error(`${target} has no file`);
  return found;
}

async function refusesWithoutGrant(transport: 'https' | 'quic'): Promise<{ served: { configId: string }; other: { configId: string }; insiderKey: Identity }> {
    const served = await newConfig(`granted-${transport}`, { small: 5, large: 0 });
    const other = await newConfig(`elsewhere-${transport}`, { small: 5, large: 0 });
    const insider = await siteAgent(`agent-5-${transport}`, `granted-${transport}`);
    // An agent at another site, following a graph no agent of the relay's site follows.
    const outsider = await siteAgent(`agent-6-${transport}`, `elsewhere-${transport}`, 'barn-9');
    const insiderKey = insider.agent.identity;
    const outsiderKey = outsider.agent.identity;
    await insider.agent.close();
    await outsider.agent.close();
    const grant = (agentId: string, configId: string, expiresAt = Date.now() + 600_000, signer: Identity = test.coordinator.identity): RelayGrant => ({
      agentId: agentId as RelayGrant['agentId'],
      configId,
      expiresAt,
      proof: signProof(signer, relayGrantMessage(agentId, configId, expiresAt)),
    });
    const ask = async (identity: Identity, given: RelayGrant | undefined, configId: string): Promise<string> => {
      const client = relayClientOver(transport, identity, given);
      try {
        await client.call({ op: 'closure.manifest', configId, system });
        expect(client.transportKind).toBe(transport === 'quic' ? 'quic' : 'http');
        return 'served';
      } catch (error) {
        return error instanceof DataError ? `${error.code}: ${error.message}` : `unexpected: ${(error as Error).message}`;
      } finally {
        await client.close();
      }
    };
    // The insider with its own grant is served; the outsider is refused however it asks.
    expect(await ask(insiderKey, grant(insiderKey.keyId, served.configId), served.configId)).toBe('served');
    expect(await ask(outsiderKey, undefined, other.configId)).toMatch(/^FORBIDDEN: .*grant/);
    expect(await ask(outsiderKey, grant(insiderKey.keyId, served.configId), served.configId)).toMatch(/^FORBIDDEN: the grant is for another agent/);
    expect(await ask(insiderKey, grant(insiderKey.keyId, served.configId, Date.now() - 1), served.configId)).toMatch(/^FORBIDDEN: the grant expired/);
    expect(await ask(outsiderKey, grant(outsiderKey.keyId, other.configId, undefined, Identity.generate()), other.configId)).toMatch(/^FORBIDDEN: the grant is not signed by the coordinator/);
    // A grant for one config opens no other: not its manifest, not its objects.
    expect(await ask(insiderKey, grant(insiderKey.keyId, served.configId), other.configId)).toMatch(/^FORBIDDEN: the grant is for config/);
    const otherRoot = test.coordinator.castore.getStorePath(other.target)!.root;
    if (otherRoot.type !== 'directory') throw new Error('a tree is a directory');
    const otherFile = test.coordinator.castore.readDirectory(otherRoot.digest).find((entry) => entry.type === 'directory');
    if (otherFile?.type !== 'directory') throw new Error('the tree has subdirectories');
    const client = relayClientOver(transport, insiderKey, grant(insiderKey.keyId, served.configId));
    try {
      await expect(client.call({ op: 'directories.get', ids: [otherFile.digest] })).rejects.toMatchObject({ code: 'FORBIDDEN' });
      // Streams and outboards alike: another closure's blob is refused; a stream of its own the relay kept none of is "ask in batches".
      const otherBlob = firstBlob(other.target);
      await expect(client.call({ op: 'blobs.stream', ids: [otherBlob], accept: ['zstd'] })).rejects.toMatchObject({ code: 'FORBIDDEN' });
      await expect(client.call({ op: 'blob.get', id: otherBlob, offset: 0, length: 0, outboard: true })).rejects.toMatchObject({ code: 'FORBIDDEN' });
      await expect(client.call({ op: 'blobs.stream', ids: [firstBlob(served.target)], accept: ['zstd'] })).rejects.toMatchObject({ code: 'INVALID', message: expect.stringMatching(/no stream of these blobs/) });
      // Uploads and queries are not a relay's.
      await expect(client.call({ op: 'missing', storePaths: [], blobs: [], directories: [] })).rejects.toMatchObject({ code: 'FORBIDDEN' });
      expect(client.transportKind).toBe(transport === 'quic' ? 'quic' : 'http');
    } finally {
      await client.close();
    }
    return { served, other, insiderKey };
}

describe('a site relay', () => {
  it('serves a whole deploy to one agent, fetching from the coordinator once: a second agent adds no coordinator reads', async () => {
    const { configId, target, tree } = await newConfig('site', { small: 60, large: 2 });
    const first = await siteAgent('agent-1', 'site');
    const second = await siteAgent('agent-2', 'site');
    try {
      // The coordinator tells each agent its relay, with a grant for its desired config.
      const listed = await test.adminClient.call('relays.list', {});
      expect(listed.relays.map((row) => [row.id, row.where, row.fingerprint])).toEqual([[relayId, ['labels.site=barn-3'], relayFingerprint]]);

      expect(await first.agent.runOnce()).toBe('active');
      expect(eventsOf(first.stateDir).map((event) => event.kind)).toContain('relay');
      // The relay runs with --no-quic here: the agent fell back to HTTPS.
      expect(eventsOf(first.stateDir).find((event) => event.kind === 'relay')?.message).toMatch(/ over HTTPS$/);
      expect(eventsOf(first.stateDir).map((event) => event.kind)).not.toContain('relay-failed');
      expectSameTree(storePathLocation(first.storeDir, target), tree);
      const afterFirst = await until('the relay status', async () => {
        const status = await relayStatus();
        return status.agentsServed === 1 && status.bytesServed > 0 ? status : undefined;
      });
      expect(afterFirst.misses).toBeGreaterThan(0);
      expect(afterFirst.bytesFetched).toBeGreaterThan(2 * 3 * 1024 * 1024);

      expect(await second.agent.runOnce()).toBe('active');
      expect(eventsOf(second.stateDir).map((event) => event.kind)).toContain('relay');
      expectSameTree(storePathLocation(second.storeDir, target), tree);
      const afterSecond = await until('the relay status', async () => {
        const status = await relayStatus();
        return status.agentsServed === 2 ? status : undefined;
      });
      // Everything the second agent got was in the cache: no object, no byte more from the coordinator.
      expect(afterSecond.misses).toBe(afterFirst.misses);
      expect(afterSecond.bytesFetched).toBe(afterFirst.bytesFetched);
      expect(afterSecond.hits).toBeGreaterThan(afterFirst.hits);
      expect(afterSecond.bytesServed).toBeGreaterThanOrEqual(2 * afterFirst.bytesServed - 1);
      expect(test.coordinator.state.get('agents', second.agentId)?.currentConfig).toBe(configId);
    } finally {
      await first.agent.close();
      await second.agent.close();
    }
  }, 120_000);

  it('killed (SIGKILL) mid-transfer: the agent finishes from the coordinator and says the relay failed', async () => {
    const { configId, target, tree } = await newConfig('kill', { small: 40, large: 6, largeSize: 4 * 1024 * 1024 + 77 });
    const third = await siteAgent('agent-3', 'kill');
    try {
      killAfter = front.down + 3 * 1024 * 1024;
      expect(await third.agent.runOnce()).toBe('active');
      expect(relay?.signalCode ?? (await new Promise((resolve) => relay!.once('exit', (_code, signal) => resolve(signal))))).toBe('SIGKILL');
      const failed = eventsOf(third.stateDir).filter((event) => event.kind === 'relay-failed');
      expect(failed).toHaveLength(1);
      expect(test.coordinator.state.get('agents', third.agentId)?.currentConfig).toBe(configId);
      expectSameTree(storePathLocation(third.storeDir, target), tree);
    } finally {
      await third.agent.close();
      relay = undefined;
    }
  }, 120_000);

  it('failing three times in a row (still down): dropped, so the next deploy goes to the coordinator at once', async () => {
    expect(relay).toBeUndefined();
    let { configId } = await newConfig('drop-0', { small: 2, large: 0 });
    const agent = await siteAgent('agent-9', 'drop-0');
    try {
      for (let round = 0; round < 4; round++) {
        const graph = `drop-${round}`;
        if (round > 0) ({ configId } = await newConfig(graph, { small: 2, large: 0 }));
        await test.adminClient.call('agents.assign', { agentId: agent.agentId, graph });
        expect(await agent.agent.runOnce()).toBe('active');
        expect(test.coordinator.state.get('agents', agent.agentId)?.currentConfig).toBe(configId);
      }
      const kinds = eventsOf(agent.stateDir).map((event) => event.kind).filter((kind) => kind.startsWith('relay'));
      // Three failures, the drop, then a deploy that did not try the relay.
      expect(kinds).toEqual(['relay-failed', 'relay-failed', 'relay-failed', 'relay-dropped']);
    } finally {
      await agent.agent.close();
    }
  }, 120_000);

  it('flipping bytes: its blobs are refused, nothing corrupt is visible, the deploy finishes from the coordinator', async () => {
    await startRelay({ FERRY_RELAY_TEST_FAULT: 'flip-blob-bytes' });
    try {
      const { configId, target, tree } = await newConfig('flip', { small: 30, large: 1 });
      const fourth = await siteAgent('agent-4', 'flip');
      try {
        expect(await fourth.agent.runOnce()).toBe('active');
        const failed = eventsOf(fourth.stateDir).filter((event) => event.kind === 'relay-failed');
        expect(failed).toHaveLength(1);
        expect(failed[0]!.message).toMatch(/hash|corrupt|BLAKE3|verif/i);
        expect(test.coordinator.state.get('agents', fourth.agentId)?.currentConfig).toBe(configId);
        expectSameTree(storePathLocation(fourth.storeDir, target), tree);
      } finally {
        await fourth.agent.close();
      }
    } finally {
      await stopRelay();
      await startRelay();
    }
  }, 120_000);

  it('withholding (stopped, SIGSTOP): costs the agent its bounded reply timeout, then the coordinator serves the deploy', async () => {
    const { configId, target, tree } = await newConfig('withheld', { small: 10, large: 1 });
    const fifth = await siteAgent('agent-7', 'withheld');
    const stalled = new Agent(fifth.stateDir, { log: () => undefined, relayReplyTimeoutMs: 1000 });
    await fifth.agent.close();
    relay!.kill('SIGSTOP');
    try {
      const started = Date.now();
      expect(await stalled.runOnce()).toBe('active');
      // Two attempts of one second each, a backoff between them, then the coordinator: well under the HTTP client's 300 s.
      expect(Date.now() - started).toBeLessThan(15_000);
      const failed = eventsOf(fifth.stateDir).filter((event) => event.kind === 'relay-failed');
      expect(failed).toHaveLength(1);
      expect(failed[0]!.message).toMatch(/no reply .* within 1 s/);
      expect(test.coordinator.state.get('agents', fifth.agentId)?.currentConfig).toBe(configId);
      expectSameTree(storePathLocation(fifth.storeDir, target), tree);
    } finally {
      relay!.kill('SIGCONT');
      await stalled.close();
    }
  }, 120_000);

  it('refuses hostile requests before any work: unsigned, replayed, oversized, too deep, not the data route', async () => {
    const { configId } = await newConfig('hostile', { small: 3, large: 0 });
    const agent = await siteAgent('agent-8', 'hostile');
    const key = agent.agent.identity;
    await agent.agent.close();
    const expiresAt = Date.now() + 600_000;
    const grant = encodeRelayGrant({ agentId: key.keyId as RelayGrant['agentId'], configId, expiresAt, proof: signProof(test.coordinator.identity, relayGrantMessage(key.keyId, configId, expiresAt)) });
    const fetch = pinnedFetch(relayFingerprint);
    const send = async (body: Buffer, headers: Record<string, string>, method = 'POST', route = '/v1/data'): Promise<{ status: number; code?: string }> => {
      const response = await fetch(new URL(route, `https://127.0.0.1:${front.port}`), { method, headers, ...(method === 'POST' ? { body } : {}) });
      const bytes = Buffer.from(await response.arrayBuffer());
      if (response.status !== 200 || bytes.length < 4) return { status: response.status };
      const header = JSON.parse(bytes.subarray(4, 4 + bytes.readUInt32BE(0)).toString('utf8')) as { error?: { code: string } };
      return { status: response.status, ...(header.error ? { code: header.error.code } : {}) };
    };
    const frame = encodeHeaderFrame({ op: 'closure.manifest', configId, system });
    const signed = (body: Buffer, header = body.subarray(4)) => ({ ...signRequest(key, 'POST', '/v1/data', header), [RELAY_GRANT_HEADER]: grant });
    // The honest request, sent first without its grant: refused, and its nonce not spent (only a granted agent spends
    // nonces, so a key the coordinator never granted cannot fill the relay's table); then the same bytes again once
    // served (its nonce is spent).
    const honest = signed(frame);
    const { [RELAY_GRANT_HEADER]: _grant, ...ungranted } = honest;
    expect(await send(frame, ungranted)).toEqual({ status: 200, code: 'FORBIDDEN' });
    expect(await send(frame, honest)).toEqual({ status: 200 });
    expect(await send(frame, honest)).toEqual({ status: 200, code: 'REPLAYED_NONCE' });
    expect(await send(frame, { [RELAY_GRANT_HEADER]: grant })).toEqual({ status: 200, code: 'UNAUTHENTICATED' });
    // Signed over other bytes than those sent.
    expect(await send(frame, signed(frame, Buffer.from('{}')))).toEqual({ status: 200, code: 'UNAUTHENTICATED' });
    const deep = encodeHeaderFrame(JSON.parse(`${'['.repeat(100)}${']'.repeat(100)}`));
    expect(await send(deep, signed(deep))).toEqual({ status: 200, code: 'JSON_TOO_DEEP' });
    const huge = Buffer.alloc(13 * 1024 * 1024);
    huge.writeUInt32BE(huge.length - 4);
    expect((await send(huge, signed(huge))).code).toMatch(/^(INVALID|FRAME_TOO_LARGE)$/);
    expect((await send(Buffer.alloc(0), {}, 'GET')).status).toBe(404);
    expect(relay!.exitCode).toBeNull();
  }, 60_000);

  it('refuses an agent without a grant for that config: none, another agent’s, expired, forged; and a relay key reads only its agents’ configs', async () => {
    const { served, other } = await refusesWithoutGrant('https');
    // The relay's own key, on the coordinator's data plane: the configs of its agents only.
    const relayKey = loadIdentity(path.join(relayDir, 'identity'));
    const upstream = new DataClient({ identity: relayKey, httpUrl: test.http.url, httpOnly: true, retries: 0 });
    try {
      const manifest = await upstream.call({ op: 'closure.manifest', configId: served.configId, system });
      await manifest.body.expectEnd();
      await expect(upstream.call({ op: 'closure.manifest', configId: other.configId, system })).rejects.toMatchObject({ code: 'FORBIDDEN' });
      await expect(upstream.call({ op: 'missing', storePaths: [], blobs: [], directories: [] })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    } finally {
      await upstream.close();
    }
    const refused = await until('the relay status', async () => {
      const status = await relayStatus();
      return status.refused >= 7 ? status : undefined;
    });
    expect(refused.refused).toBeGreaterThanOrEqual(7);
  }, 120_000);

  it('lists what agents reported of it (fetched through, failed, dropped); an agent it does not serve cannot add failures', async () => {
    const reports = await until('the agents\' reports', async () => {
      const { relays } = await test.adminClient.call('relays.list', {});
      const report = relays.find((row) => row.id === relayId)?.reports;
      return report && report.drops >= 1 && report.failures >= 4 ? report : undefined;
    });
    // agent-1 and agent-2 fetched through it; agent-3 (killed), agent-9 (three times, then dropped), agent-4
    // (flipped bytes) and agent-7 (withheld) reported it failing: six failures, of which the activity an agent
    // publishes (at most every 500 ms, best effort) carries most.
    expect(reports.agentsServed).toBeGreaterThanOrEqual(2);
    expect(reports.failures).toBeGreaterThanOrEqual(4);
    expect(reports.failures).toBeLessThanOrEqual(6);
    expect(reports.drops).toBe(1);
    expect(reports.lastFailure?.message).toContain(relayId);
    // An agent at another site says the relay failed it: not counted (the relay does not serve it).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const settled = (await test.adminClient.call('relays.list', {})).relays.find((row) => row.id === relayId)?.reports;
    const stranger = await siteAgent('agent-10', 'granted-https', 'barn-9');
    await stranger.agent.close();
    const event = { at: Date.now(), kind: 'relay-failed', message: `relay https://127.0.0.1:1 (${relayId}) failed: made up`, configId: null };
    await new CoordinatorHttpClient(test.http.url, stranger.agent.identity).call('agent.activity', { phase: 'idle', configId: null, bytesDone: 0, bytesTotal: 0, objectsDone: 0, objectsTotal: 0, events: [event] });
    const { relays } = await test.adminClient.call('relays.list', {});
    expect(relays.find((row) => row.id === relayId)?.reports).toEqual(settled);
  }, 60_000);
});

describe('a site relay over QUIC', () => {
  beforeAll(async () => {
    await stopRelay();
    relayTransportArgs = [];
    await startRelay();
  }, 60_000);

  it('serves a deploy over QUIC (UDP at its HTTPS port), counted as QUIC in its status', async () => {
    const { configId, target, tree } = await newConfig('quic', { small: 30, large: 2 });
    const before = await relayStatus();
    expect(before.quicListening).toBe(`127.0.0.1:${relayPort}`);
    const agent = await siteAgent('agent-quic', 'quic');
    try {
      expect(await agent.agent.runOnce()).toBe('active');
      const events = eventsOf(agent.stateDir);
      expect(events.map((event) => event.kind)).not.toContain('relay-failed');
      expect(events.find((event) => event.kind === 'relay')?.message).toMatch(/ over QUIC$/);
      expectSameTree(storePathLocation(agent.storeDir, target), tree);
      expect(test.coordinator.state.get('agents', agent.agentId)?.currentConfig).toBe(configId);
      const after = await until('the relay status', async () => {
        const status = await relayStatus();
        return status.bytesServed > before.bytesServed && (status.requests?.quic ?? 0) > (before.requests?.quic ?? 0) ? status : undefined;
      });
      // Every data request of the deploy came over QUIC: none over HTTPS (the agent asked GET /v1/quic only).
      expect(after.requests?.https).toBe(before.requests?.https);
    } finally {
      await agent.agent.close();
    }
  }, 120_000);

  it('refuses over QUIC exactly what it refuses over HTTPS: no grant, another agent’s, expired, forged, another config, an upload', async () => {
    const before = await relayStatus();
    await refusesWithoutGrant('quic');
    const after = await until('the relay status', async () => {
      const status = await relayStatus();
      return status.refused >= before.refused + 7 ? status : undefined;
    });
    expect(after.requests?.quic).toBeGreaterThan(before.requests?.quic ?? 0);
  }, 120_000);

  it('refuses a QUIC request without a valid headers frame, or unsigned, and keeps serving', async () => {
    const certificatePem = readFileSync(path.join(relayDir, 'tls', 'cert.pem'), 'utf8');
    const { connectQuicAsync } = await import('@currentspace/http3');
    const session = await connectQuicAsync(`127.0.0.1:${relayPort}`, { ca: certificatePem, servername: 'ferry-coordinator', alpn: ['ferry-relay/1'], runtimeMode: 'portable', connectTimeoutMs: 3000 });
    const send = async (bytes: Buffer): Promise<unknown> => {
      const stream = session.openStream();
      stream.end(bytes);
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
      const reply = Buffer.concat(chunks);
      return JSON.parse(reply.subarray(4, 4 + reply.readUInt32BE(0)).toString('utf8'));
    };
    try {
      const request = encodeHeaderFrame({ op: 'closure.manifest', configId: 'a'.repeat(64), system });
      // No headers frame: the request frame is read as one, and refused.
      expect(await send(request)).toMatchObject({ error: { code: 'INVALID' } });
      // A headers frame too large, and one that is not headers.
      expect(await send(Buffer.concat([encodeHeaderFrame({ headers: { 'x-pad': 'p'.repeat(9000) } }), request]))).toMatchObject({ error: { code: 'INVALID' } });
      expect(await send(Buffer.concat([encodeHeaderFrame({ headers: { 'X-Upper': 'x' }, more: 1 }), request]))).toMatchObject({ error: { code: 'INVALID' } });
      // Headers, but no signature: unauthenticated, as over HTTPS.
      expect(await send(Buffer.concat([encodeHeaderFrame({ headers: {} }), request]))).toMatchObject({ error: { code: 'UNAUTHENTICATED' } });
      // Signed by a key with no grant.
      const stranger = Identity.generate();
      expect(await send(Buffer.concat([encodeHeaderFrame({ headers: signRequest(stranger, 'POST', '/v1/data', request.subarray(4)) }), request]))).toMatchObject({ error: { code: 'FORBIDDEN' } });
    } finally {
      await session.close();
    }
    expect(relay!.exitCode).toBeNull();
  }, 60_000);
});
