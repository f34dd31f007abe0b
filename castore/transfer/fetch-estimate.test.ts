import { describe, expect, it } from 'vitest';
import { encodeDirectory, directoryId } from '../directory.js';
import type { Digest, Entry, Node } from '../node.js';
import { closureObjects, estimateFetch } from './fetch-estimate.js';

const id = (c: string) => c.repeat(64) as Digest;
const file = (c: string, size: number, name = c): Entry => ({ type: 'file', name, digest: id(c), size, executable: false });

describe('closureObjects', () => {
  it('collects every file and directory once, and refuses a directory it cannot read', () => {
    const inner = [file('a', 10, 'x')];
    const innerId = directoryId(encodeDirectory(inner));
    const outer: Entry[] = [file('a', 10, 'again'), file('b', 20), { type: 'directory', name: 'sub', digest: innerId, size: 1 }, { type: 'symlink', name: 'l', target: '/x' }];
    const outerId = directoryId(encodeDirectory(outer));
    const dirs = new Map<Digest, Entry[]>([[innerId, inner], [outerId, outer]]);
    const read = (digest: Digest) => {
      const entries = dirs.get(digest);
      if (!entries) throw new Error(`no directory ${digest}`);
      return entries;
    };
    const roots: Node[] = [{ type: 'directory', digest: outerId, size: 3 }, { type: 'file', digest: id('c'), size: 5, executable: false }, { type: 'directory', digest: innerId, size: 1 }];
    const objects = closureObjects(roots, read);
    expect([...objects.files.entries()].sort()).toEqual([[id('a'), 10], [id('b'), 20], [id('c'), 5]]);
    expect(objects.directories.size).toBe(2);
    expect(() => closureObjects([{ type: 'directory', digest: id('f'), size: 0 }], read)).toThrow(/no directory/);
  });
});

describe('estimateFetch', () => {
  it('counts the files the second closure adds, and what reference-aware dedup leaves of them', () => {
    const from = { files: new Map([[id('1'), 100], [id('2'), 200]]), directories: new Set([id('d')]) };
    const to = {
      files: new Map([
        [id('1'), 100], // kept: nothing to fetch
        [id('3'), 300], // template over the normalized blob of '2' (held): restored
        [id('4'), 400], // template over an unknown normalized blob 'n': fetched once...
        [id('5'), 400], // ...and this one over 'n' too is then restored
        [id('6'), 600], // kept whole
      ]),
      directories: new Set([id('d'), id('e')]),
    };
    const templates = new Map([[id('2'), id('m')], [id('3'), id('m')], [id('4'), id('n')], [id('5'), id('n')]]);
    const estimate = estimateFetch(from, to, (blob) => templates.get(blob));
    expect(estimate).toEqual({ newBlobs: 4, newBytes: 1700, newDirectories: 1, withTemplates: { restoredBlobs: 2, normalizedBlobs: 1, bytes: 1000 } });
  });

  it('from nothing: every file is new', () => {
    const to = { files: new Map([[id('1'), 7]]), directories: new Set<Digest>() };
    expect(estimateFetch({ files: new Map(), directories: new Set() }, to, () => undefined)).toMatchObject({ newBlobs: 1, newBytes: 7, withTemplates: { bytes: 7 } });
  });
});
