// zstd on the data plane's wire, on 127.0.0.1 over real QUIC and HTTP
// (docs/data-plane.md, "Compression on the wire"): compressed pushes and
// fetches move fewer bytes than the NARs and end byte-identical; each blob
// is compressed once for all fetchers; old clients get raw bytes; a resume
// at a group boundary needs no earlier bytes; uploads that lie about their
// compressed form are refused with their code, storing nothing.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compress } from 'zstd-napi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, LocalCastore, digestFromBytes, fsck, uploadStorePaths, withIngest, type Digest, type Entry, type FileNode, type StorePathInfo } from '../castore/index.js';
import { wireCompressionOf } from '../coordinator/api/wire-compression.js';
import { blobStreamCacheOf } from '../coordinator/api/blob-stream-cache.js';
import { unzstdExact, WIRE_FRAME_BYTES, WIRE_MAX_COMPRESSED_SEGMENT_BYTES } from '../protocol/compression/wire.js';
import { DataClient, DataError } from '../protocol/data-client.js';
import { openDataClient } from '../protocol/connect.js';
import type { Identity } from '../protocol/identity.js';
import { signRequest } from '../protocol/request-signing.js';
import { TRANSFER_GROUP_SIZE, type DataRequest } from '../protocol/data-protocol.js';
import { fetchConfigClosure, addTreeAsStorePath, enrollAgent, fakeStorePath, narBytes, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { startTcpFlipProxy, startUdpProxy } from './fault-proxies.js';

let test: TestCoordinator;
let work: string;
let source: LocalCastore;
let configId: string;
let bigConfig: string;
const tree = fakeStorePath('text-tree-1.0');
const big = fakeStorePath('text-big-1.0');
/** A compressible large blob (not a multiple of WIRE_FRAME_BYTES), and a random (incompressible) batched one. */
let bigBytes: Buffer;
let randomBlob: Buffer;
let counter = 0;

/** Text-like bytes: lines that repeat with variations, as in scripts, headers and docs (compresses ~5–10x). */
function textBytes(size: number, seed: string): Buffer {
  const words = ['store', 'path', 'closure', 'ferry', 'agent', 'blob', 'group', 'verify', 'zstd', 'coordinator', 'nix', 'activate'];
  const lines: string[] = [];
  let length = 0;
  for (let index = 0; length < size; index++) {
    const hash = createHash('sha256').update(`${seed}/${index}`).digest();
    const line = `${index.toString(16)}: ${words[hash[0]! % words.length]} ${words[hash[1]! % words.length]} = ${hash.readUInt16BE(2)}; // ${words[hash[4]! % words.length]}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

function writeTextTree(root: string): void {
  for (let index = 0; index < 150; index++) {
    const dir = path.join(root, `d${index % 5}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `f${index}.txt`), textBytes(200 + ((index * 977) % 30_000), `small${index}`));
  }
  writeFileSync(path.join(root, 'random.bin'), randomBlob);
  writeFileSync(path.join(root, 'medium.txt'), textBytes(900_000, 'medium'));
}

async function compressingClient(identity: Identity, options: { httpOnly?: boolean } = {}, on: TestCoordinator = test): Promise<DataClient> {
  return (await openDataClient(on.http.url, identity, { ...options, compression: 'zstd', tlsFingerprint: on.coordinator.tls.fingerprint })).client;
}

async function narTotal(storePaths: string[]): Promise<number> {
  let total = 0;
  for (const storePath of storePaths) total += (await narBytes(source, storePath)).length;
  return total;
}

/** Fetches `config` into a fresh castore; checks byte-identical NARs and fsck; returns the wire bytes received. */
async function fetchAndCheck(client: DataClient, config: string, storePath: string): Promise<number> {
  const target = LocalCastore.open(path.join(work, `target-${counter++}`));
  try {
    const before = client.wireBytes.received;
    await fetchConfigClosure(client, target, config, { coordinatorKey: test.coordinator.identity.keyId });
    expect((await narBytes(target, storePath)).equals(await narBytes(source, storePath))).toBe(true);
    expect((await fsck(target)).problems).toEqual([]);
    return client.wireBytes.received - before;
  } finally {
    target.close();
  }
}

async function refusedCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DataError) return error.code;
    throw error;
  }
  throw new Error('expected a refusal');
}

const idOf = (bytes: Uint8Array): Digest => digestFromBytes(blake3(bytes));

/** Every file of `infos` (a small-blob sink's plan that needs everything). */
function allFiles(infos: readonly StorePathInfo[], readDirectory: (id: Digest) => readonly Entry[]): FileNode[] {
  const files: FileNode[] = [];
  const walk = (id: Digest) => {
    for (const entry of readDirectory(id)) {
      if (entry.type === 'directory') walk(entry.digest);
      else if (entry.type === 'file') files.push(entry);
    }
  };
  for (const info of infos) if (info.root.type === 'directory') walk(info.root.digest);
  return files;
}

/** A compressing client that reaches the coordinator's QUIC port through `proxyPort` (a fault proxy), with short timeouts. */
function clientThroughProxy(proxyPort: number, onNotice?: (message: string) => void): DataClient {
  return new DataClient({
    identity: test.admin,
    httpUrl: test.http.url,
    quicAddress: `127.0.0.1:${proxyPort}`,
    certificatePem: test.coordinator.tls.certificatePem,
    idleTimeoutMs: 1500,
    connectTimeoutMs: 2000,
    retries: 8,
    compression: 'zstd',
    ...(onNotice ? { onNotice } : {}),
  });
}

/** Calls `visit` with every request `client` sends, each attempt of a retried one built again. */
function watchRequests(client: DataClient, visit: (request: DataRequest) => void): void {
  const call = client.call.bind(client);
  client.call = ((request: Parameters<typeof call>[0], options: Parameters<typeof call>[1]) =>
    call(
      typeof request === 'function'
        ? () => {
            const built = request();
            visit(built);
            return built;
          }
        : request,
      options,
    )) as typeof client.call;
}


beforeAll(async () => {
  // Prepared streams are refined at level 10 here, not 17: the same work, seconds sooner.
  test = await startTestCoordinator({ coordinator: { wireCompression: { refineLevel: 10 } } });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-compression-'));
  source = LocalCastore.open(path.join(work, 'source'));
  randomBlob = randomBytes(200_000);
  writeTextTree(path.join(work, 'tree'));
  bigBytes = textBytes(5 * 1024 * 1024 + 4321, 'big');
  writeFileSync(path.join(work, 'big'), bigBytes);
  await addTreeAsStorePath(source, path.join(work, 'tree'), tree);
  await addTreeAsStorePath(source, path.join(work, 'big'), big);
}, 60_000);

afterAll(async () => {
  source?.close();
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('zstd on the wire', () => {
  it('pushes compressed (batched and large blobs), fewer bytes than the NARs, and the coordinator stores the same bytes', async () => {
    const client = await compressingClient(test.pusher);
    try {
      expect(client.compression).toBe(true);
      const report = await uploadStorePaths(client, source, [tree]);
      expect(client.transportKind).toBe('quic');
      expect(report.registered).toEqual([tree]);
      const nar = await narTotal([tree]);
      expect(client.wireBytes.sent).toBeLessThan(nar / 2);
      expect((await narBytes(test.coordinator.castore, tree)).equals(await narBytes(source, tree))).toBe(true);
      // The large blob as 1 MiB frames, decompressed by the coordinator as they arrive.
      const sentBefore = client.wireBytes.sent;
      await uploadStorePaths(client, source, [big]);
      expect(client.wireBytes.sent - sentBefore).toBeLessThan(bigBytes.length / 2);
      expect((await narBytes(test.coordinator.castore, big)).equals(await narBytes(source, big))).toBe(true);
    } finally {
      await client.close();
    }
    configId = (await test.adminClient.call('graphs.submit', { graph: 'text', ...signedConfig(test.admin, 'text', [], { 'x86_64-linux': tree }) })).configId;
    bigConfig = (await test.adminClient.call('graphs.submit', { graph: 'big', ...signedConfig(test.admin, 'big', [], { 'x86_64-linux': big }) })).configId;
  }, 60_000);

  it('fetches compressed over QUIC then HTTP: fewer wire bytes than the NAR, identical NARs, and the second fetch compresses nothing', async () => {
    const cache = wireCompressionOf(test.coordinator)!;
    const nar = await narTotal([tree]);
    const bigNar = await narTotal([big]);
    const before = { ...cache.stats };

    const quic = await compressingClient(test.admin);
    let quicBytes: number;
    let quicBigBytes: number;
    try {
      quicBytes = await fetchAndCheck(quic, configId, tree);
      quicBigBytes = await fetchAndCheck(quic, bigConfig, big);
      expect(quic.transportKind).toBe('quic');
    } finally {
      await quic.close();
    }
    const first = { ...cache.stats };
    expect(first.compressions).toBeGreaterThan(before.compressions);
    // The random blob did not compress: sent raw, and remembered as such.
    expect(quicBytes).toBeGreaterThan(randomBlob.length);
    expect(quicBytes).toBeLessThan(nar / 2);
    expect(quicBigBytes).toBeLessThan(bigNar / 2);

    const http = await compressingClient(test.admin, { httpOnly: true });
    try {
      const httpBytes = await fetchAndCheck(http, configId, tree);
      const httpBigBytes = await fetchAndCheck(http, bigConfig, big);
      expect(http.transportKind).toBe('http');
      expect(httpBytes).toBeLessThan(nar / 2);
      expect(httpBigBytes).toBeLessThan(bigNar / 2);
    } finally {
      await http.close();
    }
    // Computed once: the same closure again (other transport, other client) ran the compressor not once.
    expect(cache.stats.compressions).toBe(first.compressions);
    expect(cache.stats.hits).toBeGreaterThan(first.hits);

    // The same fetch without compression moves at least the NAR's file bytes.
    const raw = (await openDataClient(test.http.url, test.admin, { compression: 'off', tlsFingerprint: test.coordinator.tls.fingerprint })).client;
    try {
      expect(raw.compression).toBe(false);
      const rawBytes = await fetchAndCheck(raw, bigConfig, big);
      expect(rawBytes).toBeGreaterThan(bigBytes.length);
    } finally {
      await raw.close();
    }
  }, 60_000);

  it('sends a batch as one zstd frame to a client that accepts zstd-batch: smaller than its blobs each compressed alone (what a client accepting only zstd gets)', async () => {
    const ids: Digest[] = [];
    const walk = (digest: Digest): void => {
      for (const entry of source.readDirectory(digest)) {
        if (entry.type === 'directory') walk(entry.digest);
        // The text files: random.bin compresses neither way.
        else if (entry.type === 'file' && entry.name.endsWith('.txt') && entry.size <= 256 * 1024) ids.push(entry.digest);
      }
    };
    const root = source.getStorePath(tree)!.root;
    if (root.type !== 'directory') throw new Error('the tree is a directory');
    walk(root.digest);
    expect(ids.length).toBeGreaterThan(100);
    const client = await compressingClient(test.admin);
    try {
      const batched = await client.call({ op: 'blobs.get', ids, accept: ['zstd', 'zstd-batch'] }, { consume: async (reply) => {
        await reply.body.readExact(reply.header.batch!.wireSize);
        await reply.body.expectEnd();
        return reply.header;
      } });
      expect(batched.batch?.encoding).toBe('zstd');
      expect(batched.blobs.every((blob) => blob.encoding === 'identity')).toBe(true);
      const alone = await client.call({ op: 'blobs.get', ids, accept: ['zstd'] }, { consume: async (reply) => {
        for (const blob of reply.header.blobs) await reply.body.readExact(blob.encoding === 'zstd' ? blob.wireSize! : blob.size);
        await reply.body.expectEnd();
        return reply.header;
      } });
      expect(alone.batch).toBeUndefined();
      const aloneBytes = alone.blobs.reduce((sum, blob) => sum + (blob.encoding === 'zstd' ? blob.wireSize! : blob.size), 0);
      // 8% here (these lines are half random hex); 23% on the realistic corpus's small files (bench/README.md).
      expect(batched.batch!.wireSize).toBeLessThan(aloneBytes * 0.95);
    } finally {
      await client.close();
    }
  });

  it('streams a large fetch as one zstd stream (blobs.stream): fewer bytes than batches, byte-identical, also into an agent-like receiver; a stream nobody prepared is not kept', async () => {
    const streams = blobStreamCacheOf(test.coordinator)!;
    const before = { ...streams.stats };
    const fetchWith = async (streamMinBytes: number, options: { httpOnly?: boolean } = {}): Promise<number> => {
      const client = await compressingClient(test.admin, options);
      const target = LocalCastore.open(path.join(work, `stream-${counter++}`));
      try {
        const received = client.wireBytes.received;
        await fetchConfigClosure(client, target, configId, { coordinatorKey: test.coordinator.identity.keyId, streamMinBytes });
        expect((await narBytes(target, tree)).equals(await narBytes(source, tree))).toBe(true);
        expect((await fsck(target)).problems).toEqual([]);
        return client.wireBytes.received - received;
      } finally {
        target.close();
        await client.close();
      }
    };
    const batched = await fetchWith(Infinity);
    expect(streams.stats.uncached).toBe(before.uncached);
    const streamed = await fetchWith(0);
    expect(streamed).toBeLessThan(batched);
    // This closure is under WIRE_STREAM_MIN_BYTES, so nothing prepared its stream: each request gets
    // one compressed for it alone (level 3), and nothing is kept (the next test has a prepared one).
    await fetchWith(0, { httpOnly: true });
    expect(streams.stats).toEqual({ ...before, uncached: before.uncached + 2 });
    expect(readdirSync(path.join(test.coordinator.dataDir, 'wire-cache'))).toEqual([]);

    // As the agent takes it: batched-size blobs go to the sink only (verified), large ones into the castore.
    const client = await compressingClient(test.admin);
    const target = LocalCastore.open(path.join(work, `stream-agent-${counter++}`));
    try {
      const offered = new Map<string, number>();
      await fetchConfigClosure(client, target, configId, {
        coordinatorKey: test.coordinator.identity.keyId,
        streamMinBytes: 0,
        smallBlobs: {
          plan: allFiles,
          accept: (id, bytes) => {
            expect(idOf(bytes)).toBe(id);
            offered.set(id, bytes.length);
          },
        },
      });
      expect(offered.size).toBeGreaterThan(100);
      expect(target.stats().blobs).toBe(0);
    } finally {
      target.close();
      await client.close();
    }
  }, 60_000);

  it('resumes a blobs.stream cut mid-stream by asking for the blobs that had not arrived, keeping those that had', async () => {
    // After medium.txt and random.bin (the walk's first blobs: ~500 KB on the wire), before the end.
    const proxy = await startUdpProxy(test.quic.port, { cutAfterBytes: 700 * 1024 });
    try {
      const client = clientThroughProxy(proxy.port);
      /** Per blobs.stream attempt: the blobs it asks for, and those received (handed on, verified) before it. */
      const asked: { ids: number; before: number }[] = [];
      let offered = 0;
      watchRequests(client, (request) => {
        if (request.op === 'blobs.stream') asked.push({ ids: request.ids.length, before: offered });
      });
      const lifted = setInterval(() => {
        if (proxy.cuts > 0) proxy.faults.cutAfterBytes = undefined;
      }, 10);
      const target = LocalCastore.open(path.join(work, `stream-cut-${counter++}`));
      try {
        // Small blobs counted as they arrive (verified), then stored, as if they had gone to the castore.
        const received = new Map<Digest, Uint8Array>();
        await fetchConfigClosure(client, target, configId, {
          coordinatorKey: test.coordinator.identity.keyId,
          streamMinBytes: 0,
          smallBlobs: {
            plan: allFiles,
            accept: (id, bytes) => {
              offered++;
              received.set(id, new Uint8Array(bytes));
            },
          },
        }).finally(() => clearInterval(lifted));
        await withIngest(target, async (ingest) => {
          for (const [id, bytes] of received) await ingest.putBlobBytes(bytes, id);
        });
        expect(proxy.cuts).toBe(1);
        // Each retry asks for exactly what had not arrived (all 152 blobs are batched-size: each reaches the sink once).
        expect(asked.length, JSON.stringify(asked)).toBeGreaterThanOrEqual(2);
        for (const attempt of asked) expect(attempt.ids + attempt.before).toBe(asked[0]!.ids);
        expect(offered).toBe(asked[0]!.ids);
        expect((await narBytes(target, tree)).equals(await narBytes(source, tree))).toBe(true);
        expect((await fsck(target)).problems).toEqual([]);
      } finally {
        target.close();
        await client.close();
      }
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('compresses the stream of a large pushed closure right after the push, so a cold fetch reads it from disk', async () => {
    const streams = blobStreamCacheOf(test.coordinator)!;
    const large = fakeStorePath('text-large-stream-1.0');
    mkdirSync(path.join(work, 'large-stream'));
    // Over WIRE_STREAM_MIN_BYTES (32 MiB): what a fetch streams, and a push prepares.
    for (let index = 0; index < 3; index++) writeFileSync(path.join(work, 'large-stream', `part${index}.txt`), textBytes(11 * 1024 * 1024, `large-stream-${index}`));
    // An empty file: no stream carries it (nothing to send), so it must not change which stream is asked for.
    writeFileSync(path.join(work, 'large-stream', 'empty'), '');
    await addTreeAsStorePath(source, path.join(work, 'large-stream'), large);
    const before = { ...streams.stats };
    const pusher = await compressingClient(test.pusher);
    try {
      await uploadStorePaths(pusher, source, [large]);
    } finally {
      await pusher.close();
    }
    expect(streams.stats.compressions).toBe(before.compressions + 1);
    const config = (await test.adminClient.call('graphs.submit', { graph: 'large-stream', ...signedConfig(test.admin, 'large-stream', [], { 'x86_64-linux': large }) })).configId;
    const client = await compressingClient(test.admin);
    const target = LocalCastore.open(path.join(work, `large-stream-${counter++}`));
    try {
      await fetchConfigClosure(client, target, config, { coordinatorKey: test.coordinator.identity.keyId });
      expect((await narBytes(target, large)).equals(await narBytes(source, large))).toBe(true);
      // Followed while it was produced, or read complete (at level 9, or refined): either way not compressed again.
      expect(streams.stats).toMatchObject({ compressions: before.compressions + 1, hits: before.hits + 1, uncached: before.uncached });
      expect(client.wireBytes.received).toBeLessThan(33 * 1024 * 1024 / 3);
    } finally {
      target.close();
      await client.close();
    }
    // Then compressed again in the background; the refined entry replaces the level-9 one.
    await streams.idle();
    expect(streams.stats.refined).toBe(before.refined + 1);
    const cached = readdirSync(path.join(test.coordinator.dataDir, 'wire-cache'));
    expect(cached).toHaveLength(1);
    expect(cached[0]).toMatch(/\.r\.zst$/);
    const again = await compressingClient(test.admin);
    const second = LocalCastore.open(path.join(work, `large-stream-${counter++}`));
    try {
      await fetchConfigClosure(again, second, config, { coordinatorKey: test.coordinator.identity.keyId });
      expect((await narBytes(second, large)).equals(await narBytes(source, large))).toBe(true);
      expect((await fsck(second)).problems).toEqual([]);
      expect(streams.stats).toMatchObject({ compressions: before.compressions + 1, hits: before.hits + 2, uncached: before.uncached });
      expect(again.wireBytes.received).toBeLessThan(33 * 1024 * 1024 / 3);
    } finally {
      second.close();
      await again.close();
    }
  }, 60_000);

  it('stops refining a stream at once when the coordinator closes, keeping nothing half-written', async () => {
    // Level 19: ~15 s of a core for these 33 MiB, so finishing within 3 s (a loaded machine) means it was stopped.
    const other = await startTestCoordinator({ coordinator: { wireCompression: { refineLevel: 19 } } });
    const streams = blobStreamCacheOf(other.coordinator)!;
    const cacheDir = path.join(other.coordinator.dataDir, 'wire-cache');
    const large = fakeStorePath('text-large-stream-1.0');
    const pusher = await compressingClient(other.pusher, {}, other);
    try {
      await uploadStorePaths(pusher, source, [large]);
    } finally {
      await pusher.close();
    }
    // The level-9 entry first, then the refiner's part file.
    const deadline = Date.now() + 30_000;
    while (!readdirSync(cacheDir).some((name) => name.endsWith('.r.zst.part')) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(readdirSync(cacheDir).filter((name) => name.endsWith('.zst'))).toHaveLength(1);
    const closing = Date.now();
    other.coordinator.close();
    await streams.idle();
    expect(Date.now() - closing).toBeLessThan(3_000);
    expect(streams.stats.refined).toBe(0);
    expect(readdirSync(cacheDir).filter((name) => name.includes('.r.'))).toEqual([]);
    await other.close();
  }, 60_000);

  it('refuses blobs.stream requests that name a blob twice or one not in the store, and an agent streaming outside its closure', async () => {
    const client = await compressingClient(test.admin);
    try {
      const id = idOf(textBytes(1177, 'small1'));
      expect(await refusedCode(client.call({ op: 'blobs.stream', ids: [id, id] }))).toBe('INVALID');
      expect(await refusedCode(client.call({ op: 'blobs.stream', ids: [randomBytes(32).toString('hex') as Digest] }))).toBe('NOT_FOUND');
      expect(await refusedCode(client.call({ op: 'blobs.stream', ids: [] }))).toBe('INVALID');
    } finally {
      await client.close();
    }
    // Following graph 'big': the text tree's blobs are outside its closure.
    const agent = await enrollAgent(test, 'big');
    const agentClient = await compressingClient(agent);
    try {
      expect(await refusedCode(agentClient.call({ op: 'blobs.stream', ids: [idOf(textBytes(1177, 'small1'))] }))).toBe('FORBIDDEN');
    } finally {
      await agentClient.close();
    }
  });

  it('gives a client that does not accept zstd exactly the raw bytes, with headers as before', async () => {
    // f1.txt of the tree: 200 + 977 bytes.
    const id = idOf(textBytes(1177, 'small1'));
    for (const accept of [undefined, ['br']]) {
      const header = Buffer.from(JSON.stringify({ op: 'blobs.get', ids: [id], ...(accept ? { accept } : {}) }));
      const frame = Buffer.concat([Buffer.from([0, 0, 0, 0]), header]);
      frame.writeUInt32BE(header.length, 0);
      const response = await fetch(new URL('/v1/data', test.http.url), {
        method: 'POST',
        headers: { 'content-type': 'application/x-ferry-frames', ...signRequest(test.admin, 'POST', '/v1/data', header, Date.now()) },
        body: frame,
      });
      const bytes = Buffer.from(await response.arrayBuffer());
      const length = bytes.readUInt32BE(0);
      const reply = JSON.parse(bytes.subarray(4, 4 + length).toString());
      expect(reply).toEqual({ blobs: [{ id, size: 1177, outboardSize: 0 }] });
      expect(bytes.subarray(4 + length).equals(textBytes(1177, 'small1'))).toBe(true);
    }
  });

  it('serves a large-blob segment from any group boundary as frames that need no earlier bytes', async () => {
    const client = await compressingClient(test.admin);
    try {
      const id = idOf(bigBytes);
      for (const offset of [0, 5 * TRANSFER_GROUP_SIZE, WIRE_FRAME_BYTES + 3 * TRANSFER_GROUP_SIZE, 5 * WIRE_FRAME_BYTES]) {
        const length = 2 * WIRE_FRAME_BYTES;
        await client.call(
          { op: 'blob.get', id, offset, length, outboard: false, accept: ['zstd'] },
          {
            consume: async (reply) => {
              const expected = Math.min(length, bigBytes.length - offset);
              expect(reply.header).toMatchObject({ offset, length: expected, outboardSize: 0, encoding: 'zstd' });
              expect(reply.header.wireLength!).toBeLessThan(expected / 2);
              const parts: Uint8Array[] = [];
              for await (const chunk of unzstdExact(reply.body.readChunks(reply.header.wireLength!), expected, 'segment')) parts.push(chunk);
              expect(Buffer.concat(parts).equals(bigBytes.subarray(offset, offset + expected))).toBe(true);
              await reply.body.expectEnd();
            },
          },
        );
      }
    } finally {
      await client.close();
    }
  });

  it('sends a segment longer than WIRE_MAX_COMPRESSED_SEGMENT_BYTES as it is, streamed (its frames would be held before the header)', async () => {
    const long = textBytes(WIRE_MAX_COMPRESSED_SEGMENT_BYTES + 4321, 'long');
    writeFileSync(path.join(work, 'long'), long);
    await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'long'), fakeStorePath('text-long-1.0'));
    const client = await compressingClient(test.admin);
    try {
      const id = idOf(long);
      // The whole blob in one request: identity, whatever the client accepts.
      await client.call(
        { op: 'blob.get', id, outboard: false, accept: ['zstd'] },
        {
          consume: async (reply) => {
            expect(reply.header).toMatchObject({ offset: 0, length: long.length, encoding: 'identity' });
            expect(reply.header.wireLength).toBeUndefined();
            let received = 0;
            for await (const chunk of reply.body.readChunks(long.length)) received += chunk.length;
            expect(received).toBe(long.length);
          },
        },
      );
      // At the bound, compressed.
      await client.call(
        { op: 'blob.get', id, length: WIRE_MAX_COMPRESSED_SEGMENT_BYTES, outboard: false, accept: ['zstd'] },
        {
          consume: async (reply) => {
            expect(reply.header).toMatchObject({ length: WIRE_MAX_COMPRESSED_SEGMENT_BYTES, encoding: 'zstd' });
            for await (const _ of reply.body.readChunks(reply.header.wireLength!));
          },
        },
      );
    } finally {
      await client.close();
    }
  });

  it('resumes a compressed large blob after the QUIC connection is cut mid-blob, without starting over', async () => {
    const proxy = await startUdpProxy(test.quic.port, { cutAfterBytes: 600 * 1024 });
    try {
      const notices: string[] = [];
      const client = clientThroughProxy(proxy.port, (message) => notices.push(message));
      // Records where each blob.get starts (the retry's request is built again per attempt).
      const offsets: number[] = [];
      watchRequests(client, (request) => {
        if (request.op === 'blob.get') offsets.push(request.offset ?? 0);
      });
      const cache = wireCompressionOf(test.coordinator)!;
      const before = { ...cache.stats };
      const lifted = setInterval(() => {
        if (proxy.cuts > 0) proxy.faults.cutAfterBytes = undefined;
      }, 10);
      try {
        const wire = await fetchAndCheck(client, bigConfig, big).finally(() => clearInterval(lifted));
        expect(proxy.cuts).toBe(1);
        expect(notices.some((notice) => /blob\.get failed over quic/.test(notice))).toBe(true);
        expect(client.transportKind).toBe('quic');
        // Compressed, and resumed rather than restarted: well under the blob, and under twice its compressed form.
        expect(wire).toBeLessThan(bigBytes.length / 2);
        expect(proxy.forwardedBytes).toBeLessThan(bigBytes.length / 2);
        // Resumed at a verified group boundary past the start, not restarted; the frames after
        // it came from the cache (at most the first, shorter frame was compressed for the resume).
        expect(offsets[0]).toBe(0);
        const resumedAt = offsets.find((offset, index) => index > 0 && offset !== 0 && offset % (16 * 1024 * 1024) !== 0);
        expect(resumedAt, `blob.get offsets ${offsets.join(', ')}`).toBeGreaterThan(0);
        expect(resumedAt! % TRANSFER_GROUP_SIZE).toBe(0);
        expect(cache.stats.compressions - before.compressions).toBeLessThanOrEqual(1);
      } finally {
        await client.close();
      }
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('over HTTP, a byte flipped in the compressed stream is caught, retried, and only verified bytes are stored', async () => {
    const proxy = await startTcpFlipProxy(Number(new URL(test.http.url).port), 300 * 1024 + 777);
    try {
      const notices: string[] = [];
      const client = new DataClient({ identity: test.admin, httpUrl: `http://127.0.0.1:${proxy.port}`, httpOnly: true, compression: 'zstd', onNotice: (message) => notices.push(message) });
      try {
        await fetchAndCheck(client, bigConfig, big);
      } finally {
        await client.close();
      }
      expect(proxy.flipped).toBe(1);
      expect(notices.some((notice) => /retrying/.test(notice))).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('a coordinator with wireCompression false says so in /v1/info (no wireEncodings): clients do not ask, bytes move raw, nothing is compressed', async () => {
    const plain = await startTestCoordinator({ coordinator: { wireCompression: false } });
    try {
      const pushClient = (await openDataClient(plain.http.url, plain.pusher, { compression: 'zstd', tlsFingerprint: plain.coordinator.tls.fingerprint })).client;
      try {
        await uploadStorePaths(pushClient, source, [tree]);
      } finally {
        await pushClient.close();
      }
      const config = (await plain.adminClient.call('graphs.submit', { graph: 'text', ...signedConfig(plain.admin, 'text', [], { 'x86_64-linux': tree }) })).configId;
      const opened = await openDataClient(plain.http.url, plain.admin, { compression: 'zstd', tlsFingerprint: plain.coordinator.tls.fingerprint });
      expect(opened.info.wireEncodings).toEqual([]);
      const client = opened.client;
      // Asked for zstd, but this coordinator does not offer it (an older one would refuse `accept`): the client does not ask.
      expect(client.compression).toBe(false);
      const target = LocalCastore.open(path.join(work, `target-${counter++}`));
      try {
        await fetchConfigClosure(client, target, config, { coordinatorKey: plain.coordinator.identity.keyId });
        expect((await narBytes(target, tree)).equals(await narBytes(source, tree))).toBe(true);
        // About the NAR (file bytes, without its framing), where zstd moved a third of it.
        expect(client.wireBytes.received).toBeGreaterThan(0.9 * (await narTotal([tree])));
      } finally {
        target.close();
        await client.close();
      }
      expect(wireCompressionOf(plain.coordinator)).toBeNull();
    } finally {
      await plain.close();
    }
  }, 60_000);

  it('refuses compressed uploads that lie, with their code, storing nothing of the batch', async () => {
    const client = await compressingClient(test.pusher);
    const good = textBytes(20_000, `good-${randomBytes(4).toString('hex')}`);
    const goodFrame = compress(good);
    const lie = textBytes(30_000, `lie-${randomBytes(4).toString('hex')}`);
    const lieFrame = compress(lie);
    const bomb = compress(Buffer.alloc(64 * 1024 * 1024));
    const upload = (blobs: { id: Digest; size: number; encoding?: 'zstd'; wireSize?: number }[], body: Uint8Array[]) => client.call({ op: 'upload.blobs', blobs }, { body });
    // Not zstd (its magic number broken); and a byte flipped inside a block, which zstd (no checksum in
    // these frames) may decode to other bytes of the right size: then BLAKE3 refuses them.
    const corrupt = Buffer.from(lieFrame);
    corrupt[0]! ^= 0xff;
    const flipped = Buffer.from(lieFrame);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    const wrongBytes = compress(textBytes(30_000, 'something else'));
    const cases: [string, string | RegExp, Parameters<typeof upload>[0], Uint8Array[]][] = [
      ['declared size smaller', 'DECOMPRESS_OUTPUT_LIMIT', [{ id: idOf(lie), size: lie.length - 1, encoding: 'zstd', wireSize: lieFrame.length }], [lieFrame]],
      ['declared size larger', 'DECOMPRESS_TRUNCATED', [{ id: idOf(lie), size: lie.length + 1, encoding: 'zstd', wireSize: lieFrame.length }], [lieFrame]],
      ['corrupt frame', 'DECOMPRESS_CORRUPT', [{ id: idOf(lie), size: lie.length, encoding: 'zstd', wireSize: corrupt.length }], [corrupt]],
      ['flipped byte', /^(DECOMPRESS_CORRUPT|DECOMPRESS_TRUNCATED|DECOMPRESS_OUTPUT_LIMIT|BLOB_CORRUPT)$/, [{ id: idOf(lie), size: lie.length, encoding: 'zstd', wireSize: flipped.length }], [flipped]],
      ['bomb', 'DECOMPRESS_OUTPUT_LIMIT', [{ id: idOf(lie), size: 1_000_000, encoding: 'zstd', wireSize: bomb.length }], [bomb]],
      ['bomb as a large blob (streamed)', 'DECOMPRESS_OUTPUT_LIMIT', [{ id: idOf(lie), size: 3_000_000, encoding: 'zstd', wireSize: bomb.length }], [bomb]],
      ['large blob, declared size larger', 'DECOMPRESS_TRUNCATED', [{ id: idOf(lie), size: 3_000_000, encoding: 'zstd', wireSize: lieFrame.length }], [lieFrame]],
      ['other bytes than the id', 'BLOB_CORRUPT', [{ id: idOf(lie), size: 30_000, encoding: 'zstd', wireSize: wrongBytes.length }], [wrongBytes]],
      ['wireSize over size', 'INVALID', [{ id: idOf(lie), size: 10, encoding: 'zstd', wireSize: 11 }], [Buffer.alloc(11)]],
      ['zstd without wireSize', 'INVALID', [{ id: idOf(lie), size: lie.length, encoding: 'zstd' }], [lieFrame]],
    ];
    try {
      for (const [name, code, blobs, body] of cases) {
        // A good compressed blob first: the batch is refused whole.
        const batch = [{ id: idOf(good), size: good.length, encoding: 'zstd' as const, wireSize: goodFrame.length }, ...blobs];
        const refused = await refusedCode(upload(batch, [goodFrame, ...body]));
        if (typeof code === 'string') expect(refused, name).toBe(code);
        else expect(refused, name).toMatch(code);
        expect(test.coordinator.castore.hasBlob(idOf(good)), name).toBe(false);
        expect(test.coordinator.castore.hasBlob(idOf(lie)), name).toBe(false);
      }
      // The honest batch is stored.
      expect((await upload([{ id: idOf(good), size: good.length, encoding: 'zstd', wireSize: goodFrame.length }], [goodFrame])).header).toEqual({ stored: 1, alreadyPresent: 0 });
      expect(test.coordinator.castore.hasBlob(idOf(good))).toBe(true);
    } finally {
      await client.close();
    }
  }, 60_000);
});
