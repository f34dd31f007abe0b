// castore -> NAR: the whole NAR and any byte range of it, against the NARs that were ingested.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPath } from '../nix/index.js';
import { ingestStorePath } from './ingest-store-path.js';
import { exportNar } from './nar-export.js';
import type { Node } from './node.js';
import { LocalCastore } from './local/local-castore.js';
import { seededRandom } from '../test/seeded-random.js';

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

describe('exportNar', () => {
  let dir: string;
  let store: LocalCastore;
  const roots: Record<string, Node> = {};
  /** The NARs that were ingested (from dumpPath, which equals nix-store --dump: test/nar-real-nix.test.ts). */
  const ingested: Record<string, Buffer> = {};

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-nar-export-'));
    store = LocalCastore.open(path.join(dir, 'castore'));
    const tree = path.join(dir, 'tree');
    mkdirSync(path.join(tree, 'bin'), { recursive: true });
    mkdirSync(path.join(tree, 'empty-dir'));
    mkdirSync(path.join(tree, 'lib', 'deep', 'deeper'), { recursive: true });
    writeFileSync(path.join(tree, 'bin', 'run'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    writeFileSync(path.join(tree, 'empty'), '');
    writeFileSync(path.join(tree, 'lib', 'seven'), 'seven!!'); // padding
    writeFileSync(path.join(tree, 'lib', 'deep', 'deeper', 'large'), Buffer.alloc(700_000, 7)); // a file blob, not inline
    for (let i = 0; i < 50; i++) writeFileSync(path.join(tree, 'lib', `f${i}`), `file ${i} `.repeat(i * 37));
    symlinkSync('../lib/seven', path.join(tree, 'bin', 'link'));
    const file = path.join(dir, 'single');
    writeFileSync(file, Buffer.alloc(300_001, 3));
    const link = path.join(dir, 'link');
    symlinkSync('/nix/store/somewhere', link);
    for (const [name, source] of Object.entries({ tree, file, link })) {
      const info = await ingestStorePath(store, dumpPath(source), { storePath: `/nix/store/${'a'.repeat(32)}-${name}`, references: [] });
      roots[name] = info.root;
      ingested[name] = await collect(dumpPath(source));
    }
  });

  afterAll(() => {
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('streams exactly the NAR that was ingested, for directories, files and symlinks', async () => {
    for (const [name, root] of Object.entries(roots)) {
      expect((await collect(exportNar(store, root))).equals(ingested[name]!)).toBe(true);
    }
  });

  it('streams any byte range as the same slice of the NAR', async () => {
    for (const root of Object.values(roots)) {
      const nar = await collect(exportNar(store, root));
      const cuts = [0, 1, 7, 8, 9, 63, 64, 65, 100, 1000, nar.length - 700_001, nar.length - 9, nar.length - 1].filter((n) => n >= 0 && n < nar.length);
      const random = seededRandom(1);
      for (let i = 0; i < 40; i++) cuts.push(random(nar.length));
      for (const start of cuts) {
        for (const length of [1, 8, 13, 4096, 70_000, nar.length]) {
          const end = Math.min(start + length, nar.length);
          const slice = await collect(exportNar(store, root, { start, end }));
          expect(slice.equals(nar.subarray(start, end)), `range ${start}-${end} of ${nar.length}`).toBe(true);
        }
      }
      expect((await collect(exportNar(store, root, { start: 5, end: 5 }))).length).toBe(0);
    }
  });
});
