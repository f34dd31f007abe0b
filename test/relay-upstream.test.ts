// A site relay's uplink (relay/closure-copy.ts): a real relay process (`ferry relay run`) reaches a real
// coordinator (HTTP only, on 127.0.0.1) through a TCP proxy that counts the bytes coming down, and two agents
// deploy a cold, compressible closure through it at once. What crossed the "uplink" must be no more than
// 1.1x what one agent's own fetch from the coordinator moves (the same copy, zstd, counted by a proxy alike):
// the relay copies the closure compressed, once, and the agents' requests wait for it rather than fetching
// objects a second time. The CLI runs from build/ (`npm run build`).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { copyClosure, LocalCastore, openVouchedClosure } from '../castore/index.js';
import { storePathLocation } from '../nix/store-path.js';
import { openDataClient } from '../protocol/connect.js';
import { formatJoinString } from '../protocol/join-string.js';
import { RelayStatusSchema } from '../protocol/relays.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { ferryBin, freePort, runFerry as ferry } from './cli-process.js';
import { startCountingProxy, type CountingProxy } from './counting-proxy.js';

const system = nixSystem();

let test: TestCoordinator;
let work: string;
let relay: ChildProcess | undefined;
let uplink: CountingProxy;

/** Text-like files (lines of words from a small vocabulary): they compress about 3x, as a closure's do. */
function writeCompressibleTree(root: string, files: number, largeBytes: number): number {
  const words = ['lib', 'share', 'include', 'static', 'const', 'return', 'function', 'module', 'export', 'nix', 'store', 'ferry', 'relay', 'agent', 'closure', 'blob'];
  let state = 12345;
  const next = () => (state = (state * 1103515245 + 12345) & 0x7fffffff);
  const text = (bytes: number) => {
    const parts: string[] = [];
    let length = 0;
    while (length < bytes) {
      const part = `${words[next() % words.length]}${next() % 1000}${next() % 9 === 0 ? '\n' : ' '}`;
      parts.push(part);
      length += part.length;
    }
    return parts.join('').slice(0, bytes);
  };
  let total = 0;
  for (let index = 0; index < files; index++) {
    const dir = path.join(root, `d${index % 9}`);
    mkdirSync(dir, { recursive: true });
    const size = 2000 + ((index * 7919) % 60_000);
    writeFileSync(path.join(dir, `f${index}.txt`), text(size));
    total += size;
  }
  writeFileSync(path.join(root, 'big.dat'), text(largeBytes));
  return total + largeBytes;
}

function filesOf(dir: string, prefix = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) for (const [rel, bytes] of filesOf(full, `${prefix}${name}/`)) out.set(rel, bytes);
    else out.set(`${prefix}${name}`, readFileSync(full));
  }
  return out;
}

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
    const direct = await startCountingProxy(Number(new URL(test.http.url).port));
    const { client } = await openDataClient(direct.url, test.admin, { compression: 'zstd', httpOnly: true, tlsFingerprint: test.coordinator.tls.fingerprint, pinnedTls: true });
    const directStore = LocalCastore.open(path.join(work, 'direct-castore'));
    try {
      const closure = await openVouchedClosure(client, configId, system, test.coordinator.identity.keyId);
      await copyClosure(closure.source, directStore, closure.storePaths);
    } finally {
      await client.close();
      directStore.close();
      await direct.close();
    }
    // The content compresses: a relay fetching it raw would move about 3x this.
    expect(direct.down).toBeLessThan(0.6 * rawBytes);

    const agents = await Promise.all(
      ['a1', 'a2'].map(async (name) => {
        const stateDir = path.join(work, name);
        const storeDir = path.join(stateDir, 'store');
        const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels: { site: 'uplink' } });
        const join = formatJoinString({ httpUrl: test.http.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
        const { agentId } = await Agent.enroll(join, { stateDir, storeDir, name });
        await test.adminClient.call('agents.assign', { agentId, graph: 'uplink' });
        return { agent: new Agent(stateDir, { log: () => undefined }), stateDir, storeDir };
      }),
    );
    const before = uplink.down;
    try {
      expect(await Promise.all(agents.map((one) => one.agent.runOnce()))).toEqual(['active', 'active']);
    } finally {
      await Promise.all(agents.map((one) => one.agent.close()));
    }
    const want = filesOf(tree);
    for (const one of agents) {
      const kinds = readFileSync(path.join(one.stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { kind: string }).kind);
      // Through the relay, all of it: nothing fell back to the coordinator.
      expect(kinds).toContain('relay');
      expect(kinds).not.toContain('relay-failed');
      const got = filesOf(storePathLocation(one.storeDir, target));
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [name, bytes] of want) expect(got.get(name)!.equals(bytes), name).toBe(true);
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
});
