// The data plane over faulty networks on 127.0.0.1: a UDP proxy that flips
// bits, drops datagrams or cuts the connection mid-blob; UDP unreachable;
// and an HTTP path that corrupts a byte mid-blob. Every fetch must end with
// verified, complete data, and nothing corrupt may be stored.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore, fsck } from '../castore/index.js';
import { DataClient } from '../protocol/data-client.js';
import type { Identity } from '../protocol/identity.js';
import { fetchConfigClosure, addTreeAsStorePath, enrollAgent, fakeStorePath, narBytes, signedConfig, pushToCoordinator, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { startTcpFlipProxy, startUdpProxy, type UdpFaults } from './fault-proxies.js';

let test: TestCoordinator;
let work: string;
let source: LocalCastore;
let agent: Identity;
let treeConfig: string;
let fileConfig: string;
const tree = fakeStorePath('tree-1.0');
const bigFile = fakeStorePath('big-file');
let counter = 0;

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-faults-'));
  source = LocalCastore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'tree'), 'tree', { small: 120, large: 1, largeSize: 6 * 1024 * 1024 + 4321 });
  await addTreeAsStorePath(source, path.join(work, 'tree'), tree);
  writeFileSync(path.join(work, 'big'), Buffer.alloc(4 * 1024 * 1024 + 99, 0x5a).map((byte, index) => (byte + index * 7) & 0xff));
  await addTreeAsStorePath(source, path.join(work, 'big'), bigFile);
  await pushToCoordinator(test, source, [tree, bigFile]);
  treeConfig = (await test.adminClient.call('graphs.submit', { graph: 'faults', ...signedConfig(test.admin, 'faults', [], { 'x86_64-linux': tree }) })).configId;
  fileConfig = (await test.adminClient.call('graphs.submit', { graph: 'file', ...signedConfig(test.admin, 'file', [], { 'x86_64-linux': bigFile }) })).configId;
  agent = await enrollAgent(test, 'faults');
}, 60_000);

afterAll(async () => {
  source?.close();
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

/** Fetches `configId` into a fresh castore through `client`; checks the NARs and fsck. */
async function fetchAndCheck(client: DataClient, configId: string, storePath: string): Promise<'quic' | 'http' | undefined> {
  const target = LocalCastore.open(path.join(work, `target-${counter++}`));
  try {
    await fetchConfigClosure(client, target, configId, { parallel: 4, coordinatorKey: test.coordinator.identity.keyId });
    expect((await narBytes(target, storePath)).equals(await narBytes(source, storePath))).toBe(true);
    expect((await fsck(target)).problems).toEqual([]);
    return client.transportKind;
  } finally {
    target.close();
    await client.close();
  }
}

function quicClientVia(port: number, notices: string[]): DataClient {
  return new DataClient({
    identity: agent,
    httpUrl: test.http.url,
    quicAddress: `127.0.0.1:${port}`,
    certificatePem: test.coordinator.tls.certificatePem,
    idleTimeoutMs: 1500,
    connectTimeoutMs: 2000,
    retries: 8,
    onNotice: (message) => notices.push(message),
  });
}

describe('QUIC through a faulty UDP path', () => {
  const cases: [string, UdpFaults][] = [
    ['flips a bit in every 25th datagram', { flipEvery: 25 }],
    ['drops 3% of datagrams both ways', { dropRate: 0.03 }],
  ];
  for (const [name, faults] of cases) {
    it(`completes with verified data when the proxy ${name}`, async () => {
      const proxy = await startUdpProxy(test.quic.port, faults);
      try {
        const notices: string[] = [];
        const client = quicClientVia(proxy.port, notices);
        await fetchAndCheck(client, treeConfig, tree);
        expect(proxy.flipped + proxy.dropped).toBeGreaterThan(0);
      } finally {
        await proxy.close();
      }
    }, 60_000);
  }

  it('resumes a blob after the connection is cut mid-blob, without starting over', async () => {
    await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'file' });
    const proxy = await startUdpProxy(test.quic.port, { cutAfterBytes: 2 * 1024 * 1024 });
    try {
      const notices: string[] = [];
      const client = quicClientVia(proxy.port, notices);
      // Only the first connection is cut; its replacement runs clean.
      const lifted = setInterval(() => {
        if (proxy.cuts > 0) proxy.faults.cutAfterBytes = undefined;
      }, 10);
      const transport = await fetchAndCheck(client, fileConfig, bigFile).finally(() => clearInterval(lifted));
      expect(proxy.cuts).toBe(1);
      expect(notices.some((notice) => /blob\.get failed over quic/.test(notice))).toBe(true);
      // Resumed, not restarted: well under two copies of the 4 MiB blob crossed the proxy.
      expect(proxy.forwardedBytes).toBeLessThan(1.5 * 4 * 1024 * 1024);
      expect(transport).toBe('quic');
    } finally {
      await proxy.close();
      await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'faults' });
    }
  }, 60_000);

  it('falls back to HTTP when UDP is unreachable', async () => {
    const blackHole = await startUdpProxy(test.quic.port, { dropRate: 1 });
    try {
      const notices: string[] = [];
      const client = quicClientVia(blackHole.port, notices);
      await fetchAndCheck(client, treeConfig, tree);
      expect(notices.some((notice) => /falling back to HTTP/.test(notice))).toBe(true);
    } finally {
      await blackHole.close();
    }
  }, 60_000);
});

describe('HTTP fallback through a corrupting TCP path', () => {
  it('detects the corrupt 16 KiB group, resumes from there, and stores only verified bytes', async () => {
    await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'file' });
    const proxy = await startTcpFlipProxy(Number(new URL(test.http.url).port), 1024 * 1024 + 777);
    try {
      const notices: string[] = [];
      const client = new DataClient({ identity: agent, httpUrl: `http://127.0.0.1:${proxy.port}`, httpOnly: true, onNotice: (message) => notices.push(message) });
      await fetchAndCheck(client, fileConfig, bigFile);
      expect(proxy.flipped).toBe(1);
      expect(notices.some((notice) => /bytes of group \d+ do not match/.test(notice))).toBe(true);
    } finally {
      await proxy.close();
      await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'faults' });
    }
  }, 60_000);

  it('over pinned HTTPS the flipped byte fails the TLS record instead: the request is retried and completes', async () => {
    await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'file' });
    const proxy = await startTcpFlipProxy(Number(new URL(test.http.url).port), 1024 * 1024 + 777);
    try {
      const notices: string[] = [];
      const client = new DataClient({
        identity: agent,
        httpUrl: `https://127.0.0.1:${proxy.port}`,
        pinnedFingerprint: test.coordinator.tls.fingerprint,
        httpOnly: true,
        onNotice: (message) => notices.push(message),
      });
      await fetchAndCheck(client, fileConfig, bigFile);
      expect(proxy.flipped).toBe(1);
      expect(notices.some((notice) => /failed over http \(stream failed/.test(notice))).toBe(true);
    } finally {
      await proxy.close();
      await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'faults' });
    }
  }, 60_000);
});
