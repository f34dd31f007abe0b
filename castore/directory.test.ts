import { describe, expect, it } from 'vitest';
import { CastoreError } from './errors.js';
import { decodeDirectory, directoryId, encodeDirectory } from './directory.js';
import type { Digest, Entry } from './node.js';
import { seededRandom } from '../test/seeded-random.js';

const digestA = 'a'.repeat(64) as Digest;
const digestB = 'b'.repeat(64) as Digest;

const entries: Entry[] = [
  { name: 'zeta', type: 'file', digest: digestA, size: 10, executable: false },
  { name: 'bin', type: 'directory', digest: digestB, size: 3 },
  { name: 'link', type: 'symlink', target: '../lib/x' },
  { name: 'run', type: 'file', digest: digestA, size: 10, executable: true },
  { name: 'Émoji-✓', type: 'file', digest: digestB, size: 0, executable: false },
];

function expectCode(fn: () => unknown, code: string): CastoreError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CastoreError);
    expect((error as CastoreError).code).toBe(code);
    return error as CastoreError;
  }
  throw new Error('expected a CastoreError');
}

describe('directory encoding', () => {
  it('round-trips and sorts entries by name bytes', () => {
    const encoding = encodeDirectory(entries);
    const decoded = decodeDirectory(encoding);
    expect(decoded.map((e) => e.name)).toEqual(['bin', 'link', 'run', 'zeta', 'Émoji-✓']);
    expect(encodeDirectory(decoded)).toEqual(encoding);
  });

  it('gives the same id whatever the input order', () => {
    const reversed = [...entries].reverse();
    expect(directoryId(encodeDirectory(reversed))).toBe(directoryId(encodeDirectory(entries)));
  });

  it('refuses invalid and duplicate names when encoding', () => {
    for (const name of ['', '.', '..', 'a/b', 'nul\0']) {
      expectCode(() => encodeDirectory([{ name, type: 'symlink', target: 'x' }]), 'DIRECTORY_NOT_CANONICAL');
    }
    expectCode(
      () =>
        encodeDirectory([
          { name: 'x', type: 'symlink', target: 'a' },
          { name: 'x', type: 'symlink', target: 'b' },
        ]),
      'DIRECTORY_NOT_CANONICAL',
    );
  });

  it('refuses non-canonical encodings with an offset', () => {
    const good = Buffer.from(encodeDirectory(entries));
    // Swap the first two entries' order by re-encoding by hand: build unsorted bytes.
    const one = Buffer.from(encodeDirectory([entries[0]!])).subarray(5);
    const two = Buffer.from(encodeDirectory([entries[1]!])).subarray(5);
    const header = Buffer.from([1, 2, 0, 0, 0]);
    const unsorted = Buffer.concat([header, one, two]);
    const error = expectCode(() => decodeDirectory(unsorted), 'DIRECTORY_NOT_CANONICAL');
    expect(error.offset).toBe(5 + one.length);

    expectCode(() => decodeDirectory(Buffer.concat([good, Buffer.from([0])])), 'DIRECTORY_NOT_CANONICAL');
    for (let cut = 0; cut < good.length; cut++) expectCode(() => decodeDirectory(good.subarray(0, cut)), 'DIRECTORY_NOT_CANONICAL');
    const badVersion = Buffer.from(good);
    badVersion[0] = 2;
    expectCode(() => decodeDirectory(badVersion), 'DIRECTORY_NOT_CANONICAL');
    const badKind = Buffer.from(good);
    badKind[5] = 9;
    expectCode(() => decodeDirectory(badKind), 'DIRECTORY_NOT_CANONICAL');
  });

  it('never throws anything but CastoreError on random mutations', () => {
    const good = Buffer.from(encodeDirectory(entries));
    const random = seededRandom(42);
    for (let i = 0; i < 2000; i++) {
      const mutated = Buffer.from(good);
      const at = random(mutated.length);
      mutated[at] = mutated[at]! ^ (1 << random(8));
      try {
        const decoded = decodeDirectory(mutated);
        // Whatever decodes must be canonical: re-encoding gives the same bytes.
        expect(Buffer.from(encodeDirectory(decoded))).toEqual(mutated);
      } catch (error) {
        expect(error).toBeInstanceOf(CastoreError);
      }
    }
  });
});
