/**
 * Group deltas over normalized bytes (issue 20): a rebuilt file that also
 * changed a little is fetched as the 16 KiB groups of its normalized blob
 * that differ from its previous version's normalized blob, then restored
 * with its template record and verified against its real id. Its real
 * bytes differ in every group a store path hash sits in as well; its
 * normalized bytes only where it changed. A real coordinator (HTTP and
 * QUIC on 127.0.0.1), real castores on disk and a real agent; the store
 * paths are made here, as Nix would lay them out, not built by Nix.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsck, GROUP_SIZE, LocalCastore, type Digest } from '../castore/index.js';
import { blake3, groupChainingValue, GroupBuffer, cvToBytes } from '../castore/blake3/index.js';
import { blobDataPath } from '../castore/local/blob-files.js';
import { openDataClient } from '../protocol/connect.js';
import type { DataClient } from '../protocol/data-client.js';
import { Agent } from '../agent/index.js';
import { storePathLocation } from '../nix/store-path.js';
import { addTreeAsStorePath, enrollAgent, enrollStateDir, fakeStorePath, fetchConfigClosure, narBytes, narOfTree, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;

const hashPartOf = (storePath: string): string => path.basename(storePath).slice(0, 32);
const digestOf = (bytes: Uint8Array): Digest => Buffer.from(blake3(bytes)).toString('hex') as Digest;

/** Where the binary is edited: a group of its own, away from every hash part. */
const EDIT_AT = 2 * 1024 * 1024 + 100;

/**
 * Bytes that do not compress or dedup, with `hashParts` written in at
 * fixed places (as a linker writes RPATHs): three copies of each, in six
 * different 16 KiB groups for two hash parts; `edit` is written at EDIT_AT.
 */
function binaryEmbedding(seed: string, size: number, hashParts: readonly string[], edit?: string): Buffer {
  const bytes = Buffer.alloc(size);
  for (let at = 0; at < size; at += 32) createHash('sha256').update(`${seed}/${at}`).digest().copy(bytes, at);
  hashParts.forEach((hashPart, index) => {
    for (let copy = 0; copy < 3; copy++) bytes.write(`/nix/store/${hashPart}-lib/lib`, 1000 + index * 70_000 + copy * 300_000, 'latin1');
  });
  if (edit) bytes.write(edit, EDIT_AT, 'latin1');
  return bytes;
}

interface Generation {
  lib: string;
  app: string;
  configId: string;
  /** The app binary's real bytes. */
  binary: Buffer;
}

/**
 * One generation of a two-path closure: `lib` and `app`, a 3 MiB binary
 * embedding its own and lib's hash parts (six groups hold them) whose
 * version string at EDIT_AT says `release`: a new release is a rebuild that
 * also changed the binary in one group.
 */
async function generation(release: string, graph: string, seed = 'app'): Promise<Generation> {
  const lib = fakeStorePath(`${graph}-lib-${release}`);
  const app = fakeStorePath(`${graph}-app-${release}`);
  const libDir = path.join(work, `${graph}-lib-${release}`);
  mkdirSync(path.join(libDir, 'lib'), { recursive: true });
  writeFileSync(path.join(libDir, 'lib', 'libdemo.so'), binaryEmbedding(`${seed}-lib`, 2 * 1024 * 1024 + 77, [hashPartOf(lib)]));
  const appDir = path.join(work, `${graph}-app-${release}`);
  mkdirSync(path.join(appDir, 'bin'), { recursive: true });
  const binary = binaryEmbedding(seed, 3 * 1024 * 1024 + 5, [hashPartOf(app), hashPartOf(lib)], `version ${release};`);
  writeFileSync(path.join(appDir, 'bin', 'app'), binary, { mode: 0o755 });
  await addTreeAsStorePath(test.coordinator.castore, libDir, lib, [lib]);
  await addTreeAsStorePath(test.coordinator.castore, appDir, app, [app, lib]);
  const head = test.coordinator.state.get('graphs', graph);
  const configId = (await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, head ? [head.head] : [], { 'x86_64-linux': app }, release, { activate: 'true' }) })).configId;
  return { lib, app, configId, binary };
}

let first: Generation;
let rebuilt: Generation;
/** Another graph's closure: no agent of the first graph may read it. */
let foreign: Generation;

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-normalized-delta-'));
  first = await generation('1.0', 'ndelta');
  rebuilt = await generation('1.1', 'ndelta');
  foreign = await generation('1.0', 'ndelta-other', 'other');
}, 120_000);
afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

const normalizedOf = (id: Digest): Digest => test.coordinator.castore.templateOf(id)!.normalized;

/** An agent key pinned to `configId`, a data client of it (raw bytes on the wire, so replies can be altered), and how to pin it elsewhere. */
async function agentClient(configId: string): Promise<{ client: DataClient; pin: (configId: string) => Promise<void>; close: () => Promise<void> }> {
  const agent = await enrollAgent(test, 'ndelta');
  const pin = async (id: string): Promise<void> => void (await test.adminClient.call('agents.pin', { agentId: agent.keyId, configId: id }));
  await pin(configId);
  const { client } = await openDataClient(test.http.url, agent, { compression: 'off' });
  return { client, pin, close: () => client.close() };
}

/** A target castore holding the first generation, fetched as an agent would; the agent is then pinned to the rebuild. */
async function targetWithFirst(name: string, client: DataClient, pin: (configId: string) => Promise<void>): Promise<LocalCastore> {
  const target = LocalCastore.open(path.join(work, name));
  await fetchConfigClosure(client, target, first.configId, { coordinatorKey: test.coordinator.identity.keyId });
  await pin(rebuilt.configId);
  return target;
}

/**
 * `client`, except that every `blobs.delta` reply has one bit of the
 * groups it sends flipped (a coordinator that lies about the groups); the
 * blobs asked as deltas are pushed to `asked`.
 */
function lyingAboutDeltas(client: DataClient, asked: Digest[]): DataClient {
  const call: DataClient['call'] = (request, options = {}) => {
    const header = typeof request === 'function' ? request() : request;
    if (header.op !== 'blobs.delta' || !options.consume) return client.call(request, options);
    if ('blobs' in header) for (const blob of header.blobs ?? []) if (typeof blob === 'object') asked.push(blob.id as Digest);
    const consume = options.consume;
    return client.call(request, {
      ...options,
      consume: (reply) =>
        consume({
          ...reply,
          body: new Proxy(reply.body, {
            get(target, property) {
              if (property === 'readExact') {
                return async (length: number, what?: string) => {
                  const bytes = await target.readExact(length, what);
                  if (!what?.startsWith('delta of') || bytes.length === 0) return bytes;
                  const altered = Buffer.from(bytes);
                  altered[altered.length >> 1]! ^= 0x01;
                  return altered;
                };
              }
              const value = Reflect.get(target, property, target) as unknown;
              return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
            },
          }),
        }),
    });
  };
  return new Proxy(client, {
    get(target, property) {
      if (property === 'call') return call;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe('group deltas over normalized bytes', () => {
  it('a rebuilt binary that also changed in one group moves that group and its record, not the groups holding store path hashes', async () => {
    const { client, pin, close } = await agentClient(first.configId);
    const target = await targetWithFirst('target-plain', client, pin);
    try {
      const before = client.wireBytes.received;
      const upgrade = await fetchConfigClosure(client, target, rebuilt.configId, { coordinatorKey: test.coordinator.identity.keyId });
      const wire = client.wireBytes.received - before;
      // libdemo.so differs only in hash parts (restored over the normalized blob held here); the binary's normalized
      // blob came as one 16 KiB group against the previous binary's, and the binary was restored over it.
      expect(upgrade.normalizedDeltaBlobs).toBe(1);
      expect(upgrade.normalizedDeltaGroupBytes).toBe(GROUP_SIZE);
      expect(upgrade.restoredBlobs).toBe(2);
      expect(upgrade.deltaBlobs).toBe(0);
      expect(upgrade.copiedBlobs).toBe(0);
      // A delta of the real bytes would send seven groups (112 KiB): the edited one and six holding hash parts.
      expect(wire).toBeLessThan(3 * GROUP_SIZE);
      const binary = digestOf(rebuilt.binary);
      expect(target.templateOf(binary)?.normalized).toBe(normalizedOf(binary));
      for (const storePath of [rebuilt.lib, rebuilt.app]) expect((await narBytes(target, storePath)).equals(await narBytes(test.coordinator.castore, storePath))).toBe(true);
      expect((await fsck(target, { checkNars: true })).problems).toEqual([]);
    } finally {
      await close();
      target.close();
    }
  }, 60_000);

  it('a coordinator whose delta does not verify gets the file fetched whole: nothing of its groups is kept', async () => {
    const { client, pin, close } = await agentClient(first.configId);
    const target = await targetWithFirst('target-liar', client, pin);
    try {
      const asked: Digest[] = [];
      const upgrade = await fetchConfigClosure(lyingAboutDeltas(client, asked), target, rebuilt.configId, { coordinatorKey: test.coordinator.identity.keyId });
      // Asked as a delta of its normalized blob first, then of its real bytes.
      expect(asked).toEqual([normalizedOf(digestOf(rebuilt.binary)), digestOf(rebuilt.binary)]);
      // Neither the normalized delta nor the real one (asked next) verified: the binary came whole.
      expect(upgrade.normalizedDeltaBlobs).toBe(0);
      expect(upgrade.deltaBlobs).toBe(0);
      expect(upgrade.restoredBlobs).toBe(1);
      expect(upgrade.copiedBlobs).toBe(1);
      for (const storePath of [rebuilt.lib, rebuilt.app]) expect((await narBytes(target, storePath)).equals(await narBytes(test.coordinator.castore, storePath))).toBe(true);
      expect((await fsck(target, { checkNars: true })).problems).toEqual([]);
    } finally {
      await close();
      target.close();
    }
  }, 60_000);

  it('a basis damaged on disk gets the file fetched whole: the basis is checked against its id as it is read', async () => {
    const { client, pin, close } = await agentClient(first.configId);
    const target = await targetWithFirst('target-damaged', client, pin);
    try {
      // The previous binary's normalized blob, kept here as a file of its own: one byte flipped in a group that did not
      // change, so its chaining values (from its stored outboard) still say "the same"; only reading it can tell.
      const basis = normalizedOf(digestOf(first.binary));
      const file = blobDataPath(target.dataDir, basis);
      const bytes = readFileSync(file);
      bytes[5 * GROUP_SIZE + 3]! ^= 0xff;
      writeFileSync(file, bytes);
      const upgrade = await fetchConfigClosure(client, target, rebuilt.configId, { coordinatorKey: test.coordinator.identity.keyId });
      expect(upgrade.normalizedDeltaBlobs).toBe(0);
      expect(upgrade.copiedBlobs).toBe(1);
      for (const storePath of [rebuilt.lib, rebuilt.app]) expect((await narBytes(target, storePath)).equals(await narBytes(test.coordinator.castore, storePath))).toBe(true);
      // fsck finds the damaged blob (and the first binary over it), nothing of the rebuild.
      const problems = (await fsck(target)).problems.map((problem) => JSON.stringify(problem));
      expect(problems.length).toBeGreaterThan(0);
      expect(problems.some((problem) => problem.includes(digestOf(rebuilt.binary)) || problem.includes(normalizedOf(digestOf(rebuilt.binary))))).toBe(false);
    } finally {
      await close();
      target.close();
    }
  }, 60_000);

  it('an agent asks deltas of the normalized blobs of its own closure only: another closure’s is refused before any basis is compared', async () => {
    const { client, close } = await agentClient(rebuilt.configId);
    try {
      const binary = rebuilt.binary;
      const own = normalizedOf(digestOf(binary));
      const other = normalizedOf(digestOf(foreign.binary));
      const groups = Math.ceil(binary.length / GROUP_SIZE);
      // Chaining values of the other closure's normalized blob itself: a match would say which groups it shares.
      const otherBytes = await test.coordinator.castore.readBlobBytes(other);
      const cvsOf = (bytes: Uint8Array): Uint8Array => {
        const out = new Uint8Array(groups * 32);
        const buffer = new GroupBuffer();
        for (let index = 0; index < groups; index++) cvToBytes(groupChainingValue(bytes.subarray(index * GROUP_SIZE, Math.min(bytes.length, (index + 1) * GROUP_SIZE)), index, buffer), out, index * 32);
        return out;
      };
      const ask = (id: Digest, cvs: Uint8Array) =>
        client.call({ op: 'blobs.delta', blobs: [{ id, basisGroups: cvs.length / 32 }] }, { body: [cvs], consume: async (reply) => ({ header: reply.header, body: await reply.body.readExact(0) }) });
      // Its own: answered, only the groups that differ (all: the basis here is another file).
      const answered = await ask(own, cvsOf(otherBytes));
      expect(answered.header.blobs[0]!.id).toBe(own);
      // Another closure's normalized blob, with its exact chaining values, and an id no store holds: refused alike.
      const refusals = await Promise.all([ask(other, cvsOf(otherBytes)), ask(randomBytes(32).toString('hex') as Digest, cvsOf(otherBytes))].map((asked) => asked.then(() => undefined, (error: { code?: string; message?: string }) => error)));
      expect(refusals.map((error) => error?.code)).toEqual(['FORBIDDEN', 'FORBIDDEN']);
      expect(refusals[0]!.message!.replace(other, 'ID')).toBe(refusals[1]!.message!.replace(/[0-9a-f]{64}/, 'ID'));
    } finally {
      await close();
    }
  }, 60_000);
});

describe('an agent, across a rebuild that also changed a file', () => {
  it('rebuilds the normalized blob from its own store file and the changed group, and materializes the file exactly', async () => {
    const graph = 'ndelta-agent';
    const one = await generation('3.0', graph);
    const stateDir = path.join(work, 'agent-state');
    const { agentId } = await enrollStateDir(test, { stateDir, name: 'ndelta-agent' });
    await test.adminClient.call('agents.assign', { agentId, graph });
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      await agent.runOnce();
      expect(agent.generations.current()?.configId).toBe(one.configId);
      const two = await generation('3.1', graph);
      await agent.runOnce();
      expect(agent.generations.current()?.configId).toBe(two.configId);
      const fetched = agent.events.read().filter((event) => event.kind === 'fetched').at(-1)!;
      // The basis is derived from generation 1's store file (adopted: the castore holds no copy of it).
      expect(fetched.message).toMatch(/2 files restored .*1 of their normalized blobs rebuilt from their previous version's with 16384 bytes of changed 16 KiB groups/);
      for (const storePath of [two.lib, two.app]) {
        const materialized = await narOfTree(storePathLocation(path.join(stateDir, 'store'), storePath));
        expect(materialized.equals(await narBytes(test.coordinator.castore, storePath))).toBe(true);
      }
      // Adopted: the normalized blob that came is now derived from the new file, not kept twice.
      const castore = LocalCastore.open(path.join(stateDir, 'castore'));
      try {
        const normalized = normalizedOf(digestOf(two.binary));
        expect(castore.hasBlob(normalized)).toBe(true);
        expect(castore.ownBlobFile(normalized)).toBeUndefined();
        expect((await fsck(castore, { checkNars: true })).problems).toEqual([]);
      } finally {
        castore.close();
      }
    } finally {
      await agent.close();
    }
  }, 120_000);
});
