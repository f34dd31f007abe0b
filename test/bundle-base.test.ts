// Bundles based on a config the agents run (`ferry bundle create NEW --base OLD`): only what OLD's
// closure lacks travels, and a rebuilt file that differs from OLD's only in the store paths it embeds
// travels as its template over OLD's normalized blob (docs/castore.md, "Reference-aware blobs"). The
// reader restores every such file and checks its BLAKE3 before anything is stored, derives the
// normalized blobs a machine that applied OLD from a bundle does not keep, and refuses with nothing
// stored a bundle whose base it lacks or whose template and derivation entries were tampered with.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, BundleError, CastoreError, exportNar, fsck, GROUP_SIZE, LocalCastore, readBundle, writeBundle, type BundleConfig } from '../castore/index.js';
import { configId } from '../castore/config-id.js';
import { ingestVersion, version } from '../castore/services/template-conformance.case.js';
import { ConfigBodySchema, type ConfigBody } from '../protocol/config.js';
import { formatHlc } from '../protocol/hlc.js';
import { Identity } from '../protocol/identity.js';
import { chunksOf, collect } from './decompress-helpers.js';

const coordinatorKey = Identity.generate();
const agent = Identity.generate();
const base = version(21);
const rebuilt = version(22);
/** A rebuild that also changed the app binary in one 16 KiB group (at 1 MiB, away from its store path sites). */
const changed = version(23);
const EDIT_AT = 1024 * 1024 + 10;
changed.appFiles.app = Buffer.from(changed.appFiles.app!);
(changed.appFiles.app as Buffer).write('fixed a bug', EDIT_AT, 'latin1');
let work: string;
/** The coordinator's castore: both versions, kept as templates (as a push or narinfo upload stores them). */
let coordinatorStore: LocalCastore;
let nars: { lib: Buffer; app: Buffer };
let changedNars: { lib: Buffer; app: Buffer };
let baseConfig: BundleConfig;
let rebuiltConfig: BundleConfig;
let changedConfig: BundleConfig;

function configOf(target: string, wall: number, message: string): BundleConfig {
  const body: ConfigBody = ConfigBodySchema.parse({
    graph: 'island',
    parents: [],
    targets: { 'x86_64-linux': target },
    activation: { command: 'true', environment: {}, timeoutSeconds: 60 },
    health: { command: 'true', timeoutSeconds: 60, retries: 0 },
    message,
    author: coordinatorKey.keyId,
    hlc: formatHlc({ wall, counter: 0, node: 'test' }),
  });
  return { ...body, id: configId(body) };
}

const bytesOf = collect;
const fromBuffer = (bytes: Buffer): AsyncGenerator<Uint8Array> => chunksOf(bytes, [10_000]);

function bundle(config: BundleConfig, options: { base?: BundleConfig } = {}) {
  return writeBundle(coordinatorStore, coordinatorKey, config, { audience: { agents: [agent.keyId], where: [] }, ...options });
}

/** A bundle's entries in order, with `edit` applied to each (return undefined to drop one). */
async function rewritten(bytes: Buffer, edit: (name: string, data: Buffer) => Buffer | undefined): Promise<Buffer> {
  const extract = tar.extract();
  extract.end(bytes);
  const pack = tar.pack();
  for await (const entry of extract) {
    const data = edit(entry.header.name, await bytesOf(entry as AsyncIterable<Uint8Array>));
    if (data) pack.entry({ name: entry.header.name, size: data.length, mtime: new Date(0) }, data);
  }
  pack.finalize();
  return bytesOf(pack as unknown as AsyncIterable<Uint8Array>);
}

/** An agent's castore holding the base as one that applied the base's full bundle does: whole blobs, no templates. */
async function storeFromFullBundle(name: string): Promise<LocalCastore> {
  const store = LocalCastore.open(path.join(work, name));
  await readBundle(fromBuffer(await bytesOf(bundle(baseConfig).bytes)), store, coordinatorKey.keyId);
  expect(store.stats().templatedBlobs).toBe(0);
  return store;
}

async function narOf(store: LocalCastore, storePath: string): Promise<Buffer> {
  return bytesOf(exportNar(store, store.getStorePath(storePath)!.root));
}

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'ferry-bundle-base-'));
  coordinatorStore = LocalCastore.open(path.join(work, 'coordinator'));
  await ingestVersion(coordinatorStore, base);
  const ingested = await ingestVersion(coordinatorStore, rebuilt);
  nars = { lib: ingested.libNar, app: ingested.appNar };
  const changedIngest = await ingestVersion(coordinatorStore, changed);
  changedNars = { lib: changedIngest.libNar, app: changedIngest.appNar };
  baseConfig = configOf(base.app, Date.now() - 60_000, 'base');
  rebuiltConfig = configOf(rebuilt.app, Date.now() - 30_000, 'mass rebuild');
  changedConfig = configOf(changed.app, Date.now() - 20_000, 'mass rebuild and a fix');
}, 60_000);

afterAll(() => {
  coordinatorStore?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('a bundle based on a config the agents run', () => {
  it("carries the rebuild's files as templates, a few KiB instead of the closure, and restores it byte-identical on a machine that applied the base from a bundle", async () => {
    const full = bundle(rebuiltConfig);
    const based = bundle(rebuiltConfig, { base: baseConfig });
    // Three files embed store paths (all rebuilt); the plain file is the base's, so it stays out.
    expect(based).toMatchObject({ storePaths: 2, blobs: 0, templates: 3 });
    expect(full.blobs).toBe(4);
    expect(based.size).toBeLessThan(full.size / 50);
    const bytes = await bytesOf(based.bytes);
    expect(bytes.length).toBe(based.size);
    const store = await storeFromFullBundle('from-bundle');
    try {
      const manifest = await readBundle(fromBuffer(bytes), store, coordinatorKey.keyId);
      expect(manifest).toMatchObject({ format: 'ferry-bundle-v3', base: baseConfig.id });
      expect((await narOf(store, rebuilt.lib)).equals(nars.lib)).toBe(true);
      expect((await narOf(store, rebuilt.app)).equals(nars.app)).toBe(true);
      expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('on a machine that keeps the base as templates, needs no derivation: the normalized blobs are there', async () => {
    const store = LocalCastore.open(path.join(work, 'with-templates'));
    try {
      await ingestVersion(store, base);
      const before = store.stats().blobs;
      await readBundle(fromBuffer(await bytesOf(bundle(rebuiltConfig, { base: baseConfig }).bytes)), store, coordinatorKey.keyId);
      expect((await narOf(store, rebuilt.app)).equals(nars.app)).toBe(true);
      // The three rebuilt files, kept as templates over the normalized blobs the base already had.
      expect(store.stats().blobs - before).toBe(3);
      expect(store.stats().templatedBlobs).toBe(6);
      expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('is refused, naming the base and how to go on, by a machine that lacks the base; nothing is stored', async () => {
    const store = LocalCastore.open(path.join(work, 'empty'));
    try {
      const error = await readBundle(fromBuffer(await bytesOf(bundle(rebuiltConfig, { base: baseConfig }).bytes)), store, coordinatorKey.keyId).catch((thrown: unknown) => thrown);
      expect(error).toBeInstanceOf(BundleError);
      expect((error as BundleError).code).toBe('BAD_BUNDLE');
      expect((error as BundleError).message).toContain(`only what the closure of config ${baseConfig.id} lacks`);
      expect((error as BundleError).message).toContain('without --base');
      expect(store.stats()).toMatchObject({ blobs: 0, directories: 0, storePaths: 0 });
    } finally {
      store.close();
    }
  });

  it('refuses tampered template and derivation entries (every restored byte is checked), with nothing stored', async () => {
    const bytes = await bytesOf(bundle(rebuiltConfig, { base: baseConfig }).bytes);
    const flipLastByte = (data: Buffer): Buffer => Buffer.concat([data.subarray(0, -1), Buffer.from([data.at(-1)! ^ 1])]);
    const cases: [string, (name: string, data: Buffer) => Buffer | undefined, RegExp][] = [
      // A site moved or a hash part changed restores other bytes than the id names.
      ['a template record altered', (name, data) => (name.startsWith('templates/') ? flipLastByte(data) : data), /hashes to|does not|invalid|template/i],
      ['a template over another normalized blob', (name, data) => (name.startsWith('templates/') ? Buffer.concat([Buffer.alloc(32, 7), data.subarray(32)]) : data), /not here|not found|neither/i],
      ['a derivation from another file', (name, data) => (name.startsWith('normalized/') ? Buffer.concat([Buffer.alloc(32, 9), data.subarray(32)]) : data), /not here/],
      ['a derivation whose record was altered', (name, data) => (name.startsWith('normalized/') ? flipLastByte(data) : data), /hashes to|does not|invalid|template|record/i],
      ['a derivation cut to its digest', (name, data) => (name.startsWith('normalized/') ? data.subarray(0, 32) : data), /too short/],
    ];
    let derivations = 0;
    await rewritten(bytes, (name, data) => {
      if (name.startsWith('normalized/')) derivations++;
      return data;
    });
    expect(derivations).toBeGreaterThan(0);
    for (const [what, edit, message] of cases) {
      const store = await storeFromFullBundle(`tampered-${what.replace(/\W+/g, '-')}`);
      try {
        const before = store.stats();
        const error = await readBundle(fromBuffer(await rewritten(bytes, edit)), store, coordinatorKey.keyId).catch((thrown: unknown) => thrown);
        expect(error instanceof BundleError || error instanceof CastoreError, what).toBe(true);
        expect((error as Error).message, what).toMatch(message);
        expect(store.stats(), what).toEqual(before);
        expect(store.getStorePath(rebuilt.app), what).toBeUndefined();
      } finally {
        store.close();
      }
    }
  });

  it('refuses template and derivation entries in a ferry-bundle-v2 bundle, and a base that is the config itself', async () => {
    const bytes = await bytesOf(bundle(rebuiltConfig, { base: baseConfig }).bytes);
    // Re-signed as v2 (which has no base): the same entries are then unknown to the format.
    let manifest: Buffer | undefined;
    const v2 = await rewritten(bytes, (name, data) => {
      if (name === 'ferry-bundle.json') {
        const { base: _base, ...rest } = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
        manifest = Buffer.from(JSON.stringify({ ...rest, format: 'ferry-bundle-v2' }));
        return manifest;
      }
      if (name === 'ferry-bundle.sig') {
        const message = new TextEncoder().encode(`ferry-bundle-v2\n${Buffer.from(blake3(manifest!)).toString('hex')}`);
        return Buffer.from(Buffer.from(coordinatorKey.sign(message)).toString('base64'));
      }
      return data;
    });
    const store = await storeFromFullBundle('v2');
    try {
      const before = store.stats();
      await expect(readBundle(fromBuffer(v2), store, coordinatorKey.keyId)).rejects.toThrow(/unexpected entry '(normalized|templates)\/[0-9a-f]{64}'/);
      expect(store.stats()).toEqual(before);
    } finally {
      store.close();
    }
    expect(() => bundle(rebuiltConfig, { base: rebuiltConfig })).toThrow(/base: a bundle cannot be based on its own config/);
  });
});

describe('a based bundle of a rebuild that also changed a file', () => {
  it('carries the changed normalized blob as the one group that differs from the base’s (ferry-bundle-v4), and restores the rebuild byte-identical', async () => {
    const based = bundle(changedConfig, { base: baseConfig });
    // app's normalized blob differs from the base's in one group; libfoo.so and run only in store paths.
    expect(based).toMatchObject({ storePaths: 2, blobs: 0, templates: 3, deltas: 1, deltaGroupBytes: GROUP_SIZE });
    expect(based.size).toBeLessThan(64 * 1024);
    const bytes = await bytesOf(based.bytes);
    expect(bytes.length).toBe(based.size);
    // On a machine that applied the base from a full bundle (the basis is derived from its file), and on one that keeps templates.
    for (const store of [await storeFromFullBundle('delta-from-bundle'), LocalCastore.open(path.join(work, 'delta-with-templates'))]) {
      try {
        if (store.stats().blobs === 0) await ingestVersion(store, base);
        const manifest = await readBundle(fromBuffer(bytes), store, coordinatorKey.keyId);
        expect(manifest).toMatchObject({ format: 'ferry-bundle-v4', base: baseConfig.id });
        expect((await narOf(store, changed.lib)).equals(changedNars.lib)).toBe(true);
        expect((await narOf(store, changed.app)).equals(changedNars.app)).toBe(true);
        expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
      } finally {
        store.close();
      }
    }
    // Without a base, or with nothing changed besides store paths, bundles stay ferry-bundle-v3: a Ferry from before v4 applies them.
    const full = bundle(changedConfig);
    expect(full.deltas).toBe(0);
    const store = LocalCastore.open(path.join(work, 'delta-full'));
    try {
      expect((await readBundle(fromBuffer(await bytesOf(full.bytes)), store, coordinatorKey.keyId)).format).toBe('ferry-bundle-v3');
    } finally {
      store.close();
    }
  });

  it('refuses tampered deltas/ entries (the built blob is checked against its id), with nothing stored', async () => {
    const bytes = await bytesOf(bundle(changedConfig, { base: baseConfig }).bytes);
    const deltas = (edit: (data: Buffer) => Buffer) => (name: string, data: Buffer) => (name.startsWith('deltas/') ? edit(data) : data);
    const header = 1 + 32 + 8 + 4 + 8;
    const cases: [string, (name: string, data: Buffer) => Buffer | undefined, RegExp][] = [
      ['a group altered', deltas((data) => Buffer.concat([data.subarray(0, -1), Buffer.from([data.at(-1)! ^ 1])])), /hash|corrupt|does not match/i],
      ['another basis', deltas((data) => Buffer.concat([data.subarray(0, 1), Buffer.alloc(32, 7), data.subarray(33)])), /not here/],
      ['a version this Ferry does not read', deltas((data) => Buffer.concat([Buffer.from([2]), data.subarray(1)])), /version 2; this Ferry reads version 1/],
      ['a run moved', deltas((data) => Buffer.from(data).fill(0, 45, 49)), /hash|corrupt|does not match/i],
      ['a run past the blob', deltas((data) => { const copy = Buffer.from(data); copy.writeUInt32LE(100_000, 45); return copy; }), /past its/],
      ['more runs than it holds', deltas((data) => { const copy = Buffer.from(data); copy.writeUInt32LE(1_000_000, 41); return copy; }), /runs/],
      ['its groups cut short', deltas((data) => data.subarray(0, header + 100)), /its runs say/],
      ['a size that is not the blob’s', deltas((data) => { const copy = Buffer.from(data); copy.writeBigUInt64LE(copy.readBigUInt64LE(33) + 1n, 33); return copy; }), /ends before it/],
      ['cut to its header', deltas((data) => data.subarray(0, 20)), /too short/],
    ];
    for (const [what, edit, message] of cases) {
      const store = await storeFromFullBundle(`delta-tampered-${what.replace(/\W+/g, '-')}`);
      try {
        const before = store.stats();
        const error = await readBundle(fromBuffer(await rewritten(bytes, edit)), store, coordinatorKey.keyId).catch((thrown: unknown) => thrown);
        expect(error instanceof BundleError || error instanceof CastoreError, what).toBe(true);
        expect((error as Error).message, what).toMatch(message);
        expect(store.stats(), what).toEqual(before);
        expect(store.getStorePath(changed.app), what).toBeUndefined();
      } finally {
        store.close();
      }
    }
  });

  it('refuses a deltas/ entry in a ferry-bundle-v3 bundle', async () => {
    const bytes = await bytesOf(bundle(changedConfig, { base: baseConfig }).bytes);
    let manifest: Buffer | undefined;
    const v3 = await rewritten(bytes, (name, data) => {
      if (name === 'ferry-bundle.json') {
        manifest = Buffer.from(JSON.stringify({ ...(JSON.parse(data.toString('utf8')) as Record<string, unknown>), format: 'ferry-bundle-v3' }));
        return manifest;
      }
      if (name === 'ferry-bundle.sig') {
        const message = new TextEncoder().encode(`ferry-bundle-v3\n${Buffer.from(blake3(manifest!)).toString('hex')}`);
        return Buffer.from(Buffer.from(coordinatorKey.sign(message)).toString('base64'));
      }
      return data;
    });
    const store = await storeFromFullBundle('delta-in-v3');
    try {
      const before = store.stats();
      await expect(readBundle(fromBuffer(v3), store, coordinatorKey.keyId)).rejects.toThrow(/unexpected entry 'deltas\/[0-9a-f]{64}'/);
      expect(store.stats()).toEqual(before);
    } finally {
      store.close();
    }
  });
});
