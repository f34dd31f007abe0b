// A site relay's uplink (relay/closure-copy.ts): a real relay process (`ferry relay run`) reaches a real
// coordinator (HTTP only, on 127.0.0.1) through a TCP proxy that counts the bytes coming down, and two agents
// deploy a cold, compressible closure through it at once. What crossed the "uplink" must be no more than
// 1.1x what one agent's own fetch from the coordinator moves (the same copy, zstd, counted by a proxy alike):
// the relay copies the closure compressed, once, and the agents' requests wait for it rather than fetching
// objects a second time. Then an upgrade changing a few large files slightly: the relay's copy fetches the
// groups that differ against the previous closure it holds, as a direct agent does, not the files whole.
// The CLI runs from build/ (`npm run build`).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { copyClosure, LocalCastore, openVouchedClosure } from '../castore/index.js';
import { storePathLocation } from '../nix/store-path.js';
import { openDataClient } from '../protocol/connect.js';
import { formatJoinString } from '../protocol/join-string.js';
import { RelayStatusSchema } from '../protocol/relays.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import type { CopyReport } from '../castore/index.js';
import { ferryBin, freePort, runFerry as ferry } from './cli-process.js';
import { enrollSiteAgent, expectSameTree, startCountingProxy, writeCompressibleTree, type CountingProxy, type SiteAgent } from './relay-fixtures.js';

const system = nixSystem();

let test: TestCoordinator;
let work: string;
let relay: ChildProcess | undefined;
let uplink: CountingProxy;

/** Agents enrolled behind the relay (label site=uplink), assigned to `graph`. */
function enrollAgents(names: readonly string[], graph: string): Promise<SiteAgent[]> {
  return Promise.all(names.map((name) => enrollSiteAgent(test, work, name, graph, 'uplink')));
}

/** Copies `configId`'s closure from the coordinator into `store` as an agent on a WAN does (zstd), through a counting proxy: the bytes that came down, and the copy's report. */
async function directFetch(configId: string, store: LocalCastore): Promise<{ down: number; report: CopyReport }> {
  const direct = await startCountingProxy(Number(new URL(test.http.url).port));
  const { client } = await openDataClient(direct.url, test.admin, { compression: 'zstd', httpOnly: true, tlsFingerprint: test.coordinator.tls.fingerprint, pinnedTls: true });
  try {
    const closure = await openVouchedClosure(client, configId, system, test.coordinator.identity.keyId);
    const report = await copyClosure(closure.source, store, closure.storePaths);
    return { down: direct.down, report };
  } finally {
    await client.close();
    await direct.close();
  }
}

/** The kinds of the events an agent recorded. */
const eventKinds = (stateDir: string) => readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { kind: string }).kind);

beforeAll(async () => {
  // HTTP only, so that every byte the relay and the direct fetch take from the coordinator crosses a counting proxy.
  test = await startTestCoordinator({ quic: false });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-relay-upstream-'));
  uplink = await startCountingProxy(Number(new URL(test.http.url).port));
  const relayDir = path.join(work, 'relay');
  const relayPort = await freePort();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  const join = formatJoinString({ httpUrl: uplink.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
  const enrolled = await ferry(['relay', 'enroll', join, '--state-dir', relayDir, '--url', `https://127.0.0.1:${relayPort}`, '--listen', `127.0.0.1:${relayPort}`, '--name', 'site', '--json']);
  expect(enrolled.status, enrolled.stderr).toBe(0);
  const { relayId } = JSON.parse(enrolled.stdout) as { relayId: string };
  await test.adminClient.call('relays.assign', { relayId, where: ['labels.site=uplink'] });
  relay = spawn(process.execPath, [ferryBin, 'relay', 'run', '--state-dir', relayDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let text = '';
    relay!.stderr!.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (text.includes('listening on')) resolve();
    });
    relay!.once('exit', (code) => reject(new Error(`the relay exited (${code}): ${text}`)));
  });
}, 60_000);

afterAll(async () => {
  if (relay && relay.exitCode === null && relay.signalCode === null) {
    const exited = new Promise((resolve) => relay!.once('exit', resolve));
    relay.kill('SIGTERM');
    await exited;
  }
  await uplink?.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("a site relay's uplink", () => {
  it('copies a cold closure up once, compressed: ≤ 1.1x the bytes of one agent fetching it directly, for two agents', async () => {
    const tree = path.join(work, 'tree');
    const rawBytes = writeCompressibleTree(tree, 400, 3 * 1024 * 1024 + 4321);
    const target = fakeStorePath('relay-uplink');
    await addTreeAsStorePath(test.coordinator.castore, tree, target);
    const { configId } = await test.adminClient.call('graphs.submit', { graph: 'uplink', ...signedConfig(test.admin, 'uplink', [], { [system]: target }, 'uplink', { activate: 'true' }) });

    // One fetch straight from the coordinator, as an agent on a WAN does it (zstd), through a proxy alike.
    const directStore = LocalCastore.open(path.join(work, 'direct-castore'));
    const direct = await directFetch(configId, directStore).finally(() => directStore.close());
    // The content compresses: a relay fetching it raw would move about 3x this.
    expect(direct.down).toBeLessThan(0.6 * rawBytes);

    // From the agents' assignment on: the relay's prefetch may start its copy then.
    const before = uplink.down;
    const agents = await enrollAgents(['a1', 'a2'], 'uplink');
    try {
      expect(await Promise.all(agents.map((one) => one.agent.runOnce()))).toEqual(['active', 'active']);
    } finally {
      await Promise.all(agents.map((one) => one.agent.close()));
    }
    for (const one of agents) {
      const kinds = eventKinds(one.stateDir);
      // Through the relay, all of it: nothing fell back to the coordinator.
      expect(kinds).toContain('relay');
      expect(kinds).not.toContain('relay-failed');
      expectSameTree(storePathLocation(one.storeDir, target), tree);
    }
    const upstreamBytes = uplink.down - before;
    expect(upstreamBytes, `relay uplink ${upstreamBytes} B, direct fetch ${direct.down} B`).toBeLessThanOrEqual(1.1 * direct.down);
    // Each blob came up once (the status counts uncompressed bytes, directories' too): none fetched a second time.
    let status = RelayStatusSchema.parse(JSON.parse((await ferry(['relay', 'status', '--state-dir', path.join(work, 'relay'), '--json'])).stdout));
    for (let tries = 0; status.agentsServed < 2 && tries < 40; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = RelayStatusSchema.parse(JSON.parse((await ferry(['relay', 'status', '--state-dir', path.join(work, 'relay'), '--json'])).stdout));
    }
    expect(status.bytesFetched).toBeGreaterThanOrEqual(rawBytes);
    expect(status.bytesFetched).toBeLessThan(rawBytes * 1.05);
  }, 120_000);
  it('copies an upgrade up as group deltas against the closure it holds: about what a direct agent moves, far less than the changed files', async () => {
    // Version 1.0: small text files and three large incompressible ones; 1.1 edits a few bytes in place in each large one.
    const v1 = path.join(work, 'upgrade-1.0');
    writeCompressibleTree(v1, 60, 64 * 1024);
    const large = ['a', 'b', 'c'].map((name) => `large-${name}.bin`);
    for (const name of large) writeFileSync(path.join(v1, name), randomBytes(2 * 1024 * 1024 + 777));
    const v2 = path.join(work, 'upgrade-1.1');
    cpSync(v1, v2, { recursive: true });
    for (const name of large) {
      const bytes = readFileSync(path.join(v2, name));
      for (const offset of [1000, 900_000, 2_000_000]) bytes[offset] = bytes[offset]! ^ 0xff;
      writeFileSync(path.join(v2, name), bytes);
    }
    const changedBytes = large.reduce((sum, name) => sum + statSync(path.join(v2, name)).size, 0);
    const [target1, target2] = [fakeStorePath('relay-upgrade-1.0'), fakeStorePath('relay-upgrade-1.1')];
    await addTreeAsStorePath(test.coordinator.castore, v1, target1);
    await addTreeAsStorePath(test.coordinator.castore, v2, target2);
    const submit = async (target: string, parents: string[]) =>
      (await test.adminClient.call('graphs.submit', { graph: 'upgrade', ...signedConfig(test.admin, 'upgrade', parents, { [system]: target }, 'upgrade', { activate: 'true' }) })).configId;

    const config1 = await submit(target1, []);
    const agents = await enrollAgents(['u1', 'u2'], 'upgrade');
    const directStore = LocalCastore.open(path.join(work, 'upgrade-direct-castore'));
    try {
      await directFetch(config1, directStore);
      expect(await Promise.all(agents.map((one) => one.agent.runOnce()))).toEqual(['active', 'active']);

      // From the submission on: the relay's prefetch starts its copy at once.
      const before = uplink.down;
      const config2 = await submit(target2, [config1]);
      // One agent upgrading straight from the coordinator: group deltas against its 1.0.
      const direct = await directFetch(config2, directStore);
      expect(direct.report.deltaBlobs).toBe(large.length);
      expect(await Promise.all(agents.map((one) => one.agent.runOnce()))).toEqual(['active', 'active']);
      const upstreamBytes = uplink.down - before;
      // Whole, the changed files would be 6 MiB up the uplink; as deltas, a few groups of each.
      expect(upstreamBytes, `relay uplink ${upstreamBytes} B for ${changedBytes} B of changed files`).toBeLessThan(0.1 * changedBytes);
      expect(upstreamBytes, `relay uplink ${upstreamBytes} B, direct upgrade ${direct.down} B`).toBeLessThanOrEqual(1.1 * direct.down);
    } finally {
      directStore.close();
      await Promise.all(agents.map((one) => one.agent.close()));
    }
    for (const one of agents) {
      const kinds = eventKinds(one.stateDir);
      expect(kinds).toContain('relay');
      expect(kinds).not.toContain('relay-failed');
      expectSameTree(storePathLocation(one.storeDir, target2), v2);
    }
  }, 120_000);
});
