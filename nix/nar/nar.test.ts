import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, mkdirSync, writeFileSync, symlinkSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NixError } from '../errors.js';
import { decodeNar, dumpPath, encodeNar, listNar, narHash, restoreNar, type NarEvent, type NarLimits } from './index.js';
import { encodeNarString } from './tokens.js';
import { seededRandom } from '../../test/seeded-random.js';

/** Builds raw NAR bytes from tokens, so tests can write NARs our encoder would refuse to produce. */
function rawNar(...parts: (string | Uint8Array | { raw: Uint8Array })[]): Uint8Array {
  return new Uint8Array(
    Buffer.concat(parts.map((part) => (typeof part === 'string' ? encodeNarString(Buffer.from(part)) : part instanceof Uint8Array ? encodeNarString(part) : part.raw))),
  );
}

const fileNode = (contents: string, executable = false): string[] =>
  executable ? ['(', 'type', 'regular', 'executable', '', 'contents', contents, ')'] : ['(', 'type', 'regular', 'contents', contents, ')'];
const entry = (name: string, node: string[]): string[] => ['entry', '(', 'name', name, 'node', ...node, ')'];
const dirNode = (...entries: string[][]): string[] => ['(', 'type', 'directory', ...entries.flat(), ')'];

async function* chunks(bytes: Uint8Array, size = 7): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function bytesOf(items: AsyncIterable<Uint8Array>): Promise<Buffer> {
  return Buffer.concat(await collect(items));
}

async function refusal(bytes: Uint8Array, limits: Partial<NarLimits> = {}): Promise<NixError> {
  try {
    await collect(decodeNar(chunks(bytes, 5), limits));
  } catch (error) {
    expect(error).toBeInstanceOf(NixError);
    return error as NixError;
  }
  throw new Error('the NAR was accepted');
}

const sample = rawNar(
  'nix-archive-1',
  ...dirNode(
    entry('a', fileNode('hello')),
    entry('b', ['(', 'type', 'symlink', 'target', 'a', ')']),
    entry('c', dirNode(entry('x', fileNode('', true)))),
  ),
);

describe('NAR decoder', () => {
  it('decodes a well-formed NAR into events in NAR order, at any chunking', async () => {
    for (const size of [1, 3, 8, 1000]) {
      const events = await collect(decodeNar(chunks(sample, size)));
      const text = events.map((e) => (e.type === 'data' ? `data:${Buffer.from(e.chunk).toString()}` : `${e.type}:${e.path}`));
      expect(text.filter((t) => !t.startsWith('data:')).join(' ')).toBe(
        'directory: file:a file-end:a symlink:b directory:c file:c/x file-end:c/x directory-end:c directory-end:',
      );
      expect(text.filter((t) => t.startsWith('data:')).map((t) => t.slice(5)).join('')).toBe('hello');
    }
  });

  it('re-encodes to exactly the same bytes', async () => {
    expect((await bytesOf(encodeNar(decodeNar(chunks(sample))))).equals(Buffer.from(sample))).toBe(true);
  });

  it('reports the NAR offset of file contents', async () => {
    const events = await collect(decodeNar(chunks(sample)));
    const file = events.find((e) => e.type === 'file' && e.path === 'a');
    expect(file?.type === 'file' && Buffer.from(sample.subarray(file.offset, file.offset + 5)).toString()).toBe('hello');
  });

  const hostile: [string, Uint8Array, string, RegExp][] = [
    ['wrong magic', rawNar('nix-archive-2', ...fileNode('x')), 'NAR_BAD_MAGIC', /not a NAR/],
    ['empty input', new Uint8Array(0), 'NAR_BAD_MAGIC', /not a NAR/],
    ['unknown node type', rawNar('nix-archive-1', '(', 'type', 'fifo', ')'), 'NAR_UNEXPECTED_TOKEN', /found "fifo"/],
    ['unsorted names', rawNar('nix-archive-1', ...dirNode(entry('b', fileNode('')), entry('a', fileNode('')))), 'NAR_UNSORTED', /'a' comes after 'b'/],
    ['duplicate names', rawNar('nix-archive-1', ...dirNode(entry('a', fileNode('')), entry('a', fileNode('')))), 'NAR_DUPLICATE', /'a' appears twice/],
    ['empty name', rawNar('nix-archive-1', ...dirNode(entry('', fileNode('')))), 'NAR_BAD_NAME', /empty/],
    ['dot', rawNar('nix-archive-1', ...dirNode(entry('.', fileNode('')))), 'NAR_BAD_NAME', /'\.'/],
    ['dot-dot', rawNar('nix-archive-1', ...dirNode(entry('..', fileNode('')))), 'NAR_BAD_NAME', /'\.\.'/],
    ['slash in name', rawNar('nix-archive-1', ...dirNode(entry('a/b', fileNode('')))), 'NAR_BAD_NAME', /contains '\/'/],
    ['NUL in name', rawNar('nix-archive-1', ...dirNode(entry('a\0b', fileNode('')))), 'NAR_BAD_NAME', /NUL/],
    ['empty symlink target', rawNar('nix-archive-1', '(', 'type', 'symlink', 'target', '', ')'), 'NAR_BAD_SYMLINK', /empty/],
    ['trailing data', rawNar('nix-archive-1', ...fileNode('x'), 'extra'), 'NAR_TRAILING_DATA', /after the end/],
    ['missing close', rawNar('nix-archive-1', '(', 'type', 'regular', 'contents', 'x'), 'NAR_TRUNCATED', /ends in the middle/],
    ['executable flag with a value', rawNar('nix-archive-1', '(', 'type', 'regular', 'executable', 'yes', 'contents', 'x', ')'), 'NAR_UNEXPECTED_TOKEN', /expected ''/],
    ['huge token', rawNar('nix-archive-1', '(', 'type', 'x'.repeat(1000)), 'NAR_UNEXPECTED_TOKEN', /more than the limit/],
  ];
  for (const [what, bytes, code, message] of hostile) {
    it(`refuses ${what}`, async () => {
      const error = await refusal(bytes);
      expect(error.code).toBe(code);
      expect(error.message).toMatch(message);
      expect(error.message).toMatch(/byte offset \d+/);
    });
  }

  it('names the offset and entry of a bad name', async () => {
    const bytes = rawNar('nix-archive-1', ...dirNode(entry('ok', fileNode('')), entry('..', fileNode(''))));
    const error = await refusal(bytes);
    const nameOffset = Buffer.from(bytes).indexOf(Buffer.from(encodeNarString(Buffer.from('..'))));
    expect(error.offset).toBe(nameOffset);
  });

  it('refuses non-zero padding', async () => {
    const bytes = rawNar('nix-archive-1', ...fileNode('abc'));
    const contentsAt = Buffer.from(bytes).indexOf(Buffer.from('abc'));
    bytes[contentsAt + 4] = 1;
    const error = await refusal(bytes);
    expect(error.code).toBe('NAR_BAD_PADDING');
    expect(error.offset).toBe(contentsAt + 3);
  });

  it('refuses truncation anywhere, naming the offset', async () => {
    for (let cut = 1; cut < sample.length; cut += 3) {
      const error = await refusal(sample.subarray(0, cut));
      expect(['NAR_TRUNCATED', 'NAR_BAD_MAGIC']).toContain(error.code);
      expect(error.offset).toBeLessThanOrEqual(cut);
    }
  });

  it('enforces limits', async () => {
    expect((await refusal(sample, { maxNarSize: 100 })).code).toBe('NAR_LIMIT');
    expect((await refusal(sample, { maxFileSize: 4 })).message).toMatch(/5 bytes, more than the limit of 4/);
    expect((await refusal(sample, { maxEntries: 3 })).message).toMatch(/more than 3 entries/);
    expect((await refusal(sample, { maxDepth: 1 })).message).toMatch(/deeper than 1/);
    expect((await refusal(sample, { maxNameLength: 0 })).code).toBe('NAR_LIMIT');
    const huge = rawNar('nix-archive-1', '(', 'type', 'regular', 'contents', { raw: new Uint8Array([0, 0, 0, 0, 0, 0, 0x40, 0]) });
    expect((await refusal(huge)).message).toMatch(/does not fit|more than the limit/);
  });

  it('never buffers a whole file: contents arrive as views of the input chunks', async () => {
    const big = new Uint8Array(1 << 20).fill(7);
    const bytes = rawNar('nix-archive-1', '(', 'type', 'regular', 'contents', big, ')');
    let largest = 0;
    for await (const event of decodeNar(chunks(bytes, 4096))) if (event.type === 'data') largest = Math.max(largest, event.chunk.length);
    expect(largest).toBeLessThanOrEqual(4096);
  });

  it('survives seeded random corruption: every mutation is decoded to a valid NAR or refused with a NixError', async () => {
    const random = seededRandom(12345);
    let refused = 0;
    for (let round = 0; round < 500; round++) {
      const bytes = new Uint8Array(sample);
      for (let flips = 1 + random(3); flips > 0; flips--) bytes[random(bytes.length)] = random(256);
      try {
        const reencoded = await bytesOf(encodeNar(decodeNar(chunks(bytes, 1 + random(64)))));
        // Accepted mutations (e.g. a changed content byte) must still be canonical NARs.
        expect(reencoded.equals(Buffer.from(bytes))).toBe(true);
      } catch (error) {
        expect(error).toBeInstanceOf(NixError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(300);
  });
});

describe('NAR encoder', () => {
  const encodeEvents = (events: NarEvent[]): Promise<Buffer> => bytesOf(encodeNar(events));
  it('refuses sequences that are not a NAR', async () => {
    await expect(encodeEvents([{ type: 'file', path: '', size: 3, executable: false, offset: 0 }, { type: 'file-end', path: '' }])).rejects.toThrow(/3 bytes short/);
    await expect(
      encodeEvents([
        { type: 'directory', path: '' },
        { type: 'symlink', path: 'b', target: 'x' },
        { type: 'symlink', path: 'a', target: 'x' },
        { type: 'directory-end', path: '' },
      ]),
    ).rejects.toThrow(/sorted/);
    await expect(encodeEvents([{ type: 'directory', path: '' }])).rejects.toThrow(/before the root entry was complete/);
    await expect(encodeEvents([{ type: 'directory', path: '' }, { type: 'symlink', path: 'a/b', target: 'x' }])).rejects.toThrow(/not a child/);
  });
});

describe('dump, restore, ls', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-nar-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function makeTree(root: string): void {
    mkdirSync(path.join(root, 'sub', 'empty'), { recursive: true });
    writeFileSync(path.join(root, 'sub', 'big'), Buffer.alloc(300_000, 3));
    writeFileSync(path.join(root, 'run'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(path.join(root, 'B'), '');
    symlinkSync('sub/big', path.join(root, 'link'));
    symlinkSync('/nowhere', path.join(root, 'dangling'));
  }

  it('dump -> restore -> dump is the identity, modes and links kept', async () => {
    const tree = path.join(dir, 'tree');
    makeTree(tree);
    const nar = await bytesOf(dumpPath(tree));
    const restored = path.join(dir, 'restored');
    await restoreNar(chunks(nar, 65536), restored);
    expect((await bytesOf(dumpPath(restored))).equals(nar)).toBe(true);
    expect(statSync(path.join(restored, 'run')).mode & 0o111).not.toBe(0);
    expect(readlinkSync(path.join(restored, 'dangling'))).toBe('/nowhere');
    expect(readFileSync(path.join(restored, 'sub', 'big')).length).toBe(300_000);
    const entries = await collect(listNar(chunks(nar, 65536)));
    expect(entries.map((e) => e.path)).toEqual(['', 'B', 'dangling', 'link', 'run', 'sub', 'sub/big', 'sub/empty']);
  });

  it('restore refuses an existing target and leaves nothing behind on a refused NAR', async () => {
    await expect(restoreNar(chunks(sample), dir)).rejects.toThrow(/already exists/);
    const bad = new Uint8Array(sample);
    // Rename the third entry to '/': refused after 'a' and 'b' were already written.
    bad.set(encodeNarString(Buffer.from('/')), Buffer.from(sample).indexOf(Buffer.from(encodeNarString(Buffer.from('c')))));
    const target = path.join(dir, 'out');
    await expect(restoreNar(chunks(bad), target)).rejects.toBeInstanceOf(NixError);
    expect(existsSync(target)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('narHash is sha256 in nix32 with the byte count', async () => {
    const result = await narHash([sample]);
    expect(result.narSize).toBe(sample.length);
    expect(result.narHash).toMatch(/^sha256:[0-9a-df-np-sv-z]{52}$/);
  });
});
