// Site relays' operations (docs/relays.md): a real relay process (`ferry relay run --metrics-listen`, HTTPS on
// 127.0.0.1) beside a real coordinator (HTTP + QUIC on 127.0.0.1) and agents. A config submitted for the relay's
// site is in the relay's cache before any agent asks (its prefetch watch is woken by the submission, not its
// 240 s deadline), and the agent then deploys from cache hits alone, the relay fetching nothing more; a relay
// assigned or revoked answers the held watches of exactly the agents whose relays changed; the prefetch route
// refuses what is not a relay's; and the relay's Prometheus metrics match its status. The CLI runs from build/
// (`npm run build`).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { storePathLocation } from '../nix/store-path.js';
import { DataClient } from '../protocol/data-client.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { formatJoinString } from '../protocol/join-string.js';
import { RelayStatusSchema, type RelayStatus } from '../protocol/relays.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { ferryBin, freePort, runFerry as ferry } from './cli-process.js';
import { enrollSiteAgent } from './relay-fixtures.js';


const system = nixSystem();
const FINGERPRINT = 'ab'.repeat(32);

let test: TestCoordinator;
let work: string;
const siteAgent = (name: string, graph: string, site: string) => enrollSiteAgent(test, work, name, graph, site);
let relayDir: string;
let relayId: string;
let relay: ChildProcess | undefined;
let metricsUrl: string;
const relayLog: string[] = [];



async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; relay log: ${relayLog.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function relayStatus(): Promise<RelayStatus> {
  const result = await ferry(['relay', 'status', '--state-dir', relayDir, '--json']);
  expect(result.status, result.stderr).toBe(0);
  return RelayStatusSchema.parse(JSON.parse(result.stdout));
}

/** A new tree as a store path, and a config of it in `graph` (a child of `parent` when given). */
async function newConfig(graph: string, shape: { small: number; large: number; largeSize?: number }, parent?: string): Promise<{ configId: string; target: string; tree: string }> {
  const name = `${graph}${parent ? '-child' : ''}`;
  const tree = path.join(work, `tree-${name}`);
  writeTree(tree, name, shape);
  const target = fakeStorePath(`prefetch-${name}`);
  await addTreeAsStorePath(test.coordinator.castore, tree, target);
  const { configId } = await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, parent ? [parent] : [], { [system]: target }, name, { activate: 'true' }) });
  return { configId, target, tree };
}


function eventKinds(stateDir: string): string[] {
  return readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => (JSON.parse(line) as { kind: string }).kind);
}

/** A relay enrolled through the API alone (no process): for what the coordinator decides about relays. */
async function enrolledRelayKey(name: string): Promise<Identity> {
  const key = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  await new CoordinatorHttpClient(test.http.url, key).call('relays.enroll', { token, name, url: 'https://127.0.0.1:9', fingerprint: FINGERPRINT });
  return key;
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-relay-prefetch-'));
  relayDir = path.join(work, 'relay');
  const port = await freePort();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  const join = formatJoinString({ httpUrl: test.http.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
  const enrolled = await ferry(['relay', 'enroll', join, '--state-dir', relayDir, '--url', `https://127.0.0.1:${port}`, '--listen', `127.0.0.1:${port}`, '--name', 'barn-3', '--json']);
  expect(enrolled.status, enrolled.stderr).toBe(0);
  ({ relayId } = JSON.parse(enrolled.stdout) as { relayId: string });
  await test.adminClient.call('relays.assign', { relayId, where: ['labels.site=barn-3'] });
  relay = spawn(process.execPath, [ferryBin, 'relay', 'run', '--state-dir', relayDir, '--metrics-listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  metricsUrl = await new Promise<string>((resolve, reject) => {
    let text = '';
    relay!.stderr!.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      relayLog.push(chunk.toString('utf8'));
      const found = /metrics at (http:\/\/\S+)/.exec(text);
      if (found) resolve(found[1]!);
    });
    relay!.once('exit', (code) => reject(new Error(`the relay exited (${code}): ${text}`)));
  });
}, 60_000);

afterAll(async () => {
  if (relay && relay.exitCode === null) {
    const exited = new Promise((resolve) => relay!.once('exit', resolve));
    relay.kill('SIGTERM');
    await exited;
  }
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('a relay prefetching', () => {
  it('has a config submitted for its site in its cache before any agent asks; the agent then deploys from hits alone', async () => {
    // The agent follows a graph whose first config is small: the relay prefetches it as the agent is assigned.
    const { configId: first } = await newConfig('pre', { small: 3, large: 0 });
    const site = await siteAgent('agent-1', 'pre', 'barn-3');
    try {
      const before = await until('the first closure prefetched', async () => {
        const status = await relayStatus();
        return status.prefetch?.ready.includes(`${first}.${system}`) && status.prefetch.current === null ? status : undefined;
      });
      const submitted = Date.now();
      const { configId, target, tree } = await newConfig('pre', { small: 80, large: 3, largeSize: 3 * 1024 * 1024 + 5 }, first);
      const key = `${configId}.${system}`;
      const ready = await until('the closure prefetched', async () => {
        const status = await relayStatus();
        return status.prefetch?.ready.includes(key) && status.prefetch.current === null ? status : undefined;
      });
      // Woken by the submission: well before the watch's 240 s deadline.
      const seconds = (Date.now() - submitted) / 1000;
      expect(seconds).toBeLessThan(20);
      expect(ready.prefetch!.wanted).toBe(1);
      expect(ready.prefetch!.prefetches).toBe(2);
      expect(ready.prefetch!.objectsFetched - before.prefetch!.objectsFetched).toBeGreaterThan(80);
      expect(ready.prefetch!.failed).toEqual([]);
      // Nothing asked by an agent yet: the agents' tally is empty, the bytes came for the prefetch.
      expect([ready.hits, ready.misses, ready.agentsServed]).toEqual([0, 0, 0]);
      expect(ready.bytesFetched - before.bytesFetched).toBeGreaterThan(3 * 3 * 1024 * 1024);
      // The closure copy the prefetch started brought them: counted as the prefetch's, bytes too.
      expect(ready.prefetch!.bytesFetched - before.prefetch!.bytesFetched).toBeGreaterThan(3 * 3 * 1024 * 1024);
      expect(ready.prefetch!.bytesFetched).toBeLessThanOrEqual(ready.bytesFetched);

      expect(await site.agent.runOnce()).toBe('active');
      expect(eventKinds(site.stateDir)).toContain('relay');
      expect(eventKinds(site.stateDir)).not.toContain('relay-failed');
      expect(test.coordinator.state.get('agents', site.agentId)?.currentConfig).toBe(configId);
      expect(readFileSync(path.join(storePathLocation(site.storeDir, target), 'big0')).equals(readFileSync(path.join(tree, 'big0')))).toBe(true);
      const served = await until('the relay status', async () => {
        const status = await relayStatus();
        return status.agentsServed === 1 && status.bytesServed > 0 ? status : undefined;
      });
      // Every object the agent asked for was a hit, and the relay fetched no byte more from the coordinator.
      expect(served.misses).toBe(0);
      expect(served.hits).toBeGreaterThan(80);
      expect(served.bytesFetched).toBe(ready.bytesFetched);
      expect(served.bytesServed).toBeGreaterThan(3 * 3 * 1024 * 1024);
    } finally {
      await site.agent.close();
    }
  }, 120_000);

  it('serves its metrics in Prometheus text format, matching its status', async () => {
    const status = await until('a written status', async () => {
      const current = await relayStatus();
      return current.agentsServed >= 1 ? current : undefined;
    });
    const response = await fetch(metricsUrl);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusTextFormat(await response.text());
    const value = (name: string, labels: Record<string, string> = {}): number | undefined => {
      const family = families.find((candidate) => candidate.name === name);
      const sample = family?.metrics.find((metric) => Object.entries(labels).every(([key, want]) => metric.labels?.[key] === want));
      return sample === undefined ? undefined : Number(sample.value);
    };
    expect(families.find((family) => family.name === 'ferry_relay_hits_total')?.type).toBe('COUNTER');
    expect(value('ferry_relay_hits_total')).toBe(status.hits);
    expect(value('ferry_relay_misses_total')).toBe(0);
    expect(value('ferry_relay_fetched_bytes_total')).toBe(status.bytesFetched);
    expect(value('ferry_relay_served_bytes_total')).toBe(status.bytesServed);
    expect(value('ferry_relay_cache_bytes')).toBeGreaterThan(3 * 3 * 1024 * 1024);
    expect(value('ferry_relay_cache_limit_bytes')).toBe(status.cache.limitBytes);
    expect(value('ferry_relay_cache_blobs')).toBe(status.cache.blobs);
    expect(value('ferry_relay_agents_served')).toBe(1);
    expect(value('ferry_relay_refused_requests_total')).toBe(status.refused);
    expect(value('ferry_relay_evicted_blobs_total')).toBe(0);
    expect(value('ferry_relay_prefetches_total')).toBe(2);
    expect(value('ferry_relay_prefetch_closures', { state: 'ready' })).toBe(1);
    expect(value('ferry_relay_prefetch_closures', { state: 'failed' })).toBe(0);
    expect(value('ferry_relay_prefetch_objects_total', { result: 'fetched' })).toBe(status.prefetch!.objectsFetched);
    expect(value('ferry_relay_prefetch_fetched_bytes_total')).toBe(status.prefetch!.bytesFetched);
    // Per transport, as the status counts them: the agent asked for something, over one of them.
    expect(families.find((family) => family.name === 'ferry_relay_requests_total')?.type).toBe('COUNTER');
    expect(value('ferry_relay_requests_total', { transport: 'quic' })).toBe(status.requests!.quic);
    expect(value('ferry_relay_requests_total', { transport: 'https' })).toBe(status.requests!.https);
    expect(status.requests!.quic + status.requests!.https).toBeGreaterThan(0);
    // Nothing else is served there.
    expect((await fetch(new URL('/other', metricsUrl))).status).toBe(404);
    expect((await fetch(metricsUrl, { method: 'POST', body: 'x' })).status).toBe(405);
  }, 60_000);
});

describe('relay assignments and the watches they wake', () => {
  it('answers the held watches of exactly the agents whose relays changed, at once, on assign and on revoke', async () => {
    await newConfig('far', { small: 2, large: 0 });
    const far = await siteAgent('agent-far', 'far', 'barn-7');
    const near = await siteAgent('agent-near', 'far', 'barn-3');
    await far.agent.close();
    await near.agent.close();
    const farClient = new CoordinatorHttpClient(test.http.url, far.agent.identity);
    const nearClient = new CoordinatorHttpClient(test.http.url, near.agent.identity);
    const configId = (test.coordinator.state.get('graphs', 'far') as { head: string }).head;
    type Answered = { relays?: { relays: { id: string }[] }; unchanged?: true; at: number };
    const hold = (client: CoordinatorHttpClient): Promise<Answered> => client.call('agent.watch', { known: configId, wait: 60 }).then((answer) => ({ ...(answer as object), at: Date.now() }) as Answered);
    const second = await enrolledRelayKey('barn-7');

    let farWatch = hold(farClient);
    const nearWatch = hold(nearClient);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const assigned = Date.now();
    await test.adminClient.call('relays.assign', { relayId: second.keyId, where: ['labels.site=barn-7'] });
    const farAnswer = await farWatch;
    expect(farAnswer.at - assigned).toBeLessThan(3_000);
    expect(farAnswer.relays?.relays.map((endpoint) => endpoint.id)).toEqual([second.keyId]);
    // The agent at barn-3 keeps its relay: its watch is still held.
    const stillHeld = await Promise.race([nearWatch.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 1_000))]);
    expect(stillHeld).toBe(true);

    farWatch = hold(farClient);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const revoked = Date.now();
    await test.adminClient.call('relays.revoke', { relayId: second.keyId });
    const afterRevoke = await farWatch;
    expect(afterRevoke.at - revoked).toBeLessThan(3_000);
    expect(afterRevoke.relays).toBeUndefined();
    expect(afterRevoke.unchanged).toBeUndefined();
    // Unblock the near watch: a relay reassigned away from barn-3 and back changes its relays twice.
    await test.adminClient.call('relays.assign', { relayId, where: ['labels.site=nowhere'] });
    expect((await nearWatch).relays).toBeUndefined();
    await test.adminClient.call('relays.assign', { relayId, where: ['labels.site=barn-3'] });
  }, 60_000);
});

describe('the prefetch route, hostile', () => {
  it('answers a relay only the closures of its own agents, and refuses other keys, revoked relays and bad input', async () => {
    const { configId: siteConfig } = await newConfig('site-b', { small: 2, large: 0 });
    const { configId: otherConfig } = await newConfig('other-b', { small: 2, large: 0 });
    const inside = await siteAgent('agent-b', 'site-b', 'barn-b');
    const outside = await siteAgent('agent-c', 'other-b', 'barn-c');
    await inside.agent.close();
    await outside.agent.close();
    const relayB = await enrolledRelayKey('barn-b');
    await test.adminClient.call('relays.assign', { relayId: relayB.keyId, where: ['labels.site=barn-b'] });
    const client = new CoordinatorHttpClient(test.http.url, relayB);
    const answer = await client.call('relay.prefetch', { known: 'none', wait: 0 });
    expect(answer.configs).toEqual([{ configId: siteConfig, system }]);
    expect(answer.truncated).toBe(false);
    // Known: held until the deadline, then the same set.
    const started = Date.now();
    expect((await client.call('relay.prefetch', { known: answer.digest, wait: 1 })).digest).toBe(answer.digest);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    // Its key reads its agents' closures on the data plane, nothing else.
    const data = new DataClient({ identity: relayB, httpUrl: test.http.url, httpOnly: true, retries: 0 });
    try {
      await (await data.call({ op: 'closure.manifest', configId: siteConfig, system })).body.expectEnd();
      await expect(data.call({ op: 'closure.manifest', configId: otherConfig, system })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    } finally {
      await data.close();
    }
    // A key that is not a relay's: an agent, an admin, a stranger.
    await expect(new CoordinatorHttpClient(test.http.url, inside.agent.identity).call('relay.prefetch', { known: 'none', wait: 0 })).rejects.toMatchObject({ status: 403, code: 'FORBIDDEN' });
    await expect(test.adminClient.call('relay.prefetch', { known: 'none', wait: 0 })).rejects.toMatchObject({ status: 403, code: 'FORBIDDEN' });
    await expect(new CoordinatorHttpClient(test.http.url, Identity.generate()).call('relay.prefetch', { known: 'none', wait: 0 })).rejects.toMatchObject({ status: 401 });
    // Bad input, named.
    for (const query of [{ known: 'nope' }, { known: 'A'.repeat(64) }, { wait: '-1' }, { wait: 'x' }, { colour: 'blue' }]) {
      await expect(client.get('/v1/relay/prefetch', { wait: '0', ...query }), JSON.stringify(query)).rejects.toMatchObject({ status: 400, code: 'INVALID' });
    }
    // Held, it answers as soon as a config is submitted for its agents' graph, not at its deadline.
    const woken = client.call('relay.prefetch', { known: answer.digest, wait: 60 }).then((next) => ({ next, at: Date.now() }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const tree = path.join(work, 'tree-site-b-next');
    writeTree(tree, 'site-b-next', { small: 1, large: 0 });
    const nextTarget = fakeStorePath('prefetch-site-b-next');
    await addTreeAsStorePath(test.coordinator.castore, tree, nextTarget);
    const submittedAt = Date.now();
    const { configId: nextConfig } = await test.adminClient.call('graphs.submit', { graph: 'site-b', ...signedConfig(test.admin, 'site-b', [siteConfig], { [system]: nextTarget }, 'next', { activate: 'true' }) });
    const { next, at } = await woken;
    expect(at - submittedAt).toBeLessThan(3_000);
    expect(next.configs).toEqual([{ configId: nextConfig, system }]);
    const current = await client.call('relay.prefetch', { known: 'none', wait: 0 });
    // Bounded: a relay holds MAX_WATCHES_PER_AGENT (4) at once.
    const held = Array.from({ length: 4 }, () => client.call('relay.prefetch', { known: current.digest, wait: 3 }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expect(client.get('/v1/relay/prefetch', { known: current.digest, wait: '3' })).rejects.toMatchObject({ status: 429, code: 'TOO_MANY_WATCHES' });
    await Promise.all(held);
    // Revoked: a held watch answers REVOKED at once, and so does every later one; its data-plane reads end too.
    const watching = client.call('relay.prefetch', { known: current.digest, wait: 60 }).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await test.adminClient.call('relays.revoke', { relayId: relayB.keyId });
    expect(await watching).toMatchObject({ code: 'REVOKED' });
    await expect(client.call('relay.prefetch', { known: 'none', wait: 0 })).rejects.toMatchObject({ code: 'REVOKED' });
    const revokedData = new DataClient({ identity: relayB, httpUrl: test.http.url, httpOnly: true, retries: 0 });
    try {
      await expect(revokedData.call({ op: 'closure.manifest', configId: siteConfig, system })).rejects.toMatchObject({ code: 'REVOKED' });
    } finally {
      await revokedData.close();
    }
    // The running relay's key was never told of barn-b's config.
    const ours = loadIdentity(path.join(relayDir, 'identity'));
    const ourAnswer = await new CoordinatorHttpClient(test.http.url, ours).call('relay.prefetch', { known: 'none', wait: 0 });
    expect(ourAnswer.configs.map((target) => target.configId)).not.toContain(siteConfig);
  }, 60_000);
});
