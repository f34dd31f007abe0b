import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalCastore, digestFromBytes, ingestStorePath, type Digest, type Entry, type FileNode, type Node, type StorePathInfo } from '../castore/index.js';
import { dumpPath, encodeNar, narHash, type NarEvent } from '../nix/index.js';
import { ClosureMaterializer, materializeStorePath, removeTree } from './materialize.js';
import { asStorePath, storePathLocation } from '../nix/store-path.js';
import { seededBytes } from '../test/seeded-random.js';

let dir: string;
let store: LocalCastore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-materialize-'));
  store = LocalCastore.open(path.join(dir, 'castore'));
});
afterEach(() => {
  store.close();
  removeTree(dir);
});

/** A store path tree: `packages` directories of files (some executable, one 5 MiB), symlinks, an empty directory. */
function* treeEvents(packages: number): Generator<NarEvent> {
  yield { type: 'directory', path: '' };
  for (let p = 0; p < packages; p++) {
    const pkg = `pkg-${String(p).padStart(3, '0')}`;
    yield { type: 'directory', path: pkg };
    yield { type: 'directory', path: `${pkg}/bin` };
    yield { type: 'file', path: `${pkg}/bin/run`, size: 100 + p, executable: true, offset: 0 };
    yield { type: 'data', path: `${pkg}/bin/run`, chunk: seededBytes(p + 1, 100 + p) };
    yield { type: 'file-end', path: `${pkg}/bin/run` };
    yield { type: 'symlink', path: `${pkg}/bin/sh`, target: '../lib/f-0' };
    yield { type: 'directory-end', path: `${pkg}/bin` };
    yield { type: 'directory', path: `${pkg}/empty` };
    yield { type: 'directory-end', path: `${pkg}/empty` };
    yield { type: 'directory', path: `${pkg}/lib` };
    for (let f = 0; f < 6; f++) {
      const size = p === 1 && f === 0 ? 5 * 1024 * 1024 + 3 : f === 5 ? 0 : 1 + ((p * 7919 + f * 104729) % 40_000);
      yield { type: 'file', path: `${pkg}/lib/f-${f}`, size, executable: false, offset: 0 };
      if (size > 0) yield { type: 'data', path: `${pkg}/lib/f-${f}`, chunk: seededBytes(p * 10 + f + 7, size) };
      yield { type: 'file-end', path: `${pkg}/lib/f-${f}` };
    }
    yield { type: 'directory-end', path: `${pkg}/lib` };
    yield { type: 'directory-end', path: pkg };
  }
  yield { type: 'directory-end', path: '' };
}

async function ingestTree(packages: number, name: string): Promise<StorePathInfo> {
  return ingestStorePath(store, encodeNar(treeEvents(packages)), { storePath: `/nix/store/${'a'.repeat(32)}-${name}`, references: [] });
}

function expectNixLayout(root: string): void {
  const walk = (at: string): void => {
    const stat = lstatSync(at);
    expect(stat.mtimeMs, at).toBe(1000);
    if (stat.isSymbolicLink()) return;
    if (stat.isDirectory()) {
      expect(stat.mode & 0o777, at).toBe(0o555);
      for (const entry of readdirSync(at)) walk(path.join(at, entry));
    } else {
      expect([0o444, 0o555], at).toContain(stat.mode & 0o777);
    }
  };
  walk(root);
}

describe('materializeStorePath', () => {
  // 40 packages make ~560 nodes: the writer-thread path; 2 packages stay under its threshold: the inline path.
  for (const packages of [40, 2]) {
    it(`writes a tree of ${packages} packages whose NAR is the one ingested, laid out as Nix does`, async () => {
      const info = await ingestTree(packages, `tree-${packages}`);
      const storeDir = path.join(dir, 'store');
      expect(await materializeStorePath(store, info, storeDir)).toBe(true);
      const location = storePathLocation(storeDir, info.storePath);
      expect((await narHash(dumpPath(location))).narHash).toBe(info.narHash);
      expectNixLayout(location);
      expect(lstatSync(path.join(location, 'pkg-000/bin/run')).mode & 0o777).toBe(0o555);
      expect(readlinkSync(path.join(location, 'pkg-000/bin/sh'))).toBe('../lib/f-0');
      expect(readdirSync(storeDir)).toEqual([path.basename(location)]);
      // Already there: nothing is written again.
      expect(await materializeStorePath(store, info, storeDir)).toBe(false);
    });
  }

  it('fails with the castore error when a blob is missing, and leaves nothing in the store directory', async () => {
    const missing = digestFromBytes(new Uint8Array(32).fill(9));
    for (const files of [300, 3]) {
      const session = store.beginIngest();
      const entries: Entry[] = [];
      for (let i = 0; i < files; i++) {
        const bytes = seededBytes(i + 1, 50 + i);
        entries.push({ name: `f-${String(i).padStart(4, '0')}`, type: 'file', digest: await session.putBlobBytes(bytes), size: bytes.length, executable: false });
      }
      entries.push({ name: 'zz-missing', type: 'file', digest: missing, size: 10, executable: false });
      const root = session.putDirectory(entries);
      session.commit();
      const storeDir = path.join(dir, `store-${files}`);
      const info: StorePathInfo = { storePath: asStorePath(`/nix/store/${'b'.repeat(32)}-broken`), narHash: `sha256:${'0'.repeat(52)}`, narSize: 1, references: [], signatures: [], root };
      await expect(materializeStorePath(store, info, storeDir)).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
      expect(readdirSync(storeDir)).toEqual([]);
    }
  });
});

/** Every non-empty file of a tree, by blob. */
function filesOf(root: Node, into = new Map<Digest, FileNode>()): Map<Digest, FileNode> {
  if (root.type === 'file' && root.size > 0) into.set(root.digest, root);
  if (root.type === 'directory') for (const entry of store.readDirectory(root.digest)) filesOf(entry, into);
  return into;
}

async function blobBytes(id: Digest): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of store.readBlob(id)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('ClosureMaterializer', () => {
  for (const packages of [40, 2]) {
    it(`writes the ${packages}-package tree from offered blobs alone, as a fetch gives them before the castore has them`, async () => {
      const info = await ingestTree(packages, `offered-${packages}`);
      // An empty castore: every byte has to come through offer().
      const empty = LocalCastore.open(path.join(dir, 'empty-castore'));
      try {
        const storeDir = path.join(dir, 'store');
        const materializer = new ClosureMaterializer(empty, storeDir);
        materializer.plan([info], (id) => store.readDirectory(id));
        // Laid out under a temp name, not published.
        expect(readdirSync(storeDir).every((entry) => entry.startsWith('.ferry-tmp-'))).toBe(true);
        // Offered from concurrent requests, as a fetch does: each must be let through when the writers catch up.
        const files = [...filesOf(info.root)];
        await Promise.all(
          [0, 1, 2, 3].map(async (lane) => {
            for (const [id, file] of files.filter((_, index) => index % 4 === lane)) {
              // Bytes of the wrong size are not taken for the blob (the castore would have to supply it).
              await materializer.offer(id, new Uint8Array(file.size + 1));
              await materializer.offer(id, await blobBytes(id));
            }
          }),
        );
        expect(await materializer.finish()).toBe(1);
        const location = storePathLocation(storeDir, info.storePath);
        expect((await narHash(dumpPath(location))).narHash).toBe(info.narHash);
        expectNixLayout(location);
        expect(readdirSync(storeDir)).toEqual([path.basename(location)]);
      } finally {
        empty.close();
      }
    });
  }

  it('lets every concurrent offer through when the writers fall behind', async () => {
    // 160 files of 512 KiB: the writers' queues fill, and four offers wait at once.
    const events = function* (): Generator<NarEvent> {
      yield { type: 'directory', path: '' };
      for (let f = 0; f < 160; f++) {
        const name = `f-${String(f).padStart(3, '0')}`;
        yield { type: 'file', path: name, size: 512 * 1024, executable: false, offset: 0 };
        yield { type: 'data', path: name, chunk: seededBytes(f + 1, 512 * 1024) };
        yield { type: 'file-end', path: name };
      }
      yield { type: 'directory-end', path: '' };
    };
    const info = await ingestStorePath(store, encodeNar(events()), { storePath: `/nix/store/${'c'.repeat(32)}-wide`, references: [] });
    const files = [...filesOf(info.root)];
    const bytes = new Map(await Promise.all(files.map(async ([id]) => [id, await blobBytes(id)] as const)));
    const storeDir = path.join(dir, 'store');
    const materializer = new ClosureMaterializer(store, storeDir);
    materializer.plan([info]);
    await Promise.all([0, 1, 2, 3].map(async (lane) => {
      for (const [id] of files.filter((_, index) => index % 4 === lane)) await materializer.offer(id, bytes.get(id)!);
    }));
    expect(await materializer.finish()).toBe(1);
    expect((await narHash(dumpPath(storePathLocation(storeDir, info.storePath)))).narHash).toBe(info.narHash);
  });

  it('publishes nothing, and creates no store directory, when there is nothing to write', async () => {
    const storeDir = path.join(dir, 'nowhere');
    const materializer = new ClosureMaterializer(store, storeDir);
    materializer.plan([]);
    expect(await materializer.finish()).toBe(0);
    expect(existsSync(storeDir)).toBe(false);
  });

  it('takes up a temp tree an earlier attempt left: keeps exact files, replaces everything else, and the result is exact', async () => {
    const info = await ingestTree(40, 'resumed');
    const files = [...filesOf(info.root)];
    const storeDir = path.join(dir, 'store-resumed');
    const first = new ClosureMaterializer(store, storeDir);
    expect(first.plan([info]).length).toBe(files.length);
    for (const [id] of files.slice(0, 100)) await first.offer(id, await blobBytes(id));
    await first.suspend();
    const [temp] = readdirSync(storeDir);
    expect(temp).toMatch(/^\.ferry-tmp-/);
    // What a crash or a person might leave: a symlink retargeted, a file where a directory goes, a stray file.
    const tree = path.join(storeDir, temp!);
    rmSync(path.join(tree, 'pkg-000/bin/sh'));
    symlinkSync('elsewhere', path.join(tree, 'pkg-000/bin/sh'));
    rmSync(path.join(tree, 'pkg-003/empty'), { recursive: true });
    writeFileSync(path.join(tree, 'pkg-003/empty'), 'not a directory');
    writeFileSync(path.join(tree, 'pkg-004/stray'), 'not in the store path');
    // And a stale temp tree of a path no longer planned.
    mkdirSync(path.join(storeDir, '.ferry-tmp-gone'));

    const second = new ClosureMaterializer(store, storeDir);
    const waiting = second.plan([info]);
    expect(waiting.length).toBe(files.length - 100);
    expect(await second.finish()).toBe(1);
    const location = storePathLocation(storeDir, info.storePath);
    expect((await narHash(dumpPath(location))).narHash).toBe(info.narHash);
    expectNixLayout(location);
    expect(readdirSync(storeDir)).toEqual([path.basename(location)]);
  });

  it('takes what was not offered from the castore, and leaves nothing behind when that fails', async () => {
    const info = await ingestTree(40, 'partly-offered');
    const files = [...filesOf(info.root)];
    const empty = LocalCastore.open(path.join(dir, 'empty-castore'));
    try {
      for (const [source, expected] of [[store, true], [empty, false]] as const) {
        const storeDir = path.join(dir, `store-${expected}`);
        const materializer = new ClosureMaterializer(source, storeDir);
        materializer.plan([info], (id) => store.readDirectory(id));
        for (const [id] of files.slice(0, files.length / 2)) await materializer.offer(id, await blobBytes(id));
        if (expected) {
          expect(await materializer.finish()).toBe(1);
          expect((await narHash(dumpPath(storePathLocation(storeDir, info.storePath)))).narHash).toBe(info.narHash);
        } else {
          await expect(materializer.finish()).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
          await materializer.abort();
          expect(readdirSync(storeDir)).toEqual([]);
        }
      }
    } finally {
      empty.close();
    }
  });
});
