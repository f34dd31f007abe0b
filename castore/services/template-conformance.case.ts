/**
 * The conformance cases of reference-aware blobs (docs/castore.md,
 * "Reference-aware blobs"), run by describeCastoreConformance on every
 * backend that holds objects: store paths whose files embed their own and
 * their references' hash parts are stored as normalized blobs plus
 * templates, read back as the real bytes (whole, by range, their outboards),
 * exported as byte-identical NARs, deduplicated across a mass rebuild,
 * kept and swept by GC together, and a template from outside is verified.
 */
import { hash as referenceBlake3 } from 'blake3';
import { expect, it } from 'vitest';
import { encodeNar, NIX_BASE32_ALPHABET, type NarEvent } from '../../nix/index.js';
import { seededRandom } from '../../test/seeded-random.js';
import { OutboardBuilder } from '../blake3/index.js';
import { fsck } from '../fsck.js';
import { collectGarbage } from '../gc.js';
import { ingestStorePath, storePathHashParts } from '../ingest-store-path.js';
import { exportNar } from '../nar-export.js';
import { digestFromBytes, type Digest } from '../node.js';
import { encodeTemplateRecord, normalizeReferences, templateOf } from '../references/index.js';
import type { StoredBlob } from './blob-service.js';
import { withIngest, type CastoreServices } from './castore-services.js';

const b3sum = (bytes: Uint8Array): Digest => digestFromBytes(referenceBlake3(bytes) as Uint8Array);
const text = (value: string): Uint8Array => new TextEncoder().encode(value);

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

async function listBlobs(store: CastoreServices): Promise<StoredBlob[]> {
  const out: StoredBlob[] = [];
  for await (const blob of store.blobs.list()) out.push(blob);
  return out;
}

/** Bytes a backend holds for blobs: those with bytes of their own (a template has none; its record is small). */
async function storedBlobBytes(store: CastoreServices): Promise<number> {
  return (await listBlobs(store)).filter((blob) => blob.template === undefined).reduce((sum, blob) => sum + blob.size, 0);
}

function hashPart(seed: number): string {
  const random = seededRandom(seed);
  let out = '';
  for (let i = 0; i < 32; i++) out += NIX_BASE32_ALPHABET[random(32)];
  return out;
}

/** Random bytes (the same for every version) with `refs` spliced in at fixed offsets, as a linker writes RPATHs. */
function binary(length: number, seed: number, refs: readonly string[], offsets: readonly number[]): Uint8Array {
  const random = seededRandom(seed);
  const out = Uint8Array.from({ length }, () => random(256));
  offsets.forEach((offset, index) => out.set(text(`/nix/store/${refs[index % refs.length]}-x`), offset));
  return out;
}

/** One version of a two-path closure: a lib, and an app that references it and itself (version `v` has its own hash parts, the same files otherwise). */
export function version(v: number) {
  const libHash = hashPart(1000 + v);
  const appHash = hashPart(2000 + v);
  const lib = `/nix/store/${libHash}-tmpl-lib`;
  const app = `/nix/store/${appHash}-tmpl-app`;
  const libFiles: Record<string, Uint8Array> = {
    'libfoo.so': binary(200_000, 11, [libHash], [100, 16_380, 150_000]),
    'plain': binary(5_000, 12, [], []),
  };
  const appFiles: Record<string, Uint8Array> = {
    // Streamed (over 1 MiB), with a site across the first 16 KiB group boundary and one across a NAR data chunk's end.
    'app': binary(2 * 1024 * 1024 + 77, 13, [libHash, appHash], [5, 16_370, 299_990, 2 * 1024 * 1024]),
    'run': text(`#!/nix/store/${appHash}-tmpl-app/app\nexec /nix/store/${libHash}-tmpl-lib/libfoo.so "$@"\n`),
  };
  const links = { 'lib-link': `/nix/store/${libHash}-tmpl-lib/libfoo.so` };
  return { lib, app, libFiles, appFiles, links };
}

function* narEvents(files: Record<string, Uint8Array>, links: Record<string, string> = {}): Generator<NarEvent> {
  yield { type: 'directory', path: '' };
  for (const name of [...Object.keys(files), ...Object.keys(links)].sort()) {
    if (name in links) {
      yield { type: 'symlink', path: name, target: links[name]! };
      continue;
    }
    yield { type: 'file', path: name, size: files[name]!.length, executable: true, offset: 0 };
    // In uneven chunks, as a NAR arrives.
    for (let at = 0; at < files[name]!.length; at += 300_007) yield { type: 'data', path: name, chunk: files[name]!.subarray(at, at + 300_007) };
    yield { type: 'file-end', path: name };
  }
  yield { type: 'directory-end', path: '' };
}

/** Ingests version `v` (lib, then app); returns their records and NARs. */
export async function ingestVersion(store: CastoreServices, v: ReturnType<typeof version>) {
  const libNar = await collect(encodeNar(narEvents(v.libFiles)));
  const appNar = await collect(encodeNar(narEvents(v.appFiles, v.links)));
  const lib = await ingestStorePath(store, encodeNar(narEvents(v.libFiles)), { storePath: v.lib, references: [] });
  const app = await ingestStorePath(store, encodeNar(narEvents(v.appFiles, v.links)), { storePath: v.app, references: [v.lib, v.app] });
  return { lib, app, libNar, appNar };
}

/** The reference-aware cases, on a fresh store per case (`store()`), whose clock `tick()` advances. */
export function templateCases(store: () => CastoreServices, tick: () => void): void {
  it('stores files that embed hash parts as templates, reads their real bytes whole and by range, and exports identical NARs', async () => {
    const v = version(1);
    const { lib, app, libNar, appNar } = await ingestVersion(store(), v);
    const templated = (await listBlobs(store())).filter((blob) => blob.template !== undefined);
    // libfoo.so, app and run embed hash parts; plain does not (and the symlink target is not a blob).
    expect(templated.map((blob) => blob.id).sort()).toEqual([v.libFiles['libfoo.so']!, v.appFiles.app!, v.appFiles.run!].map(b3sum).sort());
    const random = seededRandom(3);
    for (const bytes of [...Object.values(v.libFiles), ...Object.values(v.appFiles)]) {
      const id = b3sum(bytes);
      expect(await store().blobs.stat(id)).toEqual({ size: bytes.length });
      expect((await collect(store().blobs.read(id))).equals(bytes)).toBe(true);
      for (let round = 0; round < 20; round++) {
        const offset = random(bytes.length);
        const length = random(Math.min(bytes.length - offset, 70_000) + 1);
        expect((await collect(store().blobs.read(id, { offset, length }))).equals(bytes.subarray(offset, offset + length))).toBe(true);
      }
      const builder = new OutboardBuilder();
      builder.update(bytes);
      expect(Buffer.from(await store().blobs.readOutboard(id)).equals(builder.finish().outboard)).toBe(true);
    }
    expect(await store().blobs.missing(templated.map((blob) => blob.id))).toEqual([]);
    // The normalized blobs hold no hash part of the paths.
    for (const blob of templated) {
      const normalized = (await collect(store().blobs.read(blob.template!))).toString('latin1');
      expect(normalized.includes(hashPart(1001)) || normalized.includes(hashPart(2001))).toBe(false);
    }
    expect((await collect(exportNar(store(), lib.root))).equals(libNar)).toBe(true);
    expect((await collect(exportNar(store(), app.root))).equals(appNar)).toBe(true);
    expect((await fsck(store(), { checkNars: true })).problems).toEqual([]);
  });

  it('a mass rebuild (same files, new hash parts of self and references) adds templates, no normalized bytes', async () => {
    await ingestVersion(store(), version(1));
    const before = await storedBlobBytes(store());
    const templatesBefore = (await listBlobs(store())).filter((blob) => blob.template !== undefined).length;
    const second = await ingestVersion(store(), version(2));
    expect(await storedBlobBytes(store())).toBe(before);
    expect((await listBlobs(store())).filter((blob) => blob.template !== undefined).length).toBe(templatesBefore + 3);
    expect((await collect(exportNar(store(), second.app.root))).equals(second.appNar)).toBe(true);
    // X's id and outboard come from the deduplicated N's tree with the site groups re-hashed: they are the real ones.
    const app = version(2).appFiles.app!;
    expect(await store().blobs.stat(b3sum(app))).toEqual({ size: app.length });
    const builder = new OutboardBuilder();
    builder.update(app);
    expect(Buffer.from(await store().blobs.readOutboard(b3sum(app))).equals(builder.finish().outboard)).toBe(true);
    expect((await fsck(store(), { checkNars: true })).problems).toEqual([]);
    // Without normalization the same rebuild stores the changed files again.
    await ingestStorePath(store(), encodeNar(narEvents(version(3).appFiles)), { storePath: version(3).app, references: [] }, { normalizeReferences: false });
    expect(await storedBlobBytes(store())).toBeGreaterThan(before + 2 * 1024 * 1024);
  });

  it('GC keeps a normalized blob while a kept template names it, and sweeps both once none does', async () => {
    const first = await ingestVersion(store(), version(1));
    const v2 = version(2);
    await ingestVersion(store(), v2);
    tick();
    const report = await collectGarbage(store(), { keepStorePaths: [v2.app] });
    expect(report.removedStorePaths).toEqual(expect.arrayContaining([version(1).lib, version(1).app]));
    expect(report.removedStorePaths).not.toContain(v2.lib);
    expect(await store().blobs.stat(b3sum(version(1).appFiles.app!))).toBeUndefined();
    expect((await collect(store().blobs.read(b3sum(v2.appFiles.app!)))).equals(v2.appFiles.app!)).toBe(true);
    expect((await fsck(store(), { checkNars: true })).problems).toEqual([]);
    // A normalized blob asked for directly stays while a template names it.
    const templated = (await listBlobs(store())).filter((blob) => blob.template !== undefined);
    tick();
    expect(await store().blobs.deleteUnused(templated.map((blob) => blob.template!), Infinity)).toEqual([]);
    expect(first.app.storePath).toBe(version(1).app);
    await collectGarbage(store(), { keepStorePaths: [] });
    expect(await listBlobs(store())).toEqual([]);
  });

  it('putTemplate stages a template from outside only once it restores to its id', async () => {
    const v = version(4);
    const hashParts = [hashPart(2004), hashPart(1004)];
    const real = v.appFiles.app!;
    const { normalized, refs } = normalizeReferences(real, hashParts);
    const record = encodeTemplateRecord(templateOf(refs, hashParts));
    const x = b3sum(real);
    const n = b3sum(normalized);
    // N neither stored nor staged: refused.
    await withIngest(store(), async (ingest) => {
      await expect(ingest.putTemplate(x, real.length, n, record)).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
    });
    await withIngest(store(), async (ingest) => {
      expect(await ingest.putBlobBytes(normalized)).toBe(n);
      // Within the same ingest: a wrong id, a wrong size, a record of another file, garbage.
      await expect(ingest.putTemplate(b3sum(text('other')), real.length, n, record)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
      await expect(ingest.putTemplate(x, real.length - 1, n, record)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
      const swapped = encodeTemplateRecord(templateOf(refs, [...hashParts].reverse()));
      await expect(ingest.putTemplate(x, real.length, n, swapped)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
      await expect(ingest.putTemplate(x, real.length, n, text('garbage'))).rejects.toMatchObject({ code: 'REFERENCES_INVALID' });
      // A size that is not N's (a hostile peer's huge claim) is refused before anything is read.
      await expect(ingest.putTemplate(x, 2 ** 50, n, record)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
      await expect(ingest.putTemplate(x, -1, n, record)).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    });
    expect(await store().blobs.stat(x)).toBeUndefined();
    // N now stored (committed above): a later ingest's verified template is read back as the real bytes.
    await withIngest(store(), (ingest) => ingest.putTemplate(x, real.length, n, record));
    expect((await listBlobs(store())).find((blob) => blob.id === x)).toMatchObject({ template: n, size: real.length });
    expect((await collect(store().blobs.read(x, { offset: 16_000, length: 1_100_000 }))).equals(real.subarray(16_000, 1_116_000))).toBe(true);
    // A small one staged with its N in one ingest.
    const run = v.appFiles.run!;
    const small = normalizeReferences(run, hashParts);
    await withIngest(store(), async (ingest) => {
      const smallN = await ingest.putBlobBytes(small.normalized);
      await ingest.putTemplate(b3sum(run), run.length, smallN, encodeTemplateRecord(templateOf(small.refs, hashParts)));
    });
    expect((await collect(store().blobs.read(b3sum(run)))).equals(run)).toBe(true);
    expect((await fsck(store())).problems).toEqual([]);
  });

  it('a template writer refuses a file longer or shorter than declared, buffered or streamed, and stages nothing of it', async () => {
    const hashParts = storePathHashParts(version(5).app, [version(5).lib]);
    for (const bytes of [version(5).appFiles.run!, version(5).appFiles.app!]) {
      const ingest = store().beginIngest();
      const long = ingest.templateWriter(bytes.length - 1, hashParts);
      expect(() => long.write(bytes)).toThrow(expect.objectContaining({ code: 'BLOB_CORRUPT' }));
      long.discard();
      const short = ingest.templateWriter(bytes.length + 1, hashParts);
      short.write(bytes);
      expect(() => short.finish()).toThrow(expect.objectContaining({ code: 'BLOB_CORRUPT' }));
      const right = ingest.templateWriter(bytes.length, hashParts);
      right.write(bytes);
      expect(right.finish()).toBe(b3sum(bytes));
      ingest.abort();
      expect(await store().blobs.missing([b3sum(bytes)])).toEqual([b3sum(bytes)]);
      expect(() => ingest.templateWriter(1, hashParts)).toThrow(expect.objectContaining({ code: 'INGEST_ABORTED' }));
    }
    expect((await listBlobs(store())).filter((blob) => blob.template !== undefined)).toEqual([]);
  });
}
