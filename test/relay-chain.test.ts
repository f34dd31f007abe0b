// An upstream relay (docs/relays.md, "Upstream relays"): a coordinator, a depot relay R1 and a site relay R2
// set to fetch from it (`relays.upstream`), two agents behind R2, all real processes and sockets on 127.0.0.1.
// Each relay reaches the coordinator (HTTP only) through a proxy that counts the bytes coming down, so the test
// sees what crossed each uplink: the agents deploy through R2, R2 fetches from R1, and the coordinator sends each
// blob once, to R1. R2's grants at R1 serve no other key, an agent's grant at R1 serves only its config, and with
// R1 killed R2 finishes from the coordinator. The CLI runs from build/ (`npm run build`).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { storePathLocation } from '../nix/store-path.js';
import { openRelayDataClient } from '../protocol/connect.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { formatJoinString } from '../protocol/join-string.js';
import { encodeRelayGrant, RELAY_GRANT_HEADER, RelayStatusSchema, type RelayEndpoint, type RelayGrant, type RelayStatus } from '../protocol/relays.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { ferryBin, freePort, runFerry as ferry } from './cli-process.js';
import { filesOf, startCountingProxy, type CountingProxy } from './relay-fixtures.js';

const system = nixSystem();

interface RunningRelay {
  id: string;
  dir: string;
  endpoint: RelayEndpoint;
  uplink: CountingProxy;
  process: ChildProcess;
  log: string[];
}

let test: TestCoordinator;
let work: string;
let depot: RunningRelay;
let site: RunningRelay;
const agents: { agent: Agent; agentId: string; stateDir: string; storeDir: string }[] = [];

async function startRelay(name: string): Promise<RunningRelay> {
  const uplink = await startCountingProxy(Number(new URL(test.http.url).port));
  const dir = path.join(work, name);
  const port = await freePort();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  const join = formatJoinString({ httpUrl: uplink.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
  const enrolled = await ferry(['relay', 'enroll', join, '--state-dir', dir, '--url', `https://127.0.0.1:${port}`, '--listen', `127.0.0.1:${port}`, '--name', name, '--json']);
  expect(enrolled.status, enrolled.stderr).toBe(0);
  const { relayId, fingerprint } = JSON.parse(enrolled.stdout) as { relayId: string; fingerprint: string };
  const child = spawn(process.execPath, [ferryBin, 'relay', 'run', '--state-dir', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  const log: string[] = [];
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      log.push(chunk.toString('utf8'));
      if (log.join('').includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`relay ${name} exited (${code}): ${log.join('')}`)));
  });
  return { id: relayId, dir, endpoint: { id: relayId as RelayEndpoint['id'], url: `https://127.0.0.1:${port}`, fingerprint }, uplink, process: child, log };
}

async function statusOf(relay: RunningRelay): Promise<RelayStatus> {
  const run = await ferry(['relay', 'status', '--state-dir', relay.dir, '--json']);
  expect(run.status, run.stderr).toBe(0);
  return RelayStatusSchema.parse(JSON.parse(run.stdout));
}

async function until<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  for (const deadline = Date.now() + 30_000; ; ) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function stop(relay: RunningRelay | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!relay || relay.process.exitCode !== null || relay.process.signalCode !== null) return;
  const exited = new Promise((resolve) => relay.process.once('exit', resolve));
  relay.process.kill(signal);
  await exited;
}


function bytesOf(files: Map<string, Buffer>): number {
  let total = 0;
  for (const bytes of files.values()) total += bytes.length;
  return total;
}

const heads = new Map<string, string>();

/** A config of a fresh tree (small files and two 3 MiB ones) submitted to `graph` (default `ship`) on its head: its id, store path and files. */
async function submitTree(seed: string, graph = 'ship'): Promise<{ configId: string; target: string; files: Map<string, Buffer> }> {
  const tree = path.join(work, `tree-${seed}`);
  writeTree(tree, seed, { small: 60, large: 2, largeSize: 3 * 1024 * 1024 + 17 });
  const target = fakeStorePath(`ship-${seed}`);
  await addTreeAsStorePath(test.coordinator.castore, tree, target);
  const parents = heads.has(graph) ? [heads.get(graph)!] : [];
  const { configId } = await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, parents, { [system]: target }, seed, { activate: 'true' }) });
  heads.set(graph, configId);
  return { configId, target, files: filesOf(tree) };
}

/** Both agents deploy; each fetched through the site relay (a `relay` event, no `relay-failed`) and has exactly the tree's files. */
async function deployAndCheck(target: string, files: Map<string, Buffer>): Promise<void> {
  expect(await Promise.all(agents.map((one) => one.agent.runOnce()))).toEqual(['active', 'active']);
  for (const one of agents) {
    const events = readFileSync(path.join(one.stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as { kind: string; message: string });
    const last = events.filter((event) => event.kind === 'relay' || event.kind === 'relay-failed').at(-1);
    expect(last?.kind, JSON.stringify(last)).toBe('relay');
    expect(last?.message).toContain(site.endpoint.url);
    const got = filesOf(storePathLocation(one.storeDir, target));
    expect([...got.keys()].sort()).toEqual([...files.keys()].sort());
    for (const [name, bytes] of files) expect(got.get(name)!.equals(bytes), name).toBe(true);
  }
}

beforeAll(async () => {
  // HTTP only, so every byte a relay takes from the coordinator crosses its counting proxy.
  test = await startTestCoordinator({ quic: false });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-relay-chain-'));
  depot = await startRelay('depot');
  site = await startRelay('site');
  // The depot serves no agent itself: only the site relay behind it.
  await test.adminClient.call('relays.assign', { relayId: site.id, where: ['labels.site=ship'] });
  await test.adminClient.call('relays.upstream', { relayId: site.id, upstream: depot.id });
  for (const name of ['a1', 'a2']) {
    const stateDir = path.join(work, name);
    const storeDir = path.join(stateDir, 'store');
    const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels: { site: 'ship' } });
    const join = formatJoinString({ httpUrl: test.http.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
    const { agentId } = await Agent.enroll(join, { stateDir, storeDir, name });
    agents.push({ agent: new Agent(stateDir, { log: () => undefined }), agentId, stateDir, storeDir });
  }
  // The site relay learned its upstream from its prefetch watch (the assignment and the upstream woke it).
  await until(async () => ((await statusOf(site)).upstream?.relay?.id === depot.id ? true : undefined), "the site relay's upstream");
}, 90_000);

afterAll(async () => {
  await Promise.all(agents.map((one) => one.agent.close()));
  await stop(site);
  await stop(depot);
  await site?.uplink.close();
  await depot?.uplink.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('an upstream relay', () => {
  let first: Awaited<ReturnType<typeof submitTree>>;

  it('serves a site relay behind it: agents deploy through the site relay, which fetched from the depot, and the coordinator sent each blob once', async () => {
    const listed = (await test.adminClient.call('relays.list', {})).relays;
    expect(listed.find((relay) => relay.id === site.id)?.upstream).toBe(depot.id);
    expect(listed.find((relay) => relay.id === depot.id)?.upstream).toBeNull();

    const [depotBefore, siteBefore] = [depot.uplink.down, site.uplink.down];
    first = await submitTree('one');
    for (const { agentId } of agents) await test.adminClient.call('agents.assign', { agentId, graph: 'ship' });
    const raw = bytesOf(first.files);
    await deployAndCheck(first.target, first.files);

    const siteStatus = await until(async () => {
      const status = await statusOf(site);
      return status.agentsServed >= 2 ? status : undefined;
    }, 'the site relay to count both agents');
    expect(siteStatus.upstream).toMatchObject({ relay: { id: depot.id, url: depot.endpoint.url }, fetchingFrom: 'relay', failures: 0 });
    expect(siteStatus.upstream!.tasks).toBeGreaterThan(0);
    // The depot served the site relay (its only client: one key) the whole closure, and fetched it from the coordinator once.
    const depotStatus = await until(async () => {
      const status = await statusOf(depot);
      return status.bytesServed >= raw ? status : undefined;
    }, 'the depot to count what it served');
    expect(depotStatus.agentsServed).toBe(1);
    expect(depotStatus.bytesServed).toBeLessThan(raw * 1.05);
    expect(depotStatus.bytesFetched).toBeGreaterThanOrEqual(raw);
    expect(depotStatus.bytesFetched, 'each blob fetched by the depot once').toBeLessThan(raw * 1.05);
    expect(depot.uplink.down - depotBefore).toBeLessThan(raw * 1.1);
    // The site's own uplink to the coordinator carried its watch and nothing of the closure.
    expect(site.uplink.down - siteBefore, `site uplink ${site.uplink.down - siteBefore} B for a closure of ${raw} B`).toBeLessThan(raw * 0.05);
  }, 120_000);

  it("refuses the site relay's grant to any other key, and an agent's grant for any other config than its own", async () => {
    // The site relay's grants, as the coordinator hands them (its prefetch watch, asked with its own key).
    const siteKey = loadIdentity(path.join(site.dir, 'identity'));
    const challenge = 'ab'.repeat(16);
    const answer = await new CoordinatorHttpClient(test.http.url, siteKey, { pinnedFingerprint: test.coordinator.tls.fingerprint }).call('relay.prefetch', { known: 'none', wait: 0, challenge });
    const grant = answer.upstream!.grants.find((one) => one.configId === first.configId)!;
    expect(grant.agentId).toBe(site.id);
    const manifestWith = async (identity: Identity, shown: RelayGrant, configId: string) => {
      const client = await openRelayDataClient(depot.endpoint, identity, { retries: 0, httpOnly: true, headers: { [RELAY_GRANT_HEADER]: encodeRelayGrant(shown) } });
      try {
        return (await client.call({ op: 'closure.manifest', configId, system })).header;
      } finally {
        await client.close();
      }
    };
    // With the site relay's own key it reads; with any other key the same grant is refused.
    expect((await manifestWith(siteKey, grant, first.configId)).configId).toBe(first.configId);
    await expect(manifestWith(Identity.generate(), grant, first.configId)).rejects.toThrow(/another agent/);

    // An agent of the site, with its own grant: its config at the depot, and nothing else.
    const stranger = Identity.generate();
    const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels: { site: 'ship' } });
    const http = new CoordinatorHttpClient(test.http.url, stranger, { pinnedFingerprint: test.coordinator.tls.fingerprint });
    await http.call('enroll', { token, name: 'stranger', facts: { system, hostname: 'stranger' } });
    const other = await submitTree('other', 'lab');
    await test.adminClient.call('agents.pin', { agentId: stranger.keyId, configId: other.configId });
    const desired = await http.call('agent.desired', { challenge: 'cd'.repeat(16) });
    const agentGrant = desired.relays!.grant;
    expect(agentGrant).toMatchObject({ agentId: stranger.keyId, configId: other.configId });
    expect((await manifestWith(stranger, agentGrant, other.configId)).configId).toBe(other.configId);
    await expect(manifestWith(stranger, agentGrant, first.configId)).rejects.toThrow(/the grant is for config/);
    await expect(manifestWith(stranger, grant, first.configId)).rejects.toThrow(/another agent/);
  }, 60_000);

  it('refuses an upstream that is the relay itself, makes a cycle or is unknown, saying why', async () => {
    await expect(test.adminClient.call('relays.upstream', { relayId: site.id, upstream: site.id })).rejects.toThrow(/cannot fetch from itself/);
    await expect(test.adminClient.call('relays.upstream', { relayId: depot.id, upstream: site.id })).rejects.toThrow(/would be a cycle/);
    await expect(test.adminClient.call('relays.upstream', { relayId: site.id, upstream: Identity.generate().keyId })).rejects.toThrow(/no relay/);
    await expect(test.adminClient.call('relays.upstream', { relayId: site.id, upstream: 'not-a-key' })).rejects.toThrow(/upstream: expected a key id/);
    expect((await test.adminClient.call('relays.list', {})).relays.find((relay) => relay.id === site.id)?.upstream).toBe(depot.id);
  });

  it('finishes from the coordinator when the depot is gone, each blob once, and counts the failures', async () => {
    // What the site prefetched before (the stranger's config) is all in, so the uplink counts this deploy alone.
    await until(async () => {
      const prefetch = (await statusOf(site)).prefetch;
      return prefetch && prefetch.current === null && prefetch.ready.length === prefetch.wanted ? true : undefined;
    }, "the site relay's prefetch to settle");
    await stop(depot, 'SIGKILL');
    const siteBefore = site.uplink.down;
    const second = await submitTree('two');
    await deployAndCheck(second.target, second.files);
    const status = await until(async () => {
      const current = await statusOf(site);
      return current.upstream && current.upstream.failures > 0 ? current : undefined;
    }, 'the site relay to count the failures');
    expect(status.upstream!.lastFailure).toBeTruthy();
    // What the depot could not send came straight from the coordinator, once (the tree is random: zstd saves nothing).
    const raw = bytesOf(second.files);
    expect(site.uplink.down - siteBefore).toBeGreaterThan(raw);
    expect(site.uplink.down - siteBefore, `site uplink ${site.uplink.down - siteBefore} B for a closure of ${raw} B`).toBeLessThan(raw * 1.1);
  }, 120_000);
});
