// A site relay passes its upstream's zstd stream on as it is (relay/stream-recordings.ts): real relay processes
// (`ferry relay run --no-quic`, from build/: `npm run build`) reached through a counting TCP proxy (the site's
// LAN), a real coordinator, agents deploying a cold closure of more than WIRE_STREAM_MIN_BYTES. Each agent's
// download is the compressed stream, not the closure's bytes; the relay keeps one recording and serves it to
// every agent, and again after a restart. A relay that flips bytes of the stream has them refused and the
// deploy finishes from the coordinator, nothing corrupt visible. And the agent's side alone: a large blob of a
// relay's stream is verified group by group against its outboard, so a corrupt byte is caught within 16 KiB.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { DataPlaneBulkCopy, LocalCastore, SharedIngest, type Digest, type FileNode } from '../castore/index.js';
import { storePathLocation } from '../nix/store-path.js';
import type { DataClient } from '../protocol/data-client.js';
import { WIRE_STREAM_MIN_BYTES } from '../protocol/compression/wire.js';
import { FrameReader } from '../protocol/framing.js';
import { formatJoinString } from '../protocol/join-string.js';
import { RelayStatusSchema, type RelayStatus } from '../protocol/relays.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { ferryBin, freePort, runFerry as ferry } from './cli-process.js';
import { enrollSiteAgent, expectSameTree, startCountingProxy, writeCompressibleTree, type CountingProxy, type SiteAgent } from './relay-fixtures.js';

const system = nixSystem();

let test: TestCoordinator;
let work: string;
const running = new Set<ChildProcess>();
const proxies: CountingProxy[] = [];

interface SiteRelay {
  dir: string;
  port: number;
  /** The site's LAN: every byte the relay sends its agents crosses it (the relay serves HTTPS only). */
  lan: CountingProxy;
  process?: ChildProcess;
}

/** Enrolls a relay reached through a counting proxy and assigns it the agents labelled site=`site`. */
async function enrollRelay(site: string): Promise<SiteRelay> {
  const dir = path.join(work, `relay-${site}`);
  const port = await freePort();
  const lan = await startCountingProxy(port);
  proxies.push(lan);
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  const join = formatJoinString({ httpUrl: test.http.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
  const enrolled = await ferry(['relay', 'enroll', join, '--state-dir', dir, '--url', lan.url, '--listen', `127.0.0.1:${port}`, '--name', site, '--json']);
  expect(enrolled.status, enrolled.stderr).toBe(0);
  const { relayId } = JSON.parse(enrolled.stdout) as { relayId: string };
  await test.adminClient.call('relays.assign', { relayId, where: [`labels.site=${site}`] });
  return { dir, port, lan };
}

async function startRelay(relay: SiteRelay, env: NodeJS.ProcessEnv = {}): Promise<void> {
  const child = spawn(process.execPath, [ferryBin, 'relay', 'run', '--state-dir', relay.dir, '--no-quic', '--no-prefetch'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  running.add(child);
  relay.process = child;
  await new Promise<void>((resolve, reject) => {
    let text = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (text.includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the relay exited (${code}): ${text}`)));
  });
}

async function stopRelay(relay: SiteRelay): Promise<void> {
  const child = relay.process;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
  running.delete(child);
}

/** The relay's status once it says it served `agents` agents (it writes it at most every 0.5 s). */
async function statusOf(relay: SiteRelay, agents: number): Promise<RelayStatus> {
  for (let tries = 0; ; tries++) {
    const status = RelayStatusSchema.parse(JSON.parse((await ferry(['relay', 'status', '--state-dir', relay.dir, '--json'])).stdout));
    if (status.agentsServed >= agents || tries >= 40) return status;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A cold closure above the stream threshold, compressible as a closure's files are; submitted to `graph`. */
async function submitClosure(graph: string, seedName: string): Promise<{ configId: string; tree: string; target: string; rawBytes: number }> {
  const tree = path.join(work, `tree-${seedName}`);
  // Files of 2-62 KB (batched blobs) and large ones (verified per group): over the threshold, so agents stream.
  const rawBytes = writeCompressibleTree(tree, 500, 12 * 1024 * 1024 + 4321, seedName) + writeCompressibleTree(path.join(tree, 'more'), 0, 14 * 1024 * 1024 + 77, `${seedName}-more`);
  expect(rawBytes).toBeGreaterThan(WIRE_STREAM_MIN_BYTES);
  const target = fakeStorePath(`relay-stream-${seedName}`);
  await addTreeAsStorePath(test.coordinator.castore, tree, target);
  const { configId } = await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, [], { [system]: target }, graph, { activate: 'true' }) });
  return { configId, tree, target, rawBytes };
}

async function enrollAgents(graph: string, site: string, names: string[]): Promise<SiteAgent[]> {
  return Promise.all(names.map((name) => enrollSiteAgent(test, work, name, graph, site)));
}

const kindsOf = (stateDir: string) => readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { kind: string }).kind);

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-relay-stream-'));
}, 60_000);

afterAll(async () => {
  for (const child of running) child.kill('SIGKILL');
  for (const proxy of proxies) await proxy.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('a site relay serving its upstream stream', () => {
  it('serves two cold agents the compressed stream it copied once, and a third from the kept recording after a restart', async () => {
    const relay = await enrollRelay('stream');
    await startRelay(relay);
    const closure = await submitClosure('stream', 'stream');
    const agents = await enrollAgents('stream', 'stream', ['s1', 's2']);
    try {
      expect(await Promise.all(agents.map((one) => one.agent.runOnce()))).toEqual(['active', 'active']);
    } finally {
      await Promise.all(agents.map((one) => one.agent.close()));
    }
    for (const one of agents) {
      expect(kindsOf(one.stateDir)).toContain('relay');
      expect(kindsOf(one.stateDir)).not.toContain('relay-failed');
      expectSameTree(storePathLocation(one.storeDir, closure.target), closure.tree);
    }
    const status = await statusOf(relay, 2);
    // One recording, served to both: the LAN carried the compressed stream twice, not the closure's bytes.
    expect(status.streams).toMatchObject({ recorded: 1, served: 2 });
    expect(status.streams!.servedWireBytes).toBeLessThan(2 * 0.6 * closure.rawBytes);
    expect(relay.lan.down, `LAN ${relay.lan.down} B for two agents of a ${closure.rawBytes} B closure`).toBeLessThan(2 * 0.65 * closure.rawBytes);

    // Restarted, the relay still has the recording: a third agent gets it from disk.
    await stopRelay(relay);
    await startRelay(relay);
    const [third] = await enrollAgents('stream', 'stream', ['s3']);
    try {
      expect(await third!.agent.runOnce()).toBe('active');
    } finally {
      await third!.agent.close();
    }
    expect(kindsOf(third!.stateDir)).not.toContain('relay-failed');
    expectSameTree(storePathLocation(third!.storeDir, closure.target), closure.tree);
    expect((await statusOf(relay, 1)).streams).toMatchObject({ served: 1 });
    await stopRelay(relay);
  }, 180_000);

  it('flipping bytes of the stream: refused, nothing corrupt visible, the deploy finishes from the coordinator', async () => {
    const relay = await enrollRelay('flip');
    await startRelay(relay, { FERRY_RELAY_TEST_FAULT: 'flip-blob-bytes' });
    const closure = await submitClosure('flip', 'flip');
    const [one] = await enrollAgents('flip', 'flip', ['f1']);
    try {
      expect(await one!.agent.runOnce()).toBe('active');
    } finally {
      await one!.agent.close();
    }
    expect(kindsOf(one!.stateDir)).toContain('relay-failed');
    expectSameTree(storePathLocation(one!.storeDir, closure.target), closure.tree);
    expect((await statusOf(relay, 1)).streams!.served).toBeGreaterThanOrEqual(1);
    await stopRelay(relay);
  }, 180_000);
});

describe("an agent verifying a relay's stream", () => {
  it('catches a corrupt byte of a large blob within its 16 KiB group, not at the blob’s end, and stores nothing of it', async () => {
    const source = LocalCastore.open(path.join(work, 'verify-source'));
    const target = LocalCastore.open(path.join(work, 'verify-target'));
    try {
      const tree = path.join(work, 'verify-tree');
      mkdirSync(tree, { recursive: true });
      const bytes = randomFillSync(Buffer.alloc(4 * 1024 * 1024));
      writeFileSync(path.join(tree, 'big.bin'), bytes);
      const storePath = fakeStorePath('verify-stream');
      await addTreeAsStorePath(source, tree, storePath);
      const info = source.getStorePath(storePath)!;
      const blob = source.readDirectory((info.root as { digest: Digest }).digest).find((entry): entry is FileNode & { name: string } => entry.type === 'file')!;
      const corruptAt = 1024 * 1024 + 100;
      let sent = 0;
      // A hostile relay cannot be made of the real one for this (it passes zstd on, where a flip breaks the
      // frame first): this stand-in client answers a `blobs.stream` of identity bytes with one byte flipped.
      const hostile = {
        // As an agent's client to a relay: zstd accepted (a relay's kept stream), here answered plain.
        compression: true,
        accept: ['zstd', 'identity'],
        startBulkTransfer: () => undefined,
        call: async (request: unknown, options: { consume: (reply: unknown) => Promise<unknown> }) => {
          const asked = (typeof request === 'function' ? (request as () => { op: string })() : request) as { op: string };
          expect(asked.op).toBe('blobs.stream');
          const wire = Buffer.from(bytes);
          wire[corruptAt]! ^= 0xff;
          const body = new FrameReader(
            (async function* () {
              for (let at = 0; at < wire.length; at += 64 * 1024) {
                sent = Math.min(wire.length, at + 64 * 1024);
                yield wire.subarray(at, sent);
              }
            })(),
          );
          return options.consume({ header: { size: bytes.length, encoding: 'identity' }, body });
        },
      } as unknown as DataClient;
      const copy = new DataPlaneBulkCopy(hostile, { streamOutboards: async (id) => source.readOutboard(id) });
      const ingest = new SharedIngest(target);
      await expect(
        copy.copyBlobs({ blobs: [blob], storePaths: [info], readDirectory: (id) => source.readDirectory(id), ingest, parallel: 1, streamMinBytes: 0, onBytes: () => undefined, onObjects: () => undefined }),
      ).rejects.toThrow(/group|outboard|corrupt/i);
      ingest.abort();
      // Caught at the corrupt group: the stand-in had sent no more than one of its chunks past it.
      expect(sent).toBeLessThanOrEqual(corruptAt + 16 * 1024 + 64 * 1024);
      expect(sent).toBeLessThan(bytes.length);
      expect(target.hasBlob(blob.digest)).toBe(false);
    } finally {
      source.close();
      target.close();
    }
  });
});
