// The data plane end to end on 127.0.0.1: push from a local castore over
// real QUIC, fetch into an empty castore over QUIC and over the HTTP
// fallback, byte-identical NARs, idempotent pushes, per-operation
// authorization, and uploads that do not verify.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, LocalCastore, digestFromBytes, LARGE_BLOB_SEGMENT_BYTES, uploadStorePaths, withIngest, type Digest, type FileNode, type Node } from '../castore/index.js';
import { connectQuicAsync } from '@currentspace/http3';
import { MAX_STREAMS_PER_CONNECTION } from '../coordinator/quic-server.js';
import { COORDINATOR_TLS_NAME, FERRY_ALPN } from '../protocol/data-protocol.js';
import { DataClient, DataError } from '../protocol/data-client.js';
import { openDataClient } from '../protocol/connect.js';
import { Identity } from '../protocol/identity.js';
import { PinningError } from '../protocol/tls-pinning.js';
import { fetchConfigClosure, addTreeAsStorePath, enrollAgent, fakeStorePath, narBytes, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
let source: LocalCastore;
const lib = fakeStorePath('lib-1.0');
const app = fakeStorePath('app-1.0');
const other = fakeStorePath('other-1.0');
let configId: string;

async function dataClient(identity: Identity, options: { httpOnly?: boolean; pinnedTls?: boolean } = {}): Promise<DataClient> {
  // Pinned TLS: HTTPS on the coordinator's HTTP port, its certificate pinned (join strings with tls=pinned).
  const url = options.pinnedTls ? test.http.url.replace(/^http:/, 'https:') : test.http.url;
  return (await openDataClient(url, identity, { ...options, tlsFingerprint: test.coordinator.tls.fingerprint })).client;
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

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-data-work-'));
  source = LocalCastore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'lib'), 'lib', { small: 300, large: 2 });
  writeTree(path.join(work, 'app'), 'app', { small: 40, large: 1, largeSize: 700_000 });
  writeTree(path.join(work, 'other'), 'other', { small: 5, large: 0 });
  await addTreeAsStorePath(source, path.join(work, 'lib'), lib);
  await addTreeAsStorePath(source, path.join(work, 'app'), app, [lib]);
  await addTreeAsStorePath(source, path.join(work, 'other'), other);
}, 60_000);

afterAll(async () => {
  source?.close();
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('push and fetch', () => {
  it('pushes a closure over QUIC, only what is missing, as one audit event', async () => {
    const client = await dataClient(test.pusher);
    try {
      const first = await uploadStorePaths(client, source, [app]);
      expect(client.transportKind).toBe('quic');
      expect(first.registered).toEqual([app, lib].sort());
      expect(first.blobsSent).toBeGreaterThan(300);
      const event = [...test.coordinator.events(first.seq - 1)][0]!;
      expect(event).toMatchObject({ action: 'store.push', actorKey: test.pusher.keyId, actorRole: 'pusher' });
      expect(event.payload).toMatchObject({ roots: [app], registeredCount: 2 });
      expect((await narBytes(test.coordinator.castore, app)).equals(await narBytes(source, app))).toBe(true);

      const again = await uploadStorePaths(client, source, [app]);
      expect(again).toMatchObject({ registered: [], blobsSent: 0, directoriesSent: 0, bytesSent: 0 });
      expect(again.seq).toBeGreaterThan(first.seq);
    } finally {
      await client.close();
    }
    const submitted = await test.adminClient.call('graphs.submit', { graph: 'web', ...signedConfig(test.admin, 'web', [], { 'x86_64-linux': app }) });
    configId = submitted.configId;
  }, 60_000);

  for (const transport of ['quic', 'http', 'pinned https'] as const) {
    it(`fetches the closure into an empty castore over ${transport === 'quic' ? 'QUIC' : `the ${transport} fallback`}, byte-identical`, async () => {
      const agent = await enrollAgent(test, 'web');
      const httpOnly = transport !== 'quic';
      const client = await dataClient(agent, { httpOnly, pinnedTls: transport === 'pinned https' });
      const target = LocalCastore.open(path.join(work, `agent-${transport.replace(' ', '-')}`));
      try {
        const phases = new Set<string>();
        // The sink a materializer overlaps with: the trees before any blob, then each small blob, verified.
        const offered = new Map<Digest, Uint8Array>();
        let planned: string[] = [];
        const report = await fetchConfigClosure(client, target, configId, {
          coordinatorKey: test.coordinator.identity.keyId,
          onProgress: (progress) => phases.add(progress.phase),
          smallBlobs: {
            plan: (storePaths, readDirectory) => {
              expect(offered.size).toBe(0);
              planned = storePaths.map((info) => info.storePath).sort();
              const files: FileNode[] = [];
              const walk = (node: Node): void => {
                if (node.type === 'file') files.push(node);
                else if (node.type === 'directory') {
                  const entries = readDirectory(node.digest);
                  expect(entries.length).toBeGreaterThan(0);
                  for (const entry of entries) walk(entry);
                }
              };
              for (const info of storePaths) walk(info.root);
              return files;
            },
            accept: (id, bytes) => void offered.set(id, Buffer.from(bytes)),
          },
        });
        expect(planned).toEqual([app, lib].sort());
        expect(offered.size).toBeGreaterThan(0);
        for (const [id, bytes] of offered) expect(digestFromBytes(blake3(bytes))).toBe(id);
        // What went to the sink is not in the castore: stored now, the castore holds the closure whole.
        expect(await target.blobs.missing([...offered.keys()])).toEqual([...offered.keys()]);
        await withIngest(target, async (ingest) => {
          for (const [id, bytes] of offered) await ingest.putBlobBytes(bytes, id);
        });
        expect(client.transportKind).toBe(httpOnly ? 'http' : 'quic');
        expect(report).toMatchObject({ target: app, copiedStorePaths: 2 });
        expect([...phases]).toEqual(['manifest', 'directories', 'blobs', 'registering', 'done']);
        for (const storePath of [app, lib]) expect((await narBytes(target, storePath)).equals(await narBytes(source, storePath))).toBe(true);
        const again = await fetchConfigClosure(client, target, configId, { coordinatorKey: test.coordinator.identity.keyId });
        expect(again).toMatchObject({ copiedStorePaths: 0, copiedBlobs: 0 });
      } finally {
        target.close();
        await client.close();
      }
    }, 60_000);
  }

  it('with warmHttps, sends small requests over the pinned HTTPS connection and large fetches (a stream, or batches) over QUIC, which then carries the rest; never small ones over plain HTTP', async () => {
    const agent = await enrollAgent(test, 'web');
    const manifest = { op: 'closure.manifest', configId, system: 'x86_64-linux' } as const;
    const warm = (await openDataClient(test.http.url.replace(/^http:/, 'https:'), agent, { pinnedTls: true, tlsFingerprint: test.coordinator.tls.fingerprint, warmHttps: true, compression: 'zstd' })).client;
    try {
      await warm.call(manifest);
      expect(warm.transportKind).toBe('http');
      const { header } = await warm.call(manifest);
      expect(warm.transportKind).toBe('http');
      // The closure as one stream (compressing, as over a real link): it connects QUIC.
      const target = LocalCastore.open(path.join(work, 'agent-warm-https'));
      try {
        const report = await fetchConfigClosure(warm, target, configId, { coordinatorKey: test.coordinator.identity.keyId, streamMinBytes: 0 });
        expect(report.copiedStorePaths).toBe(header.storePaths.length);
      } finally {
        target.close();
      }
      expect(warm.quicUnreachable).toBe(false);
      await warm.call(manifest);
      expect(warm.transportKind).toBe('quic');
    } finally {
      await warm.close();
    }
    // Not compressing (no stream), a large fetch is batches: they go over QUIC too.
    const batching = (await openDataClient(test.http.url.replace(/^http:/, 'https:'), agent, { pinnedTls: true, tlsFingerprint: test.coordinator.tls.fingerprint, warmHttps: true, compression: 'off' })).client;
    const target = LocalCastore.open(path.join(work, 'agent-warm-https-batches'));
    try {
      const calls: string[] = [];
      const call = batching.call.bind(batching);
      batching.call = (async (request: Parameters<typeof call>[0], options?: Parameters<typeof call>[1]) => {
        const reply = await call(request, options);
        calls.push(`${(typeof request === 'function' ? request() : request).op} ${batching.transportKind}`);
        return reply;
      }) as typeof batching.call;
      await fetchConfigClosure(batching, target, configId, { coordinatorKey: test.coordinator.identity.keyId, streamMinBytes: 0 });
      expect(calls[0]).toBe('closure.manifest http');
      expect(calls.filter((line) => line.startsWith('blobs.get') || line.startsWith('blob.get')).every((line) => line.endsWith('quic'))).toBe(true);
      expect(calls.some((line) => line.startsWith('blobs.get'))).toBe(true);
    } finally {
      target.close();
      await batching.close();
    }
    // Plain HTTP would show what QUIC encrypts to anyone on the path: the requests wait for QUIC instead.
    const plain = (await openDataClient(test.http.url, agent, { tlsFingerprint: test.coordinator.tls.fingerprint, warmHttps: true })).client;
    try {
      await plain.call(manifest);
      expect(plain.transportKind).toBe('quic');
    } finally {
      await plain.close();
    }
  }, 60_000);
});

describe('large closures', () => {
  it('pushes and fetches a store path of 25,000 files (queries and registrations split to bounded frames)', async () => {
    const dir = path.join(work, 'many');
    for (let index = 0; index < 25_000; index++) {
      const sub = path.join(dir, `d${index % 50}`);
      if (index < 50) mkdirSync(sub, { recursive: true });
      writeFileSync(path.join(sub, `f${index}`), `file ${index}\n`);
    }
    const many = fakeStorePath('many-files');
    await addTreeAsStorePath(source, dir, many);
    const pusher = await dataClient(test.pusher);
    const pushed = await uploadStorePaths(pusher, source, [many]);
    await pusher.close();
    expect(pushed).toMatchObject({ registered: [many], blobsSent: 25_000 });
    const { configId: manyConfig } = await test.adminClient.call('graphs.submit', { graph: 'many', ...signedConfig(test.admin, 'many', [], { 'x86_64-linux': many }) });
    const agent = await enrollAgent(test, 'many');
    const client = await dataClient(agent);
    const target = LocalCastore.open(path.join(work, 'many-target'));
    try {
      expect(await fetchConfigClosure(client, target, manyConfig, { coordinatorKey: test.coordinator.identity.keyId })).toMatchObject({ copiedBlobs: 25_000 });
      expect((await narBytes(target, many)).equals(await narBytes(source, many))).toBe(true);
    } finally {
      target.close();
      await client.close();
    }
  }, 120_000);

  it('fetches a file larger than a segment in segments, verified across their boundaries', async () => {
    const dir = path.join(work, 'segmented');
    mkdirSync(dir, { recursive: true });
    // 2.5 segments, not a multiple of 16 KiB: the last group is partial.
    const size = Math.floor(2.5 * LARGE_BLOB_SEGMENT_BYTES) + 12_345;
    const bytes = Buffer.alloc(size);
    for (let offset = 0; offset < size; offset += 32) bytes.writeUInt32LE((offset * 2654435761) >>> 0, offset);
    writeFileSync(path.join(dir, 'big.bin'), bytes);
    const segmented = fakeStorePath('segmented');
    await addTreeAsStorePath(source, dir, segmented);
    const pusher = await dataClient(test.pusher);
    await uploadStorePaths(pusher, source, [segmented]);
    await pusher.close();
    const { configId } = await test.adminClient.call('graphs.submit', { graph: 'segmented', ...signedConfig(test.admin, 'segmented', [], { 'x86_64-linux': segmented }) });
    const agent = await enrollAgent(test, 'segmented');
    const client = await dataClient(agent);
    const target = LocalCastore.open(path.join(work, 'segmented-target'));
    try {
      const report = await fetchConfigClosure(client, target, configId, { coordinatorKey: test.coordinator.identity.keyId });
      expect(report.copiedBytes).toBe(size);
      expect((await narBytes(target, segmented)).equals(await narBytes(source, segmented))).toBe(true);
    } finally {
      target.close();
      await client.close();
    }
  }, 120_000);
});

describe('authorization and verification', () => {
  it('lets an agent read only its own configs and their objects', async () => {
    const pusherClient = await dataClient(test.pusher);
    await uploadStorePaths(pusherClient, source, [other]);
    await pusherClient.close();
    const otherRoot = test.coordinator.castore.getStorePath(other)!.root;
    const appRoot = test.coordinator.castore.getStorePath(app)!.root;
    const otherConfig = (await test.adminClient.call('graphs.submit', { graph: 'other', ...signedConfig(test.admin, 'other', [], { 'x86_64-linux': other }) })).configId;

    const agent = await enrollAgent(test, 'web');
    const client = await dataClient(agent);
    try {
      expect((await client.call({ op: 'closure.manifest', configId, system: 'x86_64-linux' })).header.target).toBe(app);
      expect(await refusedCode(client.call({ op: 'closure.manifest', configId: otherConfig, system: 'x86_64-linux' }))).toBe('FORBIDDEN');
      expect(await refusedCode(client.call({ op: 'directories.get', ids: [otherRoot.type === 'directory' ? otherRoot.digest : ''] }))).toBe('FORBIDDEN');
      expect(appRoot.type).toBe('directory');
      const reply = await client.call({ op: 'directories.get', ids: [appRoot.type === 'directory' ? appRoot.digest : ''] });
      expect(reply.header.directories).toHaveLength(1);
      expect(await refusedCode(client.call({ op: 'upload.blobs', blobs: [{ id: digestFromBytes(blake3(Buffer.from('x'))), size: 1 }] }, { body: [Buffer.from('x')] }))).toBe('FORBIDDEN');
      expect(await refusedCode(client.call({ op: 'missing', blobs: [] }))).toBe('FORBIDDEN');
      expect(await refusedCode(client.call({ op: 'closure.manifest', configId, system: 'aarch64-linux' }))).toBe('NOT_FOUND');
    } finally {
      await client.close();
    }
    // A key the coordinator does not know is refused on every operation, over both transports.
    for (const httpOnly of [false, true]) {
      const stranger = await dataClient(Identity.generate(), { httpOnly });
      expect(await refusedCode(stranger.call({ op: 'closure.manifest', configId, system: 'x86_64-linux' }))).toBe('UNKNOWN_KEY');
      await stranger.close();
    }
    expect(test.log.some((line) => line.includes('UNKNOWN_KEY'))).toBe(true);
  }, 60_000);

  it('bounds the requests one QUIC connection may have open, and keeps serving well-behaved clients', async () => {
    const session = await connectQuicAsync(test.quic.address, { ca: test.coordinator.tls.certificatePem, servername: COORDINATOR_TLS_NAME, alpn: [FERRY_ALPN], runtimeMode: 'portable' });
    try {
      // Each stream sends half a frame header and waits: a parked request.
      const outcomes = await Promise.all(
        Array.from({ length: MAX_STREAMS_PER_CONNECTION + 36 }, () => {
          let stream: ReturnType<typeof session.openStream>;
          try {
            stream = session.openStream();
          } catch (error) {
            return Promise.resolve(String(error));
          }
          stream.write(Buffer.from([0, 0]));
          return new Promise<string>((resolve) => {
            stream.once('error', (error) => resolve(String(error)));
            setTimeout(() => resolve('parked'), 1000);
          });
        }),
      );
      const parked = outcomes.filter((outcome) => outcome === 'parked').length;
      expect(parked).toBe(MAX_STREAMS_PER_CONNECTION);
      expect(outcomes.filter((outcome) => /StreamLimit/.test(outcome))).toHaveLength(36);
    } finally {
      await session.close();
    }
    const client = await dataClient(test.pusher);
    expect((await client.call({ op: 'missing', blobs: [] })).header.blobs).toEqual([]);
    await client.close();
  });

  it('refuses an upload whose bytes do not match their id, keeping nothing of it', async () => {
    const client = await dataClient(test.pusher);
    try {
      const good = Buffer.from('good blob bytes');
      const claimed = Buffer.alloc(40_000, 7);
      const sent = Buffer.from(claimed);
      sent[20_000] = sent[20_000]! ^ 1;
      const goodId = digestFromBytes(blake3(good));
      const claimedId = digestFromBytes(blake3(claimed));
      const code = await refusedCode(
        client.call({ op: 'upload.blobs', blobs: [{ id: goodId, size: good.length }, { id: claimedId, size: claimed.length }] }, { body: [good, sent] }),
      );
      expect(code).toBe('BLOB_CORRUPT');
      expect(test.coordinator.castore.hasBlob(goodId)).toBe(false);
      expect(test.coordinator.castore.hasBlob(claimedId)).toBe(false);
      // A store path whose objects do not hash to its claimed NarHash is refused too.
      const info = { ...source.getStorePath(other)!, storePath: fakeStorePath('liar'), narSize: 12 };
      expect(await refusedCode(client.call({ op: 'upload.storePaths', roots: [info.storePath], storePaths: [info], stats: { bytesSent: 0, blobsSent: 0, directoriesSent: 0 } }))).toBe('BLOB_CORRUPT');
      expect(test.coordinator.castore.getStorePath(info.storePath)).toBeUndefined();
    } finally {
      await client.close();
    }
  });

  it('refuses a certificate that does not match the pinned fingerprint', async () => {
    await expect(openDataClient(test.http.url, test.pusher, { tlsFingerprint: 'ab'.repeat(32) })).rejects.toBeInstanceOf(PinningError);
  });
});
