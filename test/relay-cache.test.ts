// A relay's cache (relay/relay-cache.ts) against a real coordinator (HTTP + QUIC on 127.0.0.1), with the
// relay's own enrolled key: each object fetched once however many ask at the same time, the least
// recently used closures evicted past the size limit, and nothing read that no agent of the relay follows.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore, type Digest } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import type { DataClient } from '../protocol/data-client.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { RelayCache } from '../relay/relay-cache.js';
import { FetchSources } from '../relay/fetch-sources.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

const MiB = 1024 * 1024;
let test: TestCoordinator;
let work: string;
let upstream: DataClient;
const relayKey = Identity.generate();
const configs: Record<string, { configId: string; target: string }> = {};

/** A config of a fresh tree in its own graph, followed by one agent at the relay's site. */
async function followedConfig(graph: string, site = 'barn-3', shape = { small: 20, large: 2, largeSize: 2 * MiB + 5 }, selfReferences = false): Promise<void> {
  const tree = path.join(work, graph);
  writeTree(tree, graph, shape);
  const target = fakeStorePath(`cache-${graph}`);
  if (selfReferences) {
    // Its own store path's hash part here and there in the large file: the coordinator keeps it as a template.
    const file = path.join(tree, 'big0');
    const bytes = readFileSync(file);
    const hashPart = Buffer.from(path.basename(target).slice(0, 32));
    for (let offset = 1000; offset + 32 < bytes.length; offset += 3 * MiB + 777) hashPart.copy(bytes, offset);
    writeFileSync(file, bytes);
  }
  await addTreeAsStorePath(test.coordinator.castore, tree, target, selfReferences ? [target] : []);
  const { configId } = await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, [], { 'x86_64-linux': target }) });
  const agent = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels: { site } });
  await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name: graph, facts: { system: 'x86_64-linux', hostname: graph } });
  await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph });
  configs[graph] = { configId, target };
}

async function until(probe: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 20_000; !probe(); ) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function cacheWith(limitBytes: number, name: string): RelayCache {
  return new RelayCache(LocalCastore.open(path.join(work, name, 'castore')), new FetchSources(upstream, relayKey, test.coordinator.identity.keyId), test.coordinator.identity.keyId, path.join(work, name), limitBytes);
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-relay-cache-'));
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, relay: true });
  await new CoordinatorHttpClient(test.http.url, relayKey).call('relays.enroll', { token, name: 'cache', url: 'https://127.0.0.1:9443', fingerprint: 'ab'.repeat(32) });
  await test.adminClient.call('relays.assign', { relayId: relayKey.keyId, where: ['labels.site=barn-3'] });
  for (const graph of ['one', 'two']) await followedConfig(graph);
  await followedConfig('big', 'barn-3', { small: 1, large: 1, largeSize: 40 * MiB + 3 });
  await followedConfig('bigref', 'barn-3', { small: 1, large: 1, largeSize: 40 * MiB + 3 }, true);
  await followedConfig('away', 'barn-9');
  ({ client: upstream } = await openDataClient(test.http.url, relayKey, { httpOnly: true }));
}, 60_000);

afterAll(async () => {
  await upstream?.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('a relay cache', () => {
  it('asks the coordinator once for a manifest however many ask for it at the same time', async () => {
    let asked = 0;
    // The relay's upstream client, counting the manifest requests that reach it.
    const counting = new Proxy(upstream, {
      get: (target, property) => {
        const value: unknown = Reflect.get(target, property, target);
        if (property !== 'call') return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        return (request: unknown, ...rest: unknown[]) => {
          if ((request as { op?: string }).op === 'closure.manifest') asked++;
          return (target.call as (...args: unknown[]) => unknown)(request, ...rest);
        };
      },
    });
    const cache = new RelayCache(LocalCastore.open(path.join(work, 'manifest-once', 'castore')), new FetchSources(counting, relayKey, test.coordinator.identity.keyId), test.coordinator.identity.keyId, path.join(work, 'manifest-once'), 1024 * MiB);
    const manifests = await Promise.all(Array.from({ length: 4 }, () => cache.manifest(configs.two!.configId, 'x86_64-linux')));
    expect(asked).toBe(1);
    for (const manifest of manifests) expect(manifest).toBe(manifests[0]);
    // Kept: asked again, it is not fetched again.
    await cache.manifest(configs.two!.configId, 'x86_64-linux');
    expect(asked).toBe(1);
    await cache.copies.waitFor([...(await cache.closure(configs.two!.configId)).objects.keys()]);
    cache.store.close();
  });

  it('fetches each object once, however many ask for it at the same time', async () => {
    const cache = cacheWith(1024 * MiB, 'once');
    try {
      await cache.manifest(configs.one!.configId, 'x86_64-linux');
      const closure = await cache.closure(configs.one!.configId);
      const files = [...closure.objects].filter(([, object]) => object.kind === 'file').map(([id]) => id);
      const fetchedDirectories = cache.counters.bytesFetched;
      // Three askers of every blob at once, and one of each half.
      await Promise.all([cache.ensureBlobs(closure, files), cache.ensureBlobs(closure, files), cache.ensureBlobs(closure, files.slice(0, files.length / 2)), cache.ensureBlobs(closure, files)]);
      expect(cache.counters.bytesFetched - fetchedDirectories).toBe(closure.bytes);
      for (const id of files) expect(cache.store.hasBlob(id as Digest)).toBe(true);
      const before = { ...cache.counters };
      await cache.ensureBlobs(closure, files);
      expect(cache.counters.bytesFetched).toBe(before.bytesFetched);
      expect(cache.counters.hits - before.hits).toBe(files.length);
    } finally {
      cache.store.close();
    }
  }, 60_000);

  /**
   * The first 64 KiB of the 40 MiB blob, read while the rest is on its way (not yet in the castore, its partial
   * file there), then the whole, fetched from the coordinator once. `way` says how it comes up:
   * - fetch-through: a relay restarted holds the manifest but starts no copy (no agent asked it for the manifest
   *   since); the blob comes alone, verified per group by RemoteCastore;
   * - copy-segments: the closure copy over an upstream that does not compress, which fetches a large blob in
   *   segments it verifies before writing them;
   * - copy-stream: the closure copy over a zstd upstream (as `ferry relay run`): one `blobs.stream`, whose large
   *   blob is verified here group by group once the blob's outboard is fetched for the agent.
   */
  async function firstSegmentBeforeTheWhole(name: string, way: 'fetch-through' | 'copy-segments' | 'copy-stream', graph = 'big'): Promise<void> {
    const { configId } = configs[graph]!;
    let client = upstream;
    if (way === 'copy-stream') ({ client } = await openDataClient(test.http.url, relayKey, { httpOnly: true, compression: 'zstd' }));
    const cache = new RelayCache(LocalCastore.open(path.join(work, name, 'castore')), new FetchSources(client, relayKey, test.coordinator.identity.keyId), test.coordinator.identity.keyId, path.join(work, name), 1024 * MiB);
    try {
      if (way === 'fetch-through') {
        const { header } = await upstream.call({ op: 'closure.manifest', configId, system: 'x86_64-linux' });
        writeFileSync(path.join(work, name, 'manifests', `${configId}.x86_64-linux.json`), JSON.stringify(header));
      } else {
        await cache.manifest(configId, 'x86_64-linux');
      }
      const closure = await cache.closure(configId);
      const [id, object] = [...closure.objects].find(([, candidate]) => candidate.kind === 'file' && candidate.size > 40 * MiB)!;
      const [source, again] = await Promise.all([cache.blobSource(closure, id), cache.blobSource(closure, id)]);
      const first: Uint8Array[] = [];
      for await (const chunk of source.read(0, 64 * 1024)) first.push(chunk);
      // Read while the rest is still on its way: not yet in the castore, its bytes in the partial file of the path taken.
      expect(cache.store.hasBlob(id as Digest)).toBe(false);
      expect(existsSync(path.join(work, name, 'partial', way === 'fetch-through' ? id : `${id}.copy`))).toBe(true);
      expect(cache.copies.counters.copies).toBe(way === 'fetch-through' ? 0 : 1);
      const expected = readFileSync(path.join(work, graph, 'big0'));
      expect(Buffer.concat(first).equals(expected.subarray(0, 64 * 1024))).toBe(true);
      // A range past 16 MiB, streamed as it is verified.
      const middle: Uint8Array[] = [];
      for await (const chunk of again.read(17 * MiB + 5, 20 * MiB)) middle.push(chunk);
      expect(Buffer.concat(middle).equals(expected.subarray(17 * MiB + 5, 37 * MiB + 5))).toBe(true);
      await again.waitFor(object.size);
      await again.stored;
      await until(() => cache.store.hasBlob(id as Digest));
      // Once: the blob's bytes and the directories, not the blob twice.
      expect(cache.counters.bytesFetched).toBeLessThan(object.size + 2 * MiB);
      expect(cache.counters.misses).toBeGreaterThan(0);
      const tail: Uint8Array[] = [];
      for await (const chunk of again.read(object.size - 1000, 1000)) tail.push(chunk);
      expect(Buffer.concat(tail).equals(expected.subarray(object.size - 1000))).toBe(true);
      expect(readdirSync(path.join(work, name, 'partial'))).toEqual([]);
      if (graph === 'bigref') expect(test.coordinator.castore.templateOf(id as Digest)).toBeDefined();
    } finally {
      cache.store.close();
      if (client !== upstream) await client.close();
    }
  }

  it('serves the first segment of a large blob it fetches through before the whole has arrived, and fetches it once', async () => {
    await firstSegmentBeforeTheWhole('stream-through', 'fetch-through');
  }, 60_000);

  it('serves the first segment of a large blob its closure copy brings in segments before the whole has arrived, and fetches it once', async () => {
    await firstSegmentBeforeTheWhole('stream-copy-segments', 'copy-segments');
  }, 60_000);

  it('serves the first segment of a large blob its closure copy streams (zstd) before the whole has arrived, verified, and fetches it once', async () => {
    await firstSegmentBeforeTheWhole('stream-copy-zstd', 'copy-stream');
  }, 60_000);

  it('serves a large blob the coordinator keeps as a template as its copy streams it, verified', async () => {
    await firstSegmentBeforeTheWhole('stream-copy-template', 'copy-stream', 'bigref');
  }, 60_000);

  it('restarted, serves from disk what it held: the manifests an agent asked for before, and the objects', async () => {
    const cache = cacheWith(1024 * MiB, 'once');
    try {
      const closure = await cache.closure(configs.one!.configId);
      await cache.ensureBlobs(closure, [...closure.objects].filter(([, object]) => object.kind === 'file').map(([id]) => id));
      expect(cache.counters.bytesFetched).toBe(0);
      expect(cache.counters.misses).toBe(0);
    } finally {
      cache.store.close();
    }
  }, 60_000);

  it('evicts the closures used longest ago once past its limit, and fetches them again when asked', async () => {
    const cache = cacheWith(6 * MiB, 'lru');
    try {
      const fill = async (graph: string) => {
        await cache.manifest(configs[graph]!.configId, 'x86_64-linux');
        const closure = await cache.closure(configs[graph]!.configId);
        await cache.ensureBlobs(closure, [...closure.objects].filter(([, object]) => object.kind === 'file').map(([id]) => id));
        return closure;
      };
      const one = await fill('one');
      const oneBlobs = [...one.objects].filter(([, object]) => object.kind === 'file').map(([id]) => id as Digest);
      await new Promise((resolve) => setTimeout(resolve, 5));
      const two = await fill('two');
      expect(cache.bytes()).toBeGreaterThan(6 * MiB);
      await cache.evictIfNeeded();
      expect(cache.counters.evictions).toBeGreaterThan(0);
      expect(cache.bytes()).toBeLessThanOrEqual(6 * MiB);
      // The closure used last stays whole; the other's blobs are gone.
      for (const [id, object] of two.objects) if (object.kind === 'file') expect(cache.store.hasBlob(id as Digest), id).toBe(true);
      expect(oneBlobs.filter((id) => cache.store.hasBlob(id))).toEqual([]);
      const misses = cache.counters.misses;
      await fill('one');
      expect(cache.counters.misses).toBeGreaterThan(misses);
    } finally {
      cache.store.close();
    }
  }, 60_000);

  it('reads nothing the coordinator did not decide: a config no agent of its site follows is refused upstream', async () => {
    const cache = cacheWith(1024 * MiB, 'refused');
    try {
      await expect(cache.manifest(configs.away!.configId, 'x86_64-linux')).rejects.toMatchObject({ code: 'FORBIDDEN' });
      // And a closure whose manifest it never got is not served either.
      await expect(cache.closure(configs.away!.configId)).rejects.toMatchObject({ code: 'FORBIDDEN' });
      // Revoked, it reads nothing at all.
      await test.adminClient.call('relays.revoke', { relayId: relayKey.keyId });
      await expect(cache.manifest(configs.two!.configId, 'x86_64-linux')).rejects.toMatchObject({ code: 'REVOKED' });
    } finally {
      cache.store.close();
    }
  }, 60_000);
});
