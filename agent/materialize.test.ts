import { lstatSync, mkdtempSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Castore, digestFromBytes, ingestStorePath, type Entry, type StorePathInfo } from '../castore/index.js';
import { dumpPath, encodeNar, narHash, type NarEvent } from '../nix/index.js';
import { materializeStorePath, removeTree, storePathLocation } from './materialize.js';

let dir: string;
let store: Castore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-materialize-'));
  store = Castore.open(path.join(dir, 'castore'));
});
afterEach(() => {
  store.close();
  removeTree(dir);
});

function bytesFor(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0, x = seed || 1; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A store path tree: `packages` directories of files (some executable, one 5 MiB), symlinks, an empty directory. */
function* treeEvents(packages: number): Generator<NarEvent> {
  yield { type: 'directory', path: '' };
  for (let p = 0; p < packages; p++) {
    const pkg = `pkg-${String(p).padStart(3, '0')}`;
    yield { type: 'directory', path: pkg };
    yield { type: 'directory', path: `${pkg}/bin` };
    yield { type: 'file', path: `${pkg}/bin/run`, size: 100 + p, executable: true, offset: 0 };
    yield { type: 'data', path: `${pkg}/bin/run`, chunk: bytesFor(p + 1, 100 + p) };
    yield { type: 'file-end', path: `${pkg}/bin/run` };
    yield { type: 'symlink', path: `${pkg}/bin/sh`, target: '../lib/f-0' };
    yield { type: 'directory-end', path: `${pkg}/bin` };
    yield { type: 'directory', path: `${pkg}/empty` };
    yield { type: 'directory-end', path: `${pkg}/empty` };
    yield { type: 'directory', path: `${pkg}/lib` };
    for (let f = 0; f < 6; f++) {
      const size = p === 1 && f === 0 ? 5 * 1024 * 1024 + 3 : f === 5 ? 0 : 1 + ((p * 7919 + f * 104729) % 40_000);
      yield { type: 'file', path: `${pkg}/lib/f-${f}`, size, executable: false, offset: 0 };
      if (size > 0) yield { type: 'data', path: `${pkg}/lib/f-${f}`, chunk: bytesFor(p * 10 + f + 7, size) };
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
        const bytes = bytesFor(i + 1, 50 + i);
        entries.push({ name: `f-${String(i).padStart(4, '0')}`, type: 'file', digest: await session.putBlobBytes(bytes), size: bytes.length, executable: false });
      }
      entries.push({ name: 'zz-missing', type: 'file', digest: missing, size: 10, executable: false });
      const root = session.putDirectory(entries);
      session.commit();
      const storeDir = path.join(dir, `store-${files}`);
      const info: StorePathInfo = { storePath: `/nix/store/${'b'.repeat(32)}-broken`, narHash: `sha256:${'0'.repeat(52)}`, narSize: 1, references: [], signatures: [], root };
      await expect(materializeStorePath(store, info, storeDir)).rejects.toMatchObject({ code: 'BLOB_NOT_FOUND' });
      expect(readdirSync(storeDir)).toEqual([]);
    }
  });
});
