/**
 * Reference-aware blobs over the data plane (issue 20): after a rebuild
 * that only moved files to new store paths (new hash parts of themselves
 * and of their references), an agent that has the previous closure
 * restores the rebuilt files from the normalized blobs it holds instead of
 * fetching them, and verifies each against its real id. A real coordinator
 * (HTTP and QUIC on 127.0.0.1), real castores on disk; the store paths are
 * made here, as Nix would lay them out, not built by Nix.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyClosure, fsck, LocalCastore, offersTemplates, RemoteCastore, SMALL_BLOB_BYTES, uploadStorePaths, type BlobTemplateReader, type CastoreReader, type Digest, type FileNode, type SmallBlobSink } from '../castore/index.js';
import { blake3 } from '../castore/blake3/index.js';
import { MAX_TEMPLATE_QUERY, MAX_TEMPLATE_RECORD_BYTES } from '../protocol/data-protocol.js';
import type { BlobTemplate } from '../castore/services/index.js';
import { openDataClient } from '../protocol/connect.js';
import type { DataClient } from '../protocol/data-client.js';
import { Agent } from '../agent/index.js';
import { storePathLocation } from '../nix/store-path.js';
import { addTreeAsStorePath, enrollAgent, enrollStateDir, fakeStorePath, fetchConfigClosure, narBytes, narOfTree, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;

const hashPartOf = (storePath: string): string => path.basename(storePath).slice(0, 32);
const digestOf = (bytes: Uint8Array): string => Buffer.from(blake3(bytes)).toString('hex');

/** Bytes that do not compress or dedup, with `hashParts` written in at fixed places (as a linker writes RPATHs). */
function binaryEmbedding(seed: string, size: number, hashParts: readonly string[]): Buffer {
  const bytes = Buffer.alloc(size);
  for (let at = 0; at < size; at += 32) createHash('sha256').update(`${seed}/${at}`).digest().copy(bytes, at);
  hashParts.forEach((hashPart, index) => {
    for (let copy = 0; copy < 3; copy++) bytes.write(`/nix/store/${hashPart}-lib/lib`, 1000 + index * 70_000 + copy * 300_000, 'latin1');
  });
  return bytes;
}

interface Generation {
  lib: string;
  app: string;
  configId: string;
}

/**
 * One generation of a two-path closure: `lib` (a library whose release
 * note says `release`) and `app` (a 3 MiB binary that embeds its own and
 * lib's hash parts, plus a small wrapper script that does too). A new
 * release gives both new store paths, as a Nix rebuild does; app's bytes
 * differ only in the hash parts.
 */
async function generation(release: string, graph = 'templates'): Promise<Generation> {
  const lib = fakeStorePath(`lib-${release}`);
  const app = fakeStorePath(`app-${release}`);
  const libDir = path.join(work, `lib-${release}`);
  mkdirSync(path.join(libDir, 'lib'), { recursive: true });
  writeFileSync(path.join(libDir, 'lib', 'libdemo.so'), binaryEmbedding('lib', 2 * 1024 * 1024 + 77, [hashPartOf(lib)]));
  writeFileSync(path.join(libDir, 'RELEASE'), `release ${release}\n`);
  const appDir = path.join(work, `app-${release}`);
  mkdirSync(path.join(appDir, 'bin'), { recursive: true });
  writeFileSync(path.join(appDir, 'bin', '.app-wrapped'), binaryEmbedding('app', 3 * 1024 * 1024 + 5, [hashPartOf(app), hashPartOf(lib)]), { mode: 0o755 });
  writeFileSync(path.join(appDir, 'bin', 'app'), `#!/bin/sh\nexport LD_LIBRARY_PATH=${lib}/lib\nexec ${app}/bin/.app-wrapped "$@"\n`, { mode: 0o755 });
  // Ingested on the coordinator with their references, as `nix copy --to` into its cache does.
  await addTreeAsStorePath(test.coordinator.castore, libDir, lib, [lib]);
  await addTreeAsStorePath(test.coordinator.castore, appDir, app, [app, lib]);
  const head = test.coordinator.state.get('graphs', graph);
  const configId = (await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, head ? [head.head] : [], { 'x86_64-linux': app }, release, { activate: 'true' }) })).configId;
  return { lib, app, configId };
}

let first: Generation;
let rebuilt: Generation;

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-templates-'));
  first = await generation('1.0');
  rebuilt = await generation('1.0.1');
}, 60_000);
afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('reference-aware blobs over the data plane', () => {
  it('a rebuilt closure moves only what changed besides the hash parts, and every file is verified', async () => {
    const agent = await enrollAgent(test, 'templates');
    const target = LocalCastore.open(path.join(work, 'agent-castore'));
    const { client } = await openDataClient(test.http.url, agent);
    try {
      // The agent follows the graph: it may read the head's closure, then the rebuild's.
      await test.adminClient.call('agents.pin', { agentId: agent.keyId, configId: first.configId });
      const cold = await fetchConfigClosure(client, target, first.configId, { coordinatorKey: test.coordinator.identity.keyId });
      expect(cold.copiedBytes).toBeGreaterThan(5 * 1024 * 1024);

      await test.adminClient.call('agents.pin', { agentId: agent.keyId, configId: rebuilt.configId });
      const upgrade = await fetchConfigClosure(client, target, rebuilt.configId, { coordinatorKey: test.coordinator.identity.keyId });
      // libdemo.so and .app-wrapped (5 MiB) are restored; the wrapper script and the release note are new bytes.
      expect(upgrade.restoredBlobs).toBeGreaterThanOrEqual(2);
      expect(upgrade.copiedBytes).toBeLessThan(64 * 1024);
      for (const storePath of [rebuilt.lib, rebuilt.app]) expect((await narBytes(target, storePath)).equals(await narBytes(test.coordinator.castore, storePath))).toBe(true);
      expect((await fsck(target, { checkNars: true })).problems).toEqual([]);
    } finally {
      await client.close();
      target.close();
    }
  });

  it('refuses a template that does not restore to the blob, and copies that blob whole instead', async () => {
    // A lying source (a wrapper over a real castore: no coordinator can be made to lie here) claims
    // that every wanted blob is the normalized blob of libdemo.so with a record that restores other bytes.
    const source = test.coordinator.castore;
    const target = LocalCastore.open(path.join(work, 'lied-to'));
    try {
      await copyClosure(source, target, [first.app]);
      const someTemplate = [...(await templatesOf(source, target, rebuilt.app)).values()][0]!;
      const lyingBlobs = Object.assign(Object.create(source.blobs) as CastoreReader['blobs'], {
        templates: async (ids: readonly Digest[]) => new Map(ids.map((id) => [id, { normalized: someTemplate.normalized, record: someTemplate.record }] as const)),
      });
      const liar: CastoreReader = { pathInfo: source.pathInfo, directories: source.directories, blobs: lyingBlobs, close: () => undefined };
      const report = await copyClosure(liar, target, [rebuilt.app]);
      // Only the one blob the claim happens to be true of (libdemo.so itself) is restored; the others come whole.
      expect(report.restoredBlobs).toBeLessThanOrEqual(1);
      expect(report.copiedBlobs).toBeGreaterThan(0);
      expect((await narBytes(target, rebuilt.app)).equals(await narBytes(source, rebuilt.app))).toBe(true);
      expect((await fsck(target, { checkNars: true })).problems).toEqual([]);
    } finally {
      target.close();
    }
  });

  it('with a small-blob sink (an agent), keeps large files whole to link, asks first only what a held normalized blob could restore, and restores the rest', async () => {
    // A source that records what it is asked (a wrapper over the coordinator's castore).
    const source = test.coordinator.castore;
    const asked: Digest[][] = [];
    const recording: CastoreReader = {
      pathInfo: source.pathInfo,
      directories: source.directories,
      blobs: Object.assign(Object.create(source.blobs) as CastoreReader['blobs'], {
        templates: (ids: readonly Digest[]) => {
          asked.push([...ids]);
          return source.blobs.templates!(ids);
        },
      }),
      close: () => undefined,
    };
    const target = LocalCastore.open(path.join(work, 'sink-target'));
    const received = new Map<Digest, Buffer>();
    const sink: SmallBlobSink = {
      plan: (storePaths, readDirectory) => {
        const files: FileNode[] = [];
        const walk = (id: Digest): void => {
          for (const entry of readDirectory(id)) {
            if (entry.type === 'file') files.push(entry);
            else if (entry.type === 'directory') walk(entry.digest);
          }
        };
        for (const info of storePaths) if (info.root.type === 'directory') walk(info.root.digest);
        return files;
      },
      accept: (id, bytes) => void received.set(id, Buffer.from(bytes)),
    };
    try {
      const cold = await copyClosure(recording, target, [first.app], { smallBlobs: sink });
      // Nothing here to restore from: no id asked before the copy; all asked after it, for the owner's adoption.
      const claimed = await templatesOf(source, target, first.app);
      const wrapped = [...claimed.keys()].find((id) => source.statBlob(id)!.size > SMALL_BLOB_BYTES)!;
      expect(wrapped).toBeDefined();
      const coldClaims = await cold.templates;
      expect(coldClaims.get(wrapped)).toEqual(claimed.get(wrapped));
      // The large binary is kept as it came, a file of its own to hard-link into the store, not as a template.
      expect(target.templateOf(wrapped)).toBeUndefined();
      expect(target.ownBlobFile(wrapped)).toBeDefined();
      // Adopted with the claims (as the agent does), the binaries become templates over normalized blobs derived from the files.
      const files = path.join(work, 'sink-files');
      mkdirSync(files, { recursive: true });
      const adoptions = [...coldClaims.keys()].filter((id) => target.hasBlob(id) || received.has(id)).map((id) => {
        const file = path.join(files, id);
        writeFileSync(file, received.get(id) ?? Buffer.from(target.readBlobRangeSync(id, 0, source.statBlob(id)!.size)));
        return { id, size: source.statBlob(id)!.size, file };
      });
      target.adoptStoreFiles(adoptions, { recordMissing: true, templates: coldClaims });
      expect(target.templateOf(wrapped)?.normalized).toBe(claimed.get(wrapped)!.normalized);

      asked.length = 0;
      const sizes = target.normalizedSizes();
      const upgrade = await copyClosure(recording, target, [rebuilt.app], { smallBlobs: sink });
      expect(upgrade.restoredBlobs).toBeGreaterThanOrEqual(2);
      // Two questions: the blobs of the sizes of normalized blobs held here (before the copy), and the others
      // (once the blobs moved, for the adoption); each blob asked once.
      expect(asked).toHaveLength(2);
      const held = (id: Digest) => sizes.has(source.statBlob(id)!.size);
      expect(asked.filter((ids) => ids.length > 0 && ids.every(held))).toHaveLength(1);
      expect(asked.filter((ids) => ids.length > 0 && !ids.some(held))).toHaveLength(1);
      expect(new Set(asked.flat()).size).toBe(asked.flat().length);
      // Every restored file reached the sink, as its real bytes.
      for (const [id] of await templatesOf(source, target, rebuilt.app)) {
        if (received.has(id)) expect(digestOf(received.get(id)!)).toBe(id);
      }
      expect(received.has([...(await templatesOf(source, target, rebuilt.app)).keys()].find((id) => source.statBlob(id)!.size > SMALL_BLOB_BYTES)!)).toBe(true);
    } finally {
      target.close();
    }
  });

  it('an agent may ask for the templates of its own closure only, and for at most MAX_TEMPLATE_QUERY at once', async () => {
    const agent = await enrollAgent(test, 'templates');
    await test.adminClient.call('agents.pin', { agentId: agent.keyId, configId: first.configId });
    const { client } = await openDataClient(test.http.url, agent);
    try {
      const foreign = randomBytes(32).toString('hex');
      await expect(askTemplates(client, [foreign])).rejects.toMatchObject({ code: 'FORBIDDEN' });
      // The normalized blobs of its closure's templated files are its own too (looked up only once asked for).
      const normalized = [...(await templatesOf(test.coordinator.castore, test.coordinator.castore, first.app)).values()].map((template) => template.normalized);
      expect(normalized.length).toBeGreaterThan(0);
      await expect(askTemplates(client, normalized)).resolves.toBeDefined();
      await expect(askTemplates(client, [...normalized, foreign])).rejects.toMatchObject({ code: 'FORBIDDEN' });
      await expect(askTemplates(client, Array.from({ length: MAX_TEMPLATE_QUERY + 1 }, () => foreign))).rejects.toMatchObject({ code: 'INVALID' });
    } finally {
      await client.close();
    }
  });

  it('refuses a coordinator that answers a template for a blob it was not asked about', async () => {
    // A lying coordinator cannot be made of the real one: this stand-in client answers as one would.
    const asked = randomBytes(32).toString('hex') as Digest;
    const other = randomBytes(32).toString('hex') as Digest;
    const liar = {
      call: async (_request: unknown, options: { consume: (reply: unknown) => Promise<unknown> }) =>
        options.consume({
          header: { templates: [{ id: other, normalized: asked, recordSize: 3 }] },
          body: { readExact: async () => Buffer.alloc(3), expectEnd: async () => undefined },
        }),
    } as unknown as DataClient;
    const blobs = new RemoteCastore(liar).blobs;
    expect(offersTemplates(blobs)).toBe(true);
    await expect((blobs as unknown as BlobTemplateReader).templates([asked])).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
  });
});

describe('an agent, across a rebuild', () => {
  it('restores the rebuilt files from its own store files, keeping each byte once on disk', async () => {
    const graph = 'templates-agent';
    const first = await generation('3.0', graph);
    const stateDir = path.join(work, 'agent-state');
    const { agentId } = await enrollStateDir(test, { stateDir, name: 'tmpl-agent' });
    await test.adminClient.call('agents.assign', { agentId, graph });
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      await agent.runOnce();
      expect(agent.generations.current()?.configId).toBe(first.configId);
      const stored = () => {
        const castore = LocalCastore.open(path.join(stateDir, 'castore'));
        try {
          return castore.stats();
        } finally {
          castore.close();
        }
      };
      // Adopted: every file is read from the store, the castore keeps no copy of the 5 MiB of binaries
      // (nor of their normalized blobs), and knows which files are templates over what.
      const afterFirst = stored();
      expect(afterFirst.adoptedBlobs).toBe(4);
      expect(afterFirst.templatedBlobs).toBe(3);
      expect(afterFirst.blobs).toBe(4);

      const rebuilt = await generation('3.0.1', graph);
      await agent.runOnce();
      expect(agent.generations.current()?.configId).toBe(rebuilt.configId);
      const fetched = agent.events.read().filter((event) => event.kind === 'fetched').at(-1)!;
      // libdemo.so and .app-wrapped are restored from generation 1's files; the release note is new, and so is the
      // wrapper script, whose store paths' names (not only their hashes) changed with the version.
      expect(fetched.message).toMatch(/fetched 2 store paths, 2 blobs, \d{2,3} bytes; 2 files restored/);
      expect(stored().blobs).toBe(8);
      for (const storePath of [rebuilt.lib, rebuilt.app]) {
        const materialized = narOfTree(storePathLocation(path.join(stateDir, 'store'), storePath));
        expect((await materialized).equals(await narBytes(test.coordinator.castore, storePath))).toBe(true);
      }

      // Generation 1 collected: its files go, and the normalized blobs are now derived from generation 2's.
      await agent.gc(0);
      const castore = LocalCastore.open(path.join(stateDir, 'castore'));
      try {
        const normalized = [...(await templatesOf(test.coordinator.castore, castore, rebuilt.app)).values()].map((template) => template.normalized);
        expect(normalized.length).toBeGreaterThan(0);
        expect(castore.missingBlobs(normalized)).toEqual([]);
        expect((await fsck(castore, { checkNars: true })).problems).toEqual([]);
      } finally {
        castore.close();
      }
    } finally {
      await agent.close();
    }
  });
});

describe('reference-aware pushes', () => {
  it('`ferry push` of a rebuilt closure sends template records, not the files again, and the coordinator verifies them', async () => {
    // The pusher's own castore ingests both generations (with their references, as from the Nix store) ...
    const pusherStore = LocalCastore.open(path.join(work, 'pusher'));
    const fresh = await startTestCoordinator();
    try {
      for (const release of ['2.0', '2.0.1']) {
        const lib = fakeStorePath(`plib-${release}`);
        const app = fakeStorePath(`papp-${release}`);
        const libDir = path.join(work, `plib-${release}`);
        mkdirSync(libDir, { recursive: true });
        writeFileSync(path.join(libDir, 'libdemo.so'), binaryEmbedding('plib', 2 * 1024 * 1024, [hashPartOf(lib)]));
        writeFileSync(path.join(libDir, 'RELEASE'), `release ${release}\n`);
        const appDir = path.join(work, `papp-${release}`);
        mkdirSync(appDir, { recursive: true });
        writeFileSync(path.join(appDir, 'app'), binaryEmbedding('papp', 3 * 1024 * 1024, [hashPartOf(app), hashPartOf(lib)]));
        writeFileSync(path.join(appDir, 'small.sh'), `#!/bin/sh\nexec ${app}/app -L ${lib}\n`);
        await addTreeAsStorePath(pusherStore, libDir, lib, [lib]);
        await addTreeAsStorePath(pusherStore, appDir, app, [app, lib]);
        const { client } = await openDataClient(fresh.http.url, fresh.pusher);
        try {
          const storedBefore = fresh.coordinator.castore.stats().blobBytes;
          const report = await uploadStorePaths(client, pusherStore, [app]);
          const grew = fresh.coordinator.castore.stats().blobBytes - storedBefore;
          if (release === '2.0') {
            expect(report.bytesSent).toBeGreaterThan(5 * 1024 * 1024);
          } else {
            // ... so the rebuild sends the two small changed files and the records of the two large ones.
            expect(report.templatesSent).toBeGreaterThanOrEqual(2);
            expect(report.bytesSent).toBeLessThan(64 * 1024);
            expect(grew).toBeLessThan(64 * 1024);
          }
          for (const storePath of [lib, app]) expect((await narBytes(fresh.coordinator.castore, storePath)).equals(await narBytes(pusherStore, storePath))).toBe(true);
        } finally {
          await client.close();
        }
      }
      expect((await fsck(fresh.coordinator.castore, { checkNars: true })).problems).toEqual([]);
    } finally {
      pusherStore.close();
      await fresh.close();
    }
  });

  it('refuses an uploaded template that does not restore to its blob, over a blob it lacks, or from an agent, and keeps nothing of it', async () => {
    const source = test.coordinator.castore;
    const [someId, someTemplate] = [...(await templatesOf(source, source, rebuilt.app)).entries()][0]!;
    const size = source.statBlob(someId)!.size;
    const { client } = await openDataClient(test.http.url, test.pusher);
    const upload = (id: string, normalized: string, record: Uint8Array, as: DataClient = client) =>
      as.call({ op: 'upload.templates', templates: [{ id: id as Digest, size, normalized: normalized as Digest, recordSize: record.length }] }, { body: [record] }).then(
        async (reply) => {
          await reply.body.expectEnd();
          return 'stored';
        },
        (error: { code?: string }) => error.code,
      );
    try {
      const otherId = randomBytes(32).toString('hex');
      // A record that restores the normalized blob to other bytes than the id claims.
      expect(await upload(otherId, someTemplate.normalized, someTemplate.record)).toBe('BLOB_CORRUPT');
      // A normalized blob the coordinator does not hold.
      expect(await upload(otherId, randomBytes(32).toString('hex'), someTemplate.record)).toBe('BLOB_NOT_FOUND');
      // A record that does not decode.
      expect(await upload(otherId, someTemplate.normalized, new Uint8Array([9, 9, 9]))).toBe('REFERENCES_INVALID');
      expect(source.hasBlob(otherId as Digest)).toBe(false);
      // An agent may not upload at all.
      const agent = await enrollAgent(test, 'templates');
      const agentClient = (await openDataClient(test.http.url, agent)).client;
      try {
        expect(await upload(otherId, someTemplate.normalized, someTemplate.record, agentClient)).toBe('FORBIDDEN');
      } finally {
        await agentClient.close();
      }
      // Too many records, or too many bytes of them, are refused before any is read.
      const many = Array.from({ length: MAX_TEMPLATE_QUERY + 1 }, () => ({ id: otherId as Digest, size, normalized: someTemplate.normalized, recordSize: 1 }));
      await expect(client.call({ op: 'upload.templates', templates: many }, { body: [] })).rejects.toMatchObject({ code: 'INVALID' });
      const large = Array.from({ length: 17 }, () => ({ id: otherId as Digest, size, normalized: someTemplate.normalized, recordSize: MAX_TEMPLATE_RECORD_BYTES }));
      await expect(client.call({ op: 'upload.templates', templates: large }, { body: [] })).rejects.toMatchObject({ code: 'INVALID' });
      const oversized = [{ id: otherId as Digest, size, normalized: someTemplate.normalized, recordSize: MAX_TEMPLATE_RECORD_BYTES + 1 }];
      await expect(client.call({ op: 'upload.templates', templates: oversized }, { body: [] })).rejects.toMatchObject({ code: 'INVALID' });
    } finally {
      await client.close();
    }
  });
});

/** The templates the source keeps for the files of `storePath`. */
async function templatesOf(source: LocalCastore, _target: LocalCastore, storePath: string): Promise<Map<Digest, BlobTemplate>> {
  const ids: Digest[] = [];
  const walk = (id: Digest): void => {
    for (const entry of source.readDirectory(id)) {
      if (entry.type === 'file') ids.push(entry.digest);
      else if (entry.type === 'directory') walk(entry.digest);
    }
  };
  const root = source.getStorePath(storePath)!.root;
  if (root.type === 'directory') walk(root.digest);
  return source.blobs.templates!(ids);
}

async function askTemplates(client: DataClient, ids: string[]): Promise<unknown> {
  const reply = await client.call({ op: 'blobs.templates', ids: ids as Digest[] });
  await reply.body.expectEnd();
  return reply.header;
}
