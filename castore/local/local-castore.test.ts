import Database from 'better-sqlite3';
import { hash as referenceBlake3 } from 'blake3';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeNar } from '../../nix/index.js';
import { collect, narOf, pseudoRandom } from '../services/conformance.case.js';
import { ingestVersion, version } from '../services/template-conformance.case.js';
import { CastoreError } from '../errors.js';
import { exportNar } from '../nar-export.js';
import { ingestStorePath } from '../ingest-store-path.js';
import { digestFromBytes, type Digest, type Node } from '../node.js';
import { collectGarbage } from '../gc.js';
import { fsck } from '../fsck.js';
import { blobDataPath } from './blob-files.js';
import { openCastoreDatabase } from './database.js';
import { listIngests, registerIngest } from './ingest-registry.js';
import type { LocalContext } from './local-context.js';
import { LocalCastore } from './local-castore.js';
import { PACK_MAX, PackReader } from './pack-files.js';
import { HashPartSet } from '../references/index.js';
import { OutboardBuilder } from '../blake3/index.js';

let dir: string;
let store: LocalCastore;
/** The store's clock: GC keeps what was used at or after its cutoff, so a test steps it instead of sleeping. */
let now: number;
const clock = () => now;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-castore-'));
  now = 1_700_000_000_000;
  store = LocalCastore.open(dir, { clock });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The ingest registry of `dir`, as another process (or a crashed one) sees it. */
function registryOf(dataDir: string): LocalContext & { close(): void } {
  const db = openCastoreDatabase(dataDir);
  const packs = new PackReader(dataDir);
  return { dataDir, db, packs, clock, close: () => (packs.close(), db.close()) };
}

async function* chunked(bytes: Uint8Array, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

describe('castore blob store', () => {
  it('stores small blobs in pack files and large ones as files, ids as b3sum', async () => {
    const small = pseudoRandom(100, 1);
    const large = pseudoRandom(PACK_MAX * 5 + 123, 2);
    const smallId = await store.putBlob(small);
    const largeId = await store.putBlob(large);
    expect(smallId).toBe(digestFromBytes(referenceBlake3(small) as Uint8Array));
    expect(largeId).toBe(digestFromBytes(referenceBlake3(large) as Uint8Array));
    expect(store.statBlob(smallId)).toEqual({ size: 100, packed: true });
    expect(store.statBlob(largeId)).toEqual({ size: large.length, packed: false });
    expect(existsSync(blobDataPath(dir, largeId))).toBe(true);
    expect(Buffer.from(await store.readBlobBytes(largeId)).equals(large)).toBe(true);
    expect(store.readOutboard(largeId).length).toBe(64 * (Math.ceil(large.length / 16384) - 1));
    expect(store.readOutboard(smallId).length).toBe(0);
  });

  it('serves byte ranges', async () => {
    const large = pseudoRandom(100_000, 3);
    const id = await store.putBlob(large);
    const range = await collect(store.readBlob(id, { offset: 12_345, length: 40_000 }));
    expect(range.equals(large.subarray(12_345, 52_345))).toBe(true);
    await expect(collect(store.readBlob(id, { offset: 99_999, length: 2 }))).rejects.toMatchObject({ code: 'BLAKE3_BAD_SIZE' });
    await expect(collect(store.readBlob('0'.repeat(64) as never))).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
  });

  it('is safe with concurrent writers of the same blob', async () => {
    const large = pseudoRandom(PACK_MAX * 3, 4);
    const other = LocalCastore.open(dir);
    try {
      const ids = await Promise.all([store.putBlob(large), other.putBlob(large), store.putBlob(large)]);
      expect(new Set(ids).size).toBe(1);
      expect(Buffer.from(await other.readBlobBytes(ids[0]!)).equals(large)).toBe(true);
    } finally {
      other.close();
    }
    expect(existsSync(path.join(dir, 'tmp')) ? readdirSync(path.join(dir, 'tmp')) : []).toEqual([]);
  });

  it('a session shows nothing until commit, and nothing after abort', async () => {
    const session = store.beginIngest();
    const small = await session.putBlobBytes(pseudoRandom(10, 5));
    const large = await session.putBlobBytes(pseudoRandom(PACK_MAX + 1, 6));
    const dirNode = session.putDirectory([{ name: 'f', type: 'file', digest: small, size: 10, executable: false }]);
    expect(store.hasBlob(small)).toBe(false);
    expect(store.hasBlob(large)).toBe(false);
    expect(store.hasDirectory(dirNode.digest)).toBe(false);
    session.abort();
    expect(store.hasBlob(small)).toBe(false);
    expect(store.hasBlob(large)).toBe(false);
    expect(readdirSync(path.join(dir, 'tmp'))).toEqual([]);
    expect(existsSync(path.join(dir, 'packs')) ? readdirSync(path.join(dir, 'packs')) : []).toEqual([]);
  });
});

describe('NAR <-> castore', () => {
  const files = {
    'a-small': pseudoRandom(300, 7),
    'b-large': pseudoRandom(200_000, 8),
    'c-empty': new Uint8Array(0),
    'd-dup': pseudoRandom(300, 7),
  };

  it('ingests and exports byte-identically', async () => {
    const nar = await collect(encodeNar(narOf(files)));
    const info = await ingestStorePath(store, chunked(nar, 1000), { storePath: '/nix/store/00000000000000000000000000000000-x', references: [] });
    expect(info.narSize).toBe(nar.length);
    const exported = await collect(exportNar(store, info.root));
    expect(exported.equals(nar)).toBe(true);
    // dedup: a-small and d-dup share one blob
    expect(store.stats().blobs).toBe(3);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
  });

  // Found by this session's stream tests: an ingest whose only packed blob was the empty one had
  // an empty pack, which was discarded with the rows of the blobs in it.
  it('keeps the empty blob of a store path whose other files are all large (a pack of no bytes)', async () => {
    const only = { 'big': pseudoRandom(PACK_MAX + 1000, 9), 'empty': new Uint8Array(0) };
    const nar = await collect(encodeNar(narOf(only)));
    const info = await ingestStorePath(store, chunked(nar), { storePath: '/nix/store/00000000000000000000000000000000-y', references: [] });
    const empty = digestFromBytes(referenceBlake3(new Uint8Array(0)));
    expect(store.hasBlob(empty)).toBe(true);
    expect([...store.readBlobBatch([empty]).bytes].reduce((n, b) => n + b.length, 0)).toBe(0);
    expect((await collect(exportNar(store, info.root))).equals(nar)).toBe(true);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
  });

  it('an ingest aborted mid-stream leaves no visible blob or directory', async () => {
    const nar = await collect(encodeNar(narOf(files)));
    async function* dies(): AsyncGenerator<Uint8Array> {
      yield nar.subarray(0, nar.length - 500);
      throw new Error('connection lost');
    }
    await expect(
      ingestStorePath(store, dies(), { storePath: '/nix/store/00000000000000000000000000000000-x', references: [] }),
    ).rejects.toThrow('connection lost');
    expect(store.stats()).toMatchObject({ blobs: 0, packFiles: 0, directories: 0, storePaths: 0, openIngests: 0 });
    expect(existsSync(path.join(dir, 'tmp')) ? readdirSync(path.join(dir, 'tmp')) : []).toEqual([]);
    expect(existsSync(path.join(dir, 'packs')) ? readdirSync(path.join(dir, 'packs')) : []).toEqual([]);
  });

  it('refuses a NAR that does not hash as claimed, leaving nothing', async () => {
    const nar = await collect(encodeNar(narOf(files)));
    await expect(
      ingestStorePath(store, chunked(nar), {
        storePath: '/nix/store/00000000000000000000000000000000-x',
        references: [],
        narHash: 'sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73',
      }),
    ).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(store.stats().blobs).toBe(0);
  });
});

describe('fsck and GC', () => {
  it('fsck names a corrupted blob file', async () => {
    const large = pseudoRandom(PACK_MAX * 2 + 5, 9);
    const id = await store.putBlob(large);
    const corrupt = Buffer.from(large);
    corrupt[20_000] = corrupt[20_000]! ^ 0x10;
    rmSync(blobDataPath(dir, id));
    writeFileSync(blobDataPath(dir, id), corrupt);
    const report = await fsck(store);
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatchObject({ kind: 'blob', id });
    expect(report.problems[0]!.problem).toMatch(/from byte offset 16384 \(16 KiB group 1\)/);
  });

  it('keeps everything reachable from roots and frees the rest', async () => {
    const keepFiles = { keep: pseudoRandom(50_000, 10), shared: pseudoRandom(100, 11) };
    const dropFiles = { drop: pseudoRandom(60_000, 12), shared: pseudoRandom(100, 11) };
    const keepPath = '/nix/store/11111111111111111111111111111111-keep';
    const dropPath = '/nix/store/22222222222222222222222222222222-drop';
    const kept = await ingestStorePath(store, encodeNar(narOf(keepFiles)), { storePath: keepPath, references: [] });
    await ingestStorePath(store, encodeNar(narOf(dropFiles)), { storePath: dropPath, references: [] });
    const orphan = await store.putBlob(pseudoRandom(70_000, 13));
    // Objects used at or after GC's cutoff are never swept: while the clock stands still, nothing goes.
    expect((await collectGarbage(store, { keepStorePaths: [keepPath], dryRun: true })).removedBlobs).toBe(0);
    now++;

    const dry = await collectGarbage(store, { keepStorePaths: [keepPath], dryRun: true });
    expect(dry.removedBlobs).toBe(2); // drop + orphan; shared stays
    expect(store.hasBlob(orphan)).toBe(true);

    const report = await collectGarbage(store, { keepStorePaths: [keepPath] });
    expect(report.removedStorePaths).toEqual([dropPath]);
    expect(report.removedBlobs).toBe(2);
    expect(store.hasBlob(orphan)).toBe(false);
    expect(existsSync(blobDataPath(dir, orphan))).toBe(false);
    expect(store.getStorePath(dropPath)).toBeUndefined();
    const exported = await collect(exportNar(store, kept.root as Node));
    expect(exported.equals(await collect(encodeNar(narOf(keepFiles))))).toBe(true);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
  });

  it('never sweeps what an ingest still running may reference', async () => {
    const session = store.beginIngest();
    const existing = await store.putBlob(pseudoRandom(40_000, 14)); // unreachable, but...
    now++; // without the running ingest, GC's cutoff would be past it
    const again = await session.putBlobBytes(pseudoRandom(40_000, 14)); // ...deduplicated by a running ingest
    expect(again).toBe(existing);
    await collectGarbage(store);
    session.putDirectory([{ name: 'x', type: 'file', digest: again, size: 40_000, executable: false }]);
    session.commit();
    expect(store.hasBlob(existing)).toBe(true);
  });

  it('collects the pack file of a killed ingest', async () => {
    const registry = registryOf(dir);
    registerIngest(registry, 'dead', { pid: 2 ** 22 + 7 }); // a process that is gone
    registry.close();
    mkdirSync(path.join(dir, 'packs'), { recursive: true });
    writeFileSync(path.join(dir, 'packs', 'dead.pack'), Buffer.alloc(100, 1));
    const report = await collectGarbage(store);
    expect(report.staleIngestsCleaned).toBe(1);
    expect(existsSync(path.join(dir, 'packs', 'dead.pack'))).toBe(false);
  });

  it('defect 8: opening a castore removes what dead ingests left, and spares every live ingest', async () => {
    // A live session (this process, another LocalCastore object) with a large blob staged in tmp/ and small ones in its pack.
    const live = store.beginIngest();
    const large = await live.putBlobBytes(pseudoRandom(PACK_MAX + 10, 21));
    const packed: Digest[] = [];
    for (let index = 0; index < 600; index++) packed.push(await live.putBlobBytes(pseudoRandom(100, 1000 + index)));
    // A dead one of another process, and one with this process's pid that is none of its sessions
    // (a process restarted under the pid of one that crashed: pid 1 in a container).
    const registry = registryOf(dir);
    registerIngest(registry, '0123456789abcdef', { pid: 2 ** 22 + 7 });
    registerIngest(registry, 'fedcba9876543210', { pid: process.pid });
    mkdirSync(path.join(dir, 'packs'), { recursive: true });
    for (const id of ['0123456789abcdef', 'fedcba9876543210']) {
      writeFileSync(path.join(dir, 'tmp', `${id}-0`), Buffer.alloc(1000, 1));
      writeFileSync(path.join(dir, 'packs', `${id}.pack`), Buffer.alloc(100, 1));
    }
    // A temp file no ingest row owns at all, and a pack without a row (e.g. a crashed GC compaction).
    writeFileSync(path.join(dir, 'tmp', 'aaaaaaaaaaaaaaaa-3'), Buffer.alloc(10, 1));
    writeFileSync(path.join(dir, 'packs', 'orphan.pack'), Buffer.alloc(10, 1));

    const dry = await collectGarbage(store, { dryRun: true });
    expect(dry).toMatchObject({ staleIngestsCleaned: 2, staleTempFiles: 3, stalePackFiles: 3, staleFileBytes: 2 * 1100 + 20 });
    const reopened = LocalCastore.open(dir);
    reopened.close();
    // Opening took the dead ingests' files, their rows and the ownerless temp file; the ownerless pack is GC's.
    expect(readdirSync(path.join(dir, 'tmp'))).toEqual([`${live.id}-0`]);
    expect(readdirSync(path.join(dir, 'packs')).sort()).toEqual([`${live.id}.pack`, 'orphan.pack']);
    expect(listIngests(registry)).toEqual([live.id]);
    registry.close();
    expect(await collectGarbage(store)).toMatchObject({ staleIngestsCleaned: 0, staleTempFiles: 0, stalePackFiles: 1 });
    // The live ingest commits as if nothing happened.
    live.commit();
    expect(Buffer.from(await store.readBlobBytes(large)).equals(pseudoRandom(PACK_MAX + 10, 21))).toBe(true);
    expect(Buffer.from(await store.readBlobBytes(packed[599]!)).equals(pseudoRandom(100, 1599))).toBe(true);
    expect(readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  it('deletes packs nothing lives in and rewrites sparse ones, keeping every live blob readable', async () => {
    const files = Array.from({ length: 10 }, (_, index) => pseudoRandom(20_000 + index, 100 + index));
    const session = store.beginIngest();
    const ids = await Promise.all(files.map((bytes) => session.putBlobBytes(bytes)));
    // Only three of the ten blobs are reachable (from a root directory): the pack is 70% garbage.
    const root = session.putDirectory(ids.slice(0, 3).map((digest, index) => ({ name: `f${index}`, type: 'file' as const, digest, size: files[index]!.length, executable: false })));
    session.commit();
    const packsBefore = readdirSync(path.join(dir, 'packs'));
    expect(packsBefore).toEqual([`${session.id}.pack`]);
    now++; // GC spares what was used at its cutoff
    const report = await collectGarbage(store, { keepStorePaths: [], extraRoots: [root] });
    expect(report).toMatchObject({ removedBlobs: 7, compactedPacks: 1 });
    expect(readdirSync(path.join(dir, 'packs'))).toHaveLength(1);
    expect(existsSync(path.join(dir, 'packs', packsBefore[0]!))).toBe(false);
    for (const [index, id] of ids.slice(0, 3).entries()) expect(Buffer.from(await store.readBlobBytes(id)).equals(files[index]!)).toBe(true);
    for (const id of ids.slice(3)) expect(store.hasBlob(id)).toBe(false);
    expect((await fsck(store)).problems).toEqual([]);
  });

  it('refuses unknown objects with typed errors', () => {
    expect(() => store.readDirectory('1'.repeat(64) as never)).toThrow(CastoreError);
    expect(() => store.closure(['/nix/store/33333333333333333333333333333333-none'])).toThrow(/not registered/);
  });
});

describe('batch reads', () => {
  it('reads blobs in the order asked, adjacent packed ones together, and names what it refuses', async () => {
    const small = Array.from({ length: 300 }, (_, i) => pseudoRandom(1 + ((i * 977) % 20_000), i + 1));
    const large = pseudoRandom(PACK_MAX + 1, 999);
    const session = store.beginIngest();
    const ids = small.map((bytes) => {
      const writer = session.blobWriter(bytes.length);
      writer.write(bytes);
      return writer.finish();
    });
    const largeWriter = session.blobWriter(large.length);
    largeWriter.write(large);
    const largeId = largeWriter.finish();
    session.commit();

    // Out of pack order, with a repeat: runs break where blobs are not adjacent.
    // A blob in a file of its own in the middle.
    const order = [...ids.slice(150), largeId, ...ids.slice(0, 150), ids[7]!];
    const bytesOf = (id: string) => (id === largeId ? large : small[ids.indexOf(id as (typeof ids)[number])]!);
    const { sizes, bytes } = store.readBlobBatch(order);
    expect(sizes).toEqual(order.map((id) => bytesOf(id).length));
    const all = Buffer.concat([...bytes]);
    expect(all.equals(Buffer.concat(order.map(bytesOf)))).toBe(true);

    const unknown = digestFromBytes(new Uint8Array(32));
    expect(() => store.readBlobBatch([ids[0]!, unknown])).toThrow(expect.objectContaining({ code: 'BLOB_NOT_FOUND', objectId: unknown }));
    expect(store.statBlob(largeId)?.packed).toBe(false);
    expect(() => store.readBlobBatch(ids, 1000)).toThrow(expect.objectContaining({ code: 'BATCH_TOO_LARGE' }));

    expect(store.missingBlobs([unknown, ids[3]!, largeId, unknown])).toEqual([unknown, unknown]);
  });

  it('keeps a verified outboard instead of hashing a large blob again, and refuses a wrong length', async () => {
    const bytes = pseudoRandom(3 * PACK_MAX + 5, 42);
    const reference = store.beginIngest();
    const writer = reference.blobWriter(bytes.length);
    writer.write(bytes);
    const id = writer.finish();
    reference.commit();
    const outboard = store.readOutboard(id);

    const other = LocalCastore.open(path.join(dir, 'other'));
    try {
      const session = other.beginIngest();
      const verified = session.blobWriter(bytes.length, id, outboard);
      verified.write(bytes.subarray(0, 1000));
      verified.write(bytes.subarray(1000));
      expect(verified.finish()).toBe(id);
      const short = session.blobWriter(bytes.length, id, outboard);
      short.write(bytes.subarray(1));
      expect(() => short.finish()).toThrow(CastoreError);
      session.commit();
      expect(Buffer.from(other.readOutboard(id)).equals(Buffer.from(outboard))).toBe(true);
      expect((await collect(other.readBlob(id))).equals(Buffer.from(bytes))).toBe(true);
      expect((await fsck(other)).problems).toEqual([]);
    } finally {
      other.close();
    }
  });
});

describe('adopted store files', () => {
  // What an agent does once it has materialized a store path: the castore drops its own copy
  // and reads the bytes from the (read-only) store files from then on.
  const files = {
    'a-small': pseudoRandom(300, 21),
    'b-packed': pseudoRandom(200_000, 22),
    'c-own-file': pseudoRandom(PACK_MAX + 300_000, 23),
    'd-empty': new Uint8Array(0),
  };
  const storePath = '/nix/store/11111111111111111111111111111111-adopted';

  async function ingestAndMaterialize(): Promise<{ nar: Buffer; root: Node; materialized: string; adoptions: { id: Digest; size: number; file: string }[] }> {
    const nar = await collect(encodeNar(narOf(files)));
    const info = await ingestStorePath(store, chunked(nar), { storePath, references: [] });
    const materialized = path.join(dir, 'materialized');
    mkdirSync(materialized);
    const adoptions = Object.entries(files).map(([name, bytes]) => {
      writeFileSync(path.join(materialized, name), bytes);
      return { id: digestFromBytes(referenceBlake3(bytes) as Uint8Array), size: bytes.length, file: path.join(materialized, name) };
    });
    return { nar, root: info.root, materialized, adoptions };
  }

  it('drops its own copy (packs, blob files) and still exports the same NAR, verified by fsck', async () => {
    const { nar, root, adoptions } = await ingestAndMaterialize();
    const bigId = adoptions[2]!.id;
    expect(existsSync(blobDataPath(dir, bigId))).toBe(true);
    expect(readdirSync(path.join(dir, 'packs')).length).toBeGreaterThan(0);

    const report = store.adoptStoreFiles(adoptions);
    expect(report).toEqual({ adopted: 4, releasedBytes: Object.values(files).reduce((sum, bytes) => sum + bytes.length, 0) });
    expect(existsSync(blobDataPath(dir, bigId))).toBe(false);
    expect(readdirSync(path.join(dir, 'packs'))).toEqual([]);
    expect((await collect(exportNar(store, root))).equals(nar)).toBe(true);
    expect(Buffer.from(store.readBlobBatch([adoptions[1]!.id, adoptions[0]!.id]).bytes[Symbol.iterator]().next().value!).equals(Buffer.from(files['b-packed']))).toBe(true);
    expect(store.readOutboard(adoptions[1]!.id).length).toBeGreaterThan(0);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
    for (const adoption of adoptions) expect(store.verifiedStoreFile(adoption.id)).toBe(adoption.file);
    // Again: nothing changes place.
    expect(store.adoptStoreFiles(adoptions)).toEqual({ adopted: 0, releasedBytes: 0 });
  });

  it('forgets a blob whose store file changed or went away, so it is fetched again, and fsck names it', async () => {
    const { adoptions, materialized } = await ingestAndMaterialize();
    store.adoptStoreFiles(adoptions);
    const [small, packed, big] = adoptions as [(typeof adoptions)[0], (typeof adoptions)[0], (typeof adoptions)[0]];
    writeFileSync(small.file, Buffer.from(pseudoRandom(300, 99)));
    rmSync(packed.file);
    expect((await fsck(store)).problems.map((problem) => problem.problem)).toEqual([
      expect.stringMatching(new RegExp(`^its store file .*(${path.basename(small.file)} does not hash|${path.basename(packed.file)} is missing)`)),
      expect.stringMatching(new RegExp(`^its store file .*(${path.basename(small.file)} does not hash|${path.basename(packed.file)} is missing)`)),
    ]);
    expect(() => [...store.readBlobBatch([small.id]).bytes]).toThrow(expect.objectContaining({ code: 'BLOB_CORRUPT' }));
    expect(() => [...store.readBlobBatch([packed.id]).bytes]).toThrow(expect.objectContaining({ code: 'BLOB_NOT_FOUND' }));
    expect(store.missingBlobs([small.id, packed.id, big.id])).toEqual([small.id, packed.id]);
    // A large one, streamed: verified at its end.
    const bigBytes = Buffer.from(files['c-own-file']);
    bigBytes[bigBytes.length - 1]! ^= 1;
    writeFileSync(big.file, bigBytes);
    await expect(store.readBlobBytes(big.id)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(store.hasBlob(big.id)).toBe(false);
    // A link source is checked first: changed, it is forgotten instead of linked.
    const empty = adoptions[3]!;
    expect(store.verifiedStoreFile(empty.id)).toBe(empty.file);
    writeFileSync(empty.file, 'no longer empty');
    expect(store.verifiedStoreFile(empty.id)).toBeUndefined();
    expect(store.hasBlob(empty.id)).toBe(false);
    expect(readdirSync(materialized).sort()).toEqual(['a-small', 'c-own-file', 'd-empty']); // forgetting deletes nothing (the test removed b-packed)
  });

  it('GC drops the rows of adopted blobs nothing keeps and never touches their store files', async () => {
    const { adoptions } = await ingestAndMaterialize();
    store.adoptStoreFiles(adoptions);
    now++; // GC spares what was used at its cutoff
    expect(await collectGarbage(store, { keepStorePaths: [] })).toMatchObject({ removedStorePaths: [storePath], removedBlobs: 4 });
    for (const adoption of adoptions) expect(existsSync(adoption.file)).toBe(true);
  });

  it('opens a format-2 castore by adding the column, its blobs still where they were', async () => {
    const { nar, root } = await ingestAndMaterialize();
    store.close();
    // What a Ferry of format 2 left: the file as it wrote it.
    const file = path.join(dir, 'castore.db');
    const old = new Database(file);
    old.exec('DROP INDEX blobs_by_template; ALTER TABLE blobs DROP COLUMN template_record; ALTER TABLE blobs DROP COLUMN template; ALTER TABLE blobs DROP COLUMN store_file');
    old.pragma('user_version = 2');
    old.close();
    store = LocalCastore.open(dir);
    const reopened = new Database(file, { readonly: true });
    expect(reopened.pragma('user_version', { simple: true })).toBe(4); // through format 3
    reopened.close();
    expect((await collect(exportNar(store, root))).equals(nar)).toBe(true);
  });
});

describe('reference-aware blobs on disk', () => {
  const outboardOf = (bytes: Uint8Array): Uint8Array => {
    const builder = new OutboardBuilder();
    builder.update(bytes);
    return builder.finish().outboard;
  };
  const b3sum = (bytes: Uint8Array): Digest => digestFromBytes(referenceBlake3(bytes) as Uint8Array);
  const rowOf = (id: Digest) => {
    const db = new Database(path.join(dir, 'castore.db'), { readonly: true });
    try {
      return db.prepare('SELECT size, pack, store_file AS storeFile, template, length(template_record) AS recordBytes FROM blobs WHERE id = ?').get(id) as
        | { size: number; pack: string | null; storeFile: string | null; template: string | null; recordBytes: number | null }
        | undefined;
    } finally {
      db.close();
    }
  };

  it('stores template rows without bytes, serves them through batch reads, never as a file to link, and counts them', async () => {
    const v = version(1);
    await ingestVersion(store, v);
    const app = v.appFiles.app!;
    const run = v.appFiles.run!;
    const row = rowOf(b3sum(app))!;
    expect(row).toMatchObject({ size: app.length, pack: null, storeFile: null });
    expect(row.template).toMatch(/^[0-9a-f]{64}$/);
    expect(row.recordBytes).toBeLessThan(200);
    expect(existsSync(blobDataPath(dir, b3sum(app)))).toBe(false);
    expect(existsSync(blobDataPath(dir, row.template as Digest))).toBe(true);
    expect(store.ownBlobFile(b3sum(app))).toBeUndefined();
    const ids = [b3sum(run), b3sum(v.libFiles.plain!), b3sum(app), b3sum(v.libFiles['libfoo.so']!)];
    const batch = store.readBlobBatch(ids);
    expect(batch.sizes).toEqual([run.length, 5_000, app.length, 200_000]);
    expect(Buffer.concat([...batch.bytes]).equals(Buffer.concat([run, v.libFiles.plain!, app, v.libFiles['libfoo.so']!]))).toBe(true);
    const stats = store.stats();
    expect(stats.templatedBlobs).toBe(3);
    expect(stats.templatedBlobBytes).toBe(app.length + run.length + 200_000);
    // The 2 MiB app's stored bytes are its normalized blob's, once: a rebuild adds only records.
    const before = store.stats().blobBytes;
    await ingestVersion(store, version(2));
    expect(store.stats().blobBytes - before).toBeLessThan(1_000);
    expect(store.stats().templatedBlobs).toBe(6);
  });

  it('fsck reports a damaged normalized blob, and every template over it, at the bad group', async () => {
    await ingestVersion(store, version(1));
    await ingestVersion(store, version(2));
    const app1 = b3sum(version(1).appFiles.app!);
    const app2 = b3sum(version(2).appFiles.app!);
    const normalized = rowOf(app1)!.template as Digest;
    expect(rowOf(app2)!.template).toBe(normalized);
    const bytes = Buffer.from(await store.readBlobBytes(normalized));
    bytes[20_000] = bytes[20_000]! ^ 0x10;
    rmSync(blobDataPath(dir, normalized));
    writeFileSync(blobDataPath(dir, normalized), bytes);
    const problems = (await fsck(store)).problems.filter((problem) => problem.kind === 'blob');
    expect(problems.map((problem) => problem.id).sort()).toEqual([normalized, app1, app2].sort());
    for (const problem of problems) expect(problem.problem).toMatch(/from byte offset 16384 \(16 KiB group 1\)/);
    expect(problems.find((problem) => problem.id === app1)!.problem).toContain(`restored from ${normalized}`);
  });

  it('a plain copy of a blob supersedes its template row, and an adopted template keeps its template, its normalized blob derived from the file', async () => {
    const v = version(1);
    await ingestVersion(store, v);
    const run = v.appFiles.run!;
    const id = b3sum(run);
    expect(rowOf(id)!.template).not.toBeNull();
    // Its normalized blob gone by hand: the template no longer counts as present, and a plain copy replaces it.
    const db = new Database(path.join(dir, 'castore.db'));
    db.prepare('DELETE FROM blobs WHERE id = ?').run(rowOf(id)!.template);
    db.close();
    expect(store.missingBlobs([id])).toEqual([id]);
    await expect(store.readBlobBytes(id)).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
    expect(await store.putBlob(run)).toBe(id);
    expect(rowOf(id)).toMatchObject({ template: null, recordBytes: null });
    expect(Buffer.from(await store.readBlobBytes(id)).equals(run)).toBe(true);
    // Adoption of a template: read from the store file from then on, still a template over its normalized blob,
    // whose own copy is dropped: it is derived from the file (the placeholder at the template's sites).
    const app = v.appFiles.app!;
    const file = path.join(dir, 'adopted-app');
    writeFileSync(file, app);
    const normalized = rowOf(b3sum(app))!.template as Digest;
    const normalizedBytes = Buffer.from(await store.readBlobBytes(normalized));
    store.adoptStoreFiles([{ id: b3sum(app), size: app.length, file }]);
    expect(rowOf(b3sum(app))).toMatchObject({ storeFile: file, template: normalized });
    expect(rowOf(normalized)).toBeUndefined();
    expect(Buffer.from(await store.readBlobBytes(b3sum(app))).equals(app)).toBe(true);
    expect(store.missingBlobs([normalized])).toEqual([]);
    expect(Buffer.from(await store.readBlobBytes(normalized)).equals(normalizedBytes)).toBe(true);
    expect(Buffer.from(store.readBlobRangeSync(normalized, 7, 1000)).equals(normalizedBytes.subarray(7, 1007))).toBe(true);
    // The file changed behind the castore's back: it is forgotten, and so is what was derived from it.
    writeFileSync(file, Buffer.concat([app.subarray(0, app.length - 1), Buffer.from([app[app.length - 1]! ^ 1])]));
    await expect(store.readBlobBytes(normalized)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(store.missingBlobs([normalized, b3sum(app)])).toEqual([normalized, b3sum(app)]);
  });

  it('records a template claimed for a file it adopts only if the file, normalized at its sites, is that normalized blob', async () => {
    // The claim comes from a source (the coordinator's blobs.templates); here, a castore that ingested the same version.
    const source = LocalCastore.open(path.join(dir, 'source'));
    const v = version(4);
    await ingestVersion(source, v);
    const run = v.appFiles.run!;
    const claim = source.templateOf(b3sum(run))!;
    source.close();
    expect(claim).toBeDefined();
    const honest = path.join(dir, 'run-honest');
    writeFileSync(honest, run);
    const lied = Buffer.from(run);
    lied[lied.length - 2] = lied[lied.length - 2]! ^ 1;
    const liedFile = path.join(dir, 'run-lied');
    writeFileSync(liedFile, lied);
    const templates = new Map([
      [b3sum(run), claim],
      // The same sites and hash parts claimed over a normalized blob the file does not normalize to.
      [b3sum(lied), claim],
    ]);
    store.adoptStoreFiles(
      [
        { id: b3sum(run), size: run.length, file: honest },
        { id: b3sum(lied), size: lied.length, file: liedFile },
      ],
      { recordMissing: true, templates },
    );
    expect(rowOf(b3sum(run))).toMatchObject({ storeFile: honest, template: claim.normalized });
    expect(rowOf(b3sum(lied))).toMatchObject({ storeFile: liedFile, template: null });
    // The honest one's normalized blob is derived from its file.
    expect(store.missingBlobs([claim.normalized])).toEqual([]);
  });

  it('restores a template over a normalized blob derived from an adopted file with one hash of each byte, and refuses when the file changed anywhere', async () => {
    const v1 = version(1);
    const v2 = version(2);
    await ingestVersion(store, v1);
    const app1 = v1.appFiles.app!;
    const app2 = v2.appFiles.app!;
    const file = path.join(dir, 'adopted-app');
    writeFileSync(file, app1);
    store.adoptStoreFiles([{ id: b3sum(app1), size: app1.length, file }]);
    // The rebuilt app's claim, as a coordinator would answer it: over the same normalized blob, derived here from the file.
    const source = LocalCastore.open(path.join(dir, 'source'));
    await ingestVersion(source, v2);
    const claim = source.templateOf(b3sum(app2))!;
    source.close();
    expect(rowOf(claim.normalized)).toBeUndefined();
    const restore = async (id: Digest, record = claim.record): Promise<Buffer> => {
      const session = store.beginIngest();
      const chunks: Uint8Array[] = [];
      try {
        await session.putTemplate(id, app2.length, claim.normalized, record, (chunk) => chunks.push(chunk));
        session.commit();
      } catch (error) {
        session.abort();
        throw error;
      }
      return Buffer.concat(chunks);
    };
    // A claim for other bytes (the id of a file one byte off) is refused, and nothing is staged.
    const off = Buffer.from(app2);
    off[1_000_000] = off[1_000_000]! ^ 1;
    await expect(restore(b3sum(off))).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(store.missingBlobs([b3sum(off)])).toEqual([b3sum(off)]);
    // A record whose sites are not where the placeholders are: refused.
    const wrongSites = Buffer.from(claim.record);
    wrongSites[wrongSites.length - 1] = wrongSites[wrongSites.length - 1]! ^ 1;
    await expect(restore(b3sum(app2), wrongSites)).rejects.toMatchObject({ code: expect.stringMatching(/BLOB_CORRUPT|REFERENCES_INVALID/) });
    // The honest claim: the real bytes, kept as a template over the derived blob, with the outboard of its bytes.
    expect((await restore(b3sum(app2))).equals(app2)).toBe(true);
    expect(rowOf(b3sum(app2))).toMatchObject({ template: claim.normalized, storeFile: null });
    expect(Buffer.from(store.readOutboard(b3sum(app2))).equals(Buffer.from(outboardOf(app2)))).toBe(true);
    expect((await fsck(store)).problems).toEqual([]);
    // The adopted file changed behind the castore's back in a 16 KiB group no site touches (its chaining value,
    // from the stored outboard, would still match): the restore is refused and the file forgotten.
    const v3 = version(3);
    const source3 = LocalCastore.open(path.join(dir, 'source3'));
    await ingestVersion(source3, v3);
    const claim3 = source3.templateOf(b3sum(v3.appFiles.app!))!;
    source3.close();
    const changed = Buffer.from(app1);
    changed[1_000_000] = changed[1_000_000]! ^ 1;
    writeFileSync(file, changed);
    const session = store.beginIngest();
    await expect(session.putTemplate(b3sum(v3.appFiles.app!), app2.length, claim3.normalized, claim3.record)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    session.abort();
    expect(store.missingBlobs([b3sum(app1)])).toEqual([b3sum(app1)]);
  });

  it('checks a claimed template of a large file it kept whole (an agent fetched it as is) in pieces, sites across their edges', async () => {
    const hashParts = new HashPartSet(['0123456789abcdfghijklmnpqrsvwxyz', 'zyxwvsrqpnmlkjihgfdcba9876543210']);
    // 9 MiB: read in 4 MiB pieces, with sites inside a piece, across the first edge and right after the second.
    const big = Buffer.from(pseudoRandom(9 * 1024 * 1024, 31));
    for (const [offset, part] of [[1000, 0], [4 * 1024 * 1024 - 10, 1], [8 * 1024 * 1024 + 3, 0]] as const) big.write(hashParts.hashParts[part]!, offset, 'latin1');
    const source = LocalCastore.open(path.join(dir, 'source'));
    const session = source.beginIngest();
    const writer = session.templateWriter(big.length, hashParts);
    writer.write(big);
    const id = writer.finish();
    session.commit();
    const claim = source.templateOf(id)!;
    const normalizedBytes = Buffer.from(await source.readBlobBytes(claim.normalized));
    source.close();
    expect(id).toBe(b3sum(big));
    // Kept whole here, as an agent's fetch keeps a large file, then adopted with the source's claim.
    expect(await store.putBlob(big)).toBe(id);
    const file = path.join(dir, 'big');
    writeFileSync(file, big);
    // The same claim for a file one byte off in its last piece: refused.
    const off = Buffer.from(big);
    off[8 * 1024 * 1024 + 100] = off[8 * 1024 * 1024 + 100]! ^ 1;
    expect(await store.putBlob(off)).toBe(b3sum(off));
    const offFile = path.join(dir, 'big-off');
    writeFileSync(offFile, off);
    store.adoptStoreFiles(
      [
        { id, size: big.length, file },
        { id: b3sum(off), size: off.length, file: offFile },
      ],
      { templates: new Map([[id, claim], [b3sum(off), claim]]) },
    );
    expect(rowOf(id)).toMatchObject({ storeFile: file, template: claim.normalized });
    expect(rowOf(b3sum(off))).toMatchObject({ storeFile: offFile, template: null });
    // The castore's own copies went; the normalized blob is derived from the adopted file.
    expect(existsSync(blobDataPath(dir, id))).toBe(false);
    expect(Buffer.from(await store.readBlobBytes(claim.normalized)).equals(normalizedBytes)).toBe(true);
    expect(Buffer.from(await store.readBlobBytes(id)).equals(big)).toBe(true);
  });

  it('opens a format-3 castore by adding the template columns; its blobs read as before and new ingests use templates', async () => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    // The format-3 schema's blob table and user_version, as a Ferry of format 3 created them.
    const old = new Database(path.join(dir, 'castore.db'));
    old.exec(`
      CREATE TABLE blobs (id TEXT PRIMARY KEY, size INTEGER NOT NULL, pack TEXT, pack_offset INTEGER, outboard BLOB, last_used INTEGER NOT NULL, store_file TEXT);
      CREATE INDEX blobs_by_pack ON blobs (pack) WHERE pack IS NOT NULL;
      CREATE TABLE packs (id TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE directories (id TEXT PRIMARY KEY, data BLOB NOT NULL, last_used INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE store_paths (path TEXT PRIMARY KEY, nar_hash TEXT NOT NULL, nar_size INTEGER NOT NULL, refs TEXT NOT NULL, deriver TEXT, ca TEXT,
        signatures TEXT NOT NULL, root TEXT NOT NULL, registered_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE ingests (id TEXT PRIMARY KEY, pid INTEGER NOT NULL, started_at INTEGER NOT NULL) WITHOUT ROWID;
    `);
    const bytes = pseudoRandom(3000, 77);
    const id = b3sum(bytes);
    old.prepare('INSERT INTO blobs (id, size, pack, pack_offset, outboard, last_used, store_file) VALUES (?, ?, NULL, NULL, NULL, ?, NULL)').run(id, bytes.length, now);
    old.pragma('user_version = 3');
    old.close();
    mkdirSync(path.dirname(blobDataPath(dir, id)), { recursive: true });
    writeFileSync(blobDataPath(dir, id), bytes);
    store = LocalCastore.open(dir, { clock });
    const reopened = new Database(path.join(dir, 'castore.db'), { readonly: true });
    expect(reopened.pragma('user_version', { simple: true })).toBe(4);
    reopened.close();
    expect(Buffer.from(await store.readBlobBytes(id)).equals(bytes)).toBe(true);
    const { app, appNar } = await ingestVersion(store, version(1));
    expect(store.stats().templatedBlobs).toBe(3);
    expect((await collect(exportNar(store, app.root))).equals(appNar)).toBe(true);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
  });
});

describe('reference-aware blobs on disk: damaged records', () => {
  it('refuses to read a template whose record was damaged (BLOB_CORRUPT), and fsck names it', async () => {
    const v = version(1);
    await ingestVersion(store, v);
    const id = digestFromBytes(referenceBlake3(v.appFiles.run!) as Uint8Array);
    const db = new Database(path.join(dir, 'castore.db'));
    // A site count far beyond what the record holds: the decoder refuses it before allocating.
    const record = Buffer.from(db.prepare<[string], { r: Buffer }>('SELECT template_record AS r FROM blobs WHERE id = ?').get(id)!.r);
    record.writeUInt32LE(0xffff_fff0, 1);
    db.prepare('UPDATE blobs SET template_record = ? WHERE id = ?').run(record, id);
    db.close();
    await expect(store.readBlobBytes(id)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(() => [...store.readBlobBatch([id]).bytes]).toThrow(expect.objectContaining({ code: 'BLOB_CORRUPT' }));
    const problems = (await fsck(store)).problems;
    expect(problems).toEqual([expect.objectContaining({ kind: 'blob', id, problem: expect.stringMatching(/template record/) })]);
  });
});
