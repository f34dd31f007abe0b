// Group-level dedup on fetch (castore/transfer/group-delta.ts, `blobs.delta`),
// against a real coordinator on 127.0.0.1 over QUIC and HTTP: a new version of
// a store path whose large files changed in a few bytes moves only the 16 KiB
// groups that differ, compressed or not; the result is byte-identical to the
// source and passes fsck; an insertion that shifts every group is fetched
// whole; a basis damaged on disk, and a delta that does not hash to its id,
// are never kept (the file comes whole).
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, LocalCastore, digestFromBytes, fsck, type CopyReport } from '../castore/index.js';
import { blobDataPath } from '../castore/local/blob-files.js';
import { asStorePath, type StorePath } from '../nix/store-path.js';
import { openDataClient } from '../protocol/connect.js';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { fetchConfigClosure, addTreeAsStorePath, enrollStateDir, narBytes, narOfTree, pushToCoordinator, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
let source: LocalCastore;

/** `/nix/store/<hash of version>-<name>`: versions of one package share the name, as Nix rebuilds do. */
function versionOf(name: string, version: string): StorePath {
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
  const digest = createHash('sha256').update(`${name}/${version}`).digest();
  return asStorePath(`/nix/store/${[...digest.subarray(0, 32)].map((b) => alphabet[b % 32]).join('')}-${name}`);
}

/** Text-like, compressible bytes. */
function textBytes(size: number, seed: string): Buffer {
  const parts: Buffer[] = [];
  let length = 0;
  for (let index = 0; length < size; index++) {
    const line = Buffer.from(`${index} ${createHash('sha256').update(`${seed}/${index}`).digest('hex').slice(0, 24)} ferry group delta\n`);
    parts.push(line);
    length += line.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

const LARGE = 3 * 1024 * 1024 + 777; // fetched alone (blob.get) when whole
const MEDIUM = 600_000; // batched (blobs.get) when whole
const large = textBytes(LARGE, 'large');
const medium = textBytes(MEDIUM, 'medium');
const shifted = textBytes(400_000, 'shifted');

/** Writes version `version` of the package: `edit` changes the bytes of its files. */
function writeVersion(dir: string, files: Record<string, Buffer>): string {
  mkdirSync(path.join(dir, 'lib'), { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(path.join(dir, name), bytes);
  return dir;
}

function edited(bytes: Buffer, offset: number, text: string): Buffer {
  const copy = Buffer.from(bytes);
  copy.write(text, offset);
  return copy;
}

const v1 = versionOf('app-1.0', 'v1');
const v2 = versionOf('app-1.0', 'v2');
const configs: Record<string, string> = {};

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-delta-'));
  source = LocalCastore.open(path.join(work, 'source'));
  await addTreeAsStorePath(source, writeVersion(path.join(work, 'v1'), { 'lib/large.so': large, 'lib/medium.js': medium, 'lib/shifted.txt': shifted, 'lib/small': Buffer.from('v1\n') }), v1);
  // v2: 7 bytes in the middle of the large file, a version string in the medium one (two groups: one
  // per edit), one byte inserted at the start of a third (every group shifts), a new small file.
  await addTreeAsStorePath(
    source,
    writeVersion(path.join(work, 'v2'), {
      'lib/large.so': edited(edited(large, Math.floor(LARGE / 2), 'CHANGED'), 10, '/nix/store/v2'),
      'lib/medium.js': edited(medium, 300_000, 'version 2'),
      'lib/shifted.txt': Buffer.concat([Buffer.from('#'), shifted]),
      'lib/small': Buffer.from('v2\n'),
    }),
    v2,
  );
  await pushToCoordinator(test, source, [v1, v2]);
  // Two graphs: an admin reads any config; the graph's history does not matter here.
  for (const [name, storePath] of [['v1', v1], ['v2', v2]] as const) {
    configs[name] = (await test.adminClient.call('graphs.submit', { graph: `delta-${name}`, ...signedConfig(test.admin, `delta-${name}`, [], { 'x86_64-linux': storePath }) })).configId;
  }
}, 60_000);

afterAll(async () => {
  source?.close();
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

async function fetchInto(target: LocalCastore, config: string, options: { httpOnly?: boolean; compression?: 'zstd' | 'off'; groupDelta?: boolean } = {}): Promise<{ report: CopyReport; received: number }> {
  const { client } = await openDataClient(test.http.url, test.admin, { httpOnly: options.httpOnly ?? false, compression: options.compression ?? 'off', tlsFingerprint: test.coordinator.tls.fingerprint });
  try {
    const report = await fetchConfigClosure(client, target, config, { coordinatorKey: test.coordinator.identity.keyId, groupDelta: options.groupDelta ?? true });
    return { report, received: client.wireBytes.received };
  } finally {
    await client.close();
  }
}

async function expectSameAsSource(target: LocalCastore, storePath: string): Promise<void> {
  expect((await narBytes(target, storePath)).equals(await narBytes(source, storePath))).toBe(true);
  expect((await fsck(target)).problems).toEqual([]);
}

describe('group-level dedup on fetch', () => {
  for (const [label, options] of [
    ['QUIC, raw', { compression: 'off' }],
    ['QUIC, zstd', { compression: 'zstd' }],
    ['HTTP, raw', { httpOnly: true, compression: 'off' }],
  ] as const) {
    it(`fetches only the differing groups of a new version's files (${label}), byte-identical`, async () => {
      const target = LocalCastore.open(path.join(work, `target-${label.replace(/\W+/g, '-')}`));
      try {
        await fetchInto(target, configs.v1!, options);
        const { report, received } = await fetchInto(target, configs.v2!, options);
        await expectSameAsSource(target, v2);
        // large (2 groups differ) and medium (1 group) as deltas; the shifted file matches nothing and goes whole.
        expect(report.deltaBlobs).toBe(2);
        expect(report.deltaGroupBytes).toBe(3 * 16 * 1024);
        const whole = shifted.length + 1 + 3;
        // Everything else on the wire (headers, manifest, directories, chaining values) is a few KiB.
        expect(received).toBeLessThan(whole + report.deltaGroupBytes + 24 * 1024);
        expect(received).toBeGreaterThan(options.compression === 'zstd' ? 0 : report.deltaGroupBytes);

        // The same fetch without group deltas moves the whole files.
        const plain = LocalCastore.open(path.join(work, `plain-${label.replace(/\W+/g, '-')}`));
        try {
          await fetchInto(plain, configs.v1!, options);
          const without = await fetchInto(plain, configs.v2!, { ...options, groupDelta: false });
          expect(without.report.deltaBlobs).toBe(0);
          expect(without.received).toBeGreaterThan(received + (options.compression === 'zstd' ? 200_000 : LARGE));
        } finally {
          plain.close();
        }
      } finally {
        target.close();
      }
    }, 60_000);
  }

  it('fetches whole a file whose basis was damaged on disk: the basis is checked against its own id as it is read', async () => {
    const target = LocalCastore.open(path.join(work, 'target-damaged-basis'));
    try {
      await fetchInto(target, configs.v1!);
      // Flip a byte of the stored v1 large file in a group v2 did not change: its chaining values
      // (from its outboard) still say "unchanged", so only reading it can tell.
      const file = blobDataPath(target.dataDir, digestFromBytes(blake3(large)));
      const bytes = readFileSync(file);
      bytes[16 * 1024 * 5 + 3]! ^= 0xff;
      writeFileSync(file, bytes);
      const { report } = await fetchInto(target, configs.v2!);
      expect(report.deltaBlobs).toBe(1); // the medium file; the large one came whole
      expect((await narBytes(target, v2)).equals(await narBytes(source, v2))).toBe(true);
      // fsck finds the damaged v1 copy, and nothing of v2.
      const problems = (await fsck(target)).problems;
      expect(problems.length).toBeGreaterThan(0);
      expect(problems.every((problem) => JSON.stringify(problem).includes(digestFromBytes(blake3(large))))).toBe(true);
    } finally {
      target.close();
    }
  }, 60_000);

  it('lets an agent rebuild a new version from the store files of its running generation, and materialize it exactly', async () => {
    const stateDir = path.join(work, 'agent');
    const storeDir = path.join(stateDir, 'store');
    const { agentId } = await enrollStateDir(test, { stateDir, storeDir, name: 'delta', pinnedTls: true });
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      let parent: string[] = [];
      for (const storePath of [v1, v2]) {
        const { configId } = await test.adminClient.call('graphs.submit', { graph: 'delta-agent', ...signedConfig(test.admin, 'delta-agent', parent, { [nixSystem()]: storePath }, 'delta', { activate: 'true' }) });
        if (parent.length === 0) await test.adminClient.call('agents.assign', { agentId, graph: 'delta-agent' });
        parent = [configId];
        expect(await agent.runOnce()).toBe('active');
      }
      const fetched = agent.events.read().filter((event) => event.kind === 'fetched').at(-1)!;
      // The agent's castore holds v1's files as the store's own (adopted): they are the basis.
      expect(fetched.message).toMatch(/2 rebuilt from their previous version with 49152 bytes of changed 16 KiB groups/);
      expect((await narOfTree(path.join(storeDir, path.basename(v2)))).equals(await narOfTree(path.join(work, 'v2')))).toBe(true);
    } finally {
      await agent.close();
    }
  }, 60_000);

  // Last: it damages the coordinator's copy (and restores it).
  it('keeps nothing of a delta that does not hash to its id: a coordinator serving damaged bytes fails the fetch, and nothing is registered', async () => {
    const target = LocalCastore.open(path.join(work, 'target-lying-coordinator'));
    const file = blobDataPath(test.coordinator.castore.dataDir, digestFromBytes(blake3(edited(edited(large, Math.floor(LARGE / 2), 'CHANGED'), 10, '/nix/store/v2'))));
    const good = readFileSync(file);
    try {
      await fetchInto(target, configs.v1!);
      // The group holding the mid-file edit, i.e. one the delta sends.
      const damaged = Buffer.from(good);
      damaged[Math.floor(LARGE / 2) + 1]! ^= 0xff;
      writeFileSync(file, damaged);
      await expect(fetchInto(target, configs.v2!)).rejects.toThrow(/do not match the blob's hash tree/);
      expect(target.getStorePath(v2)).toBeUndefined();
      expect(target.hasBlob(digestFromBytes(blake3(damaged)))).toBe(false);
      expect((await fsck(target)).problems).toEqual([]);
      writeFileSync(file, good);
      await fetchInto(target, configs.v2!);
      await expectSameAsSource(target, v2);
    } finally {
      writeFileSync(file, good);
      target.close();
    }
  }, 60_000);
});
