/**
 * The conformance suite of the castore services: the same cases, run
 * against every backend (conformance.test.ts; like hono's
 * `router/common.case.test.ts` and snix's `directoryservice/tests`).
 *
 * `describeCastoreConformance` runs everything on a backend that holds
 * objects; `describeReaderConformance` runs the read cases on a read-only
 * backend, given a writable one that stands behind it (the remote's
 * coordinator): what is written there must read back the same here.
 */
import { hash as referenceBlake3 } from 'blake3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeNar, type NarEvent } from '../../nix/index.js';
import { CastoreError } from '../errors.js';
import { fsck } from '../fsck.js';
import { collectGarbage } from '../gc.js';
import { ingestStorePath } from '../ingest-store-path.js';
import { exportNar } from '../nar-export.js';
import { digestFromBytes, type Digest, type Entry } from '../node.js';
import type { StorePathInfo } from '../store-path-info.js';
import { withIngest, type CastoreReader, type CastoreServices, type Clock } from './castore-services.js';
import { templateCases } from './template-conformance.case.js';

/** Opens a fresh, empty backend with the given clock; `close` releases whatever it holds. */
export type OpenBackend = (clock: Clock) => Promise<CastoreServices> | CastoreServices;

/** A read-only backend in front of a writable one: the fixture is written to `source`, read through `reader`. */
export interface ReaderBackend {
  source: CastoreServices;
  reader: CastoreReader;
  /** Makes what was written to `source` visible to `reader` (e.g. a push), once the fixture is in. */
  publish?: (storePaths: readonly string[]) => Promise<void>;
  close(): Promise<void> | void;
}

/** Deterministic bytes (xorshift32) for tests. */
export function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let index = 0; index < length; index++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[index] = x & 0xff;
  }
  return out;
}

/** A stream's chunks in one buffer. */
export async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

const b3sum = (bytes: Uint8Array): Digest => digestFromBytes(referenceBlake3(bytes) as Uint8Array);
const UNKNOWN = digestFromBytes(new Uint8Array(32).fill(7));

/** The NAR events of a flat directory of regular files. */
export function* narOf(files: Record<string, Uint8Array>): Generator<NarEvent> {
  yield { type: 'directory', path: '' };
  for (const name of Object.keys(files).sort()) {
    yield { type: 'file', path: name, size: files[name]!.length, executable: false, offset: 0 };
    yield { type: 'data', path: name, chunk: files[name]! };
    yield { type: 'file-end', path: name };
  }
  yield { type: 'directory-end', path: '' };
}

/** What the read cases expect to find: two store paths (one referencing the other) with small, large and empty files. */
const FILES = {
  lib: { 'a-small': pseudoRandom(300, 1), 'b-large': pseudoRandom(3 * 1024 * 1024 + 17, 2), 'c-empty': new Uint8Array(0) },
  app: { 'main': pseudoRandom(70_000, 3), 'shared': pseudoRandom(300, 1) },
};
const LIB = '/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-conformance-lib';
const APP = '/nix/store/1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-conformance-app';

interface Fixture {
  lib: StorePathInfo;
  app: StorePathInfo;
  nars: { lib: Buffer; app: Buffer };
}

async function writeFixture(store: CastoreServices): Promise<Fixture> {
  const nars = { lib: await collect(encodeNar(narOf(FILES.lib))), app: await collect(encodeNar(narOf(FILES.app))) };
  const lib = await ingestStorePath(store, encodeNar(narOf(FILES.lib)), { storePath: LIB, references: [] });
  const app = await ingestStorePath(store, encodeNar(narOf(FILES.app)), { storePath: APP, references: [LIB] });
  return { lib, app, nars };
}

/** The read cases, on whatever reader sees the fixture. */
function readCases(setup: () => { reader: CastoreReader; fixture: Fixture }): void {
  it('reads blobs whole and by range, their ids as b3sum prints them', async () => {
    const { reader } = setup();
    for (const bytes of [FILES.lib['a-small'], FILES.lib['b-large'], FILES.lib['c-empty'], FILES.app.main]) {
      const id = b3sum(bytes);
      expect(await reader.blobs.stat(id)).toEqual({ size: bytes.length });
      expect((await collect(reader.blobs.read(id))).equals(bytes)).toBe(true);
    }
    const large = FILES.lib['b-large'];
    const slice = await collect(reader.blobs.read(b3sum(large), { offset: 1_000_003, length: 40_000 }));
    expect(slice.equals(large.subarray(1_000_003, 1_040_003))).toBe(true);
    expect(await collect(reader.blobs.read(b3sum(large), { offset: large.length, length: 0 }))).toHaveLength(0);
  });

  it('answers the outboard of a blob: 64 bytes per 16 KiB group after the first, none for one group', async () => {
    const { reader } = setup();
    const large = FILES.lib['b-large'];
    expect((await reader.blobs.readOutboard(b3sum(large))).length).toBe(64 * (Math.ceil(large.length / 16384) - 1));
    expect((await reader.blobs.readOutboard(b3sum(FILES.lib['a-small']))).length).toBe(0);
  });

  it('refuses unknown blobs and ranges outside a blob with typed errors, and names what it lacks', async () => {
    const { reader } = setup();
    const small = b3sum(FILES.lib['a-small']);
    expect(await reader.blobs.stat(UNKNOWN)).toBeUndefined();
    expect(await reader.blobs.missing([UNKNOWN, small, UNKNOWN])).toEqual([UNKNOWN, UNKNOWN]);
    await expect(collect(reader.blobs.read(UNKNOWN))).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
    await expect(reader.blobs.readOutboard(UNKNOWN)).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
    await expect(collect(reader.blobs.read(small, { offset: 299, length: 2 }))).rejects.toMatchObject({ code: 'BLAKE3_BAD_SIZE' });
  });

  it('reads directories as valid, canonical objects; unknown ones are undefined', async () => {
    const { reader, fixture } = setup();
    const root = fixture.lib.root;
    if (root.type !== 'directory') throw new Error('the fixture root is a directory');
    expect(await reader.directories.has(root.digest)).toBe(true);
    const entries = (await reader.directories.get(root.digest))!;
    expect(entries.map((entry: Entry) => entry.name)).toEqual(['a-small', 'b-large', 'c-empty']);
    expect(entries[1]).toMatchObject({ type: 'file', digest: b3sum(FILES.lib['b-large']), size: FILES.lib['b-large'].length });
    const encoded = (await reader.directories.getEncoded(root.digest))!;
    expect(digestFromBytes(referenceBlake3(encoded) as Uint8Array)).toBe(root.digest);
    expect(await reader.directories.has(UNKNOWN)).toBe(false);
    expect(await reader.directories.get(UNKNOWN)).toBeUndefined();
    expect(await reader.directories.getEncoded(UNKNOWN)).toBeUndefined();
  });

  it('reads store path records, by path and by hash part, and exports byte-identical NARs', async () => {
    const { reader, fixture } = setup();
    expect(await reader.pathInfo.get(APP)).toEqual(fixture.app);
    expect((await reader.pathInfo.get(APP))!.references).toEqual([LIB]);
    expect(await reader.pathInfo.getByHashPart('1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b')).toEqual(fixture.app);
    expect(await reader.pathInfo.getByHashPart('2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c')).toBeUndefined();
    expect(await reader.pathInfo.getByHashPart('not a hash part')).toBeUndefined();
    expect(await reader.pathInfo.get('/nix/store/3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d-none')).toBeUndefined();
    expect((await collect(exportNar(reader, fixture.lib.root))).equals(fixture.nars.lib)).toBe(true);
    expect((await collect(exportNar(reader, fixture.app.root))).equals(fixture.nars.app)).toBe(true);
  });
}

/** The whole suite, on a backend that holds objects. */
export function describeCastoreConformance(name: string, open: OpenBackend): void {
  describe(`castore services conformance: ${name}`, () => {
    let store: CastoreServices;
    let now = 0;
    const clock: Clock = () => now;
    let fixture: Fixture;

    beforeEach(async () => {
      now = 1_700_000_000_000;
      store = await open(clock);
      fixture = await writeFixture(store);
    });
    afterEach(() => store.close());

    describe('reads', () => readCases(() => ({ reader: store, fixture })));

    describe('reference-aware blobs', () => templateCases(() => store, () => void now++));

    it('shows nothing of an ingest before its commit, and nothing after an abort', async () => {
      const ingest = store.beginIngest();
      const small = await ingest.putBlobBytes(pseudoRandom(10, 5));
      const large = await ingest.putBlobBytes(pseudoRandom(2 * 1024 * 1024 + 1, 6));
      const directory = ingest.putDirectory([{ name: 'f', type: 'file', digest: small, size: 10, executable: false }]);
      expect(await store.blobs.missing([small, large])).toEqual([small, large]);
      expect(await store.directories.has(directory.digest)).toBe(false);
      ingest.abort();
      ingest.abort();
      expect(await store.blobs.missing([small, large])).toEqual([small, large]);
      expect(() => ingest.putDirectory([])).toThrow(expect.objectContaining({ code: 'INGEST_ABORTED' }));
      expect(() => ingest.commit()).toThrow(CastoreError);
    });

    it('publishes an ingest at commit: blobs, directories and store paths together', async () => {
      const bytes = pseudoRandom(5000, 8);
      const storePath = '/nix/store/4g4g4g4g4g4g4g4g4g4g4g4g4g4g4g4g-single';
      const info = await withIngest(store, async (ingest) => {
        const digest = await ingest.putBlobBytes(bytes, b3sum(bytes));
        const root = ingest.putDirectory([{ name: 'x', type: 'file', digest, size: bytes.length, executable: true }]);
        const record: StorePathInfo = { storePath: storePath as StorePathInfo['storePath'], narHash: fixture.lib.narHash, narSize: 1, references: [], signatures: [], root };
        ingest.registerStorePath(record);
        return record;
      });
      expect(await store.pathInfo.get(storePath)).toEqual(info);
      expect(await store.directories.get((info.root as { digest: Digest }).digest)).toEqual([{ name: 'x', type: 'file', digest: b3sum(bytes), size: 5000, executable: true }]);
      expect((await collect(store.blobs.read(b3sum(bytes)))).equals(bytes)).toBe(true);
    });

    it('refuses a blob that is not what was claimed, a directory that is not canonical, and an invalid store path record', async () => {
      const ingest = store.beginIngest();
      const bytes = pseudoRandom(2000, 9);
      await expect(ingest.putBlobBytes(bytes, UNKNOWN)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
      const short = ingest.blobWriter(bytes.length + 1, b3sum(bytes));
      short.write(bytes);
      expect(() => short.finish()).toThrow(expect.objectContaining({ code: 'BLOB_CORRUPT' }));
      const digest = b3sum(bytes);
      expect(() =>
        ingest.putDirectory([
          { name: 'a', type: 'file', digest, size: 1, executable: false },
          { name: 'a', type: 'symlink', target: 'b' },
        ]),
      ).toThrow(expect.objectContaining({ code: 'DIRECTORY_NOT_CANONICAL' }));
      expect(() => ingest.putDirectory([{ name: '..', type: 'file', digest, size: 1, executable: false }])).toThrow(CastoreError);
      expect(() => ingest.registerStorePath({ ...fixture.lib, storePath: '/nix/store/..' as StorePathInfo['storePath'] })).toThrow();
      ingest.commit();
      expect(await store.blobs.missing([digest])).toEqual([digest]);
    });

    it('lists what it holds, once each; the registry sorted', async () => {
      const blobs = await all(store.blobs.list());
      const ids = [...new Set([...Object.values(FILES.lib), ...Object.values(FILES.app)].map(b3sum))].sort();
      expect(blobs.map((blob) => blob.id).sort()).toEqual(ids);
      expect(blobs.every((blob) => blob.lastUsed === now)).toBe(true);
      expect((await all(store.directories.list())).map((directory) => directory.id).sort()).toEqual(
        [fixture.lib.root, fixture.app.root].map((root) => (root as { digest: Digest }).digest).sort(),
      );
      expect(await all(store.pathInfo.listPaths())).toEqual([LIB, APP]);
    });

    it('deletes only what was last used before the cutoff, and unregisters atomically', async () => {
      const id = b3sum(FILES.app.main);
      expect(await store.blobs.deleteUnused([id, UNKNOWN], now)).toEqual([]);
      now++;
      expect((await store.blobs.deleteUnused([id, UNKNOWN], now)).map((blob) => blob.id)).toEqual([id]);
      expect(await store.blobs.stat(id)).toBeUndefined();
      await store.pathInfo.unregister([APP, '/nix/store/5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f-none']);
      expect(await store.pathInfo.get(APP)).toBeUndefined();
      expect(await store.pathInfo.get(LIB)).toEqual(fixture.lib);
    });

    it('GC keeps the closure of what it is told to keep and sweeps the rest, once the clock has moved past it', async () => {
      expect(await collectGarbage(store, { keepStorePaths: [LIB] })).toMatchObject({ removedStorePaths: [APP], removedBlobs: 0 });
      now++;
      const report = await collectGarbage(store, { keepStorePaths: [LIB] });
      expect(report).toMatchObject({ removedStorePaths: [], removedBlobs: 1, removedBlobBytes: FILES.app.main.length, removedDirectories: 1 });
      expect(await store.blobs.stat(b3sum(FILES.app.main))).toBeUndefined();
      expect(await store.blobs.stat(b3sum(FILES.app.shared))).toEqual({ size: 300 }); // shared with lib
      expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
      await expect(collectGarbage(store, { keepStorePaths: [APP] })).rejects.toMatchObject({ code: 'STORE_PATH_NOT_FOUND' });
    });

    it('GC never sweeps what an open ingest deduplicated against', async () => {
      const ingest = store.beginIngest();
      const orphan = await withIngest(store, (other) => other.putBlobBytes(pseudoRandom(40_000, 14)));
      now++;
      expect(await ingest.putBlobBytes(pseudoRandom(40_000, 14))).toBe(orphan);
      await collectGarbage(store, { keepStorePaths: [] });
      ingest.commit();
      expect(await store.blobs.stat(orphan)).toEqual({ size: 40_000 });
    });

    it('fsck finds nothing wrong in what the backend wrote, and counts it', async () => {
      const report = await fsck(store, { checkNars: true });
      expect(report).toMatchObject({ blobs: 4, directories: 2, storePaths: 2, problems: [] }) // a-small and shared are one blob;
    });
  });
}

/** The read cases, on a read-only backend in front of a writable one. */
export function describeReaderConformance(name: string, open: () => Promise<ReaderBackend>): void {
  describe(`castore reader conformance: ${name}`, () => {
    let backend: ReaderBackend;
    let fixture: Fixture;

    beforeEach(async () => {
      backend = await open();
      fixture = await writeFixture(backend.source);
      await backend.publish?.([LIB, APP]);
    });
    afterEach(() => backend.close());

    readCases(() => ({ reader: backend.reader, fixture }));
  });
}
