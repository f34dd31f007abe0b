// Reference normalization: finds exactly the planted hash parts, whatever surrounds them and however
// the file is chunked; restores exactly; and the same binary with another reference set of the same
// shape normalizes to the same bytes (the point of it all).
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../test/seeded-random.js';
import {
  HASH_PART_LENGTH,
  HashPartSet,
  normalizeReferences,
  REFERENCE_PLACEHOLDER,
  ReferenceNormalizer,
  restoreReferences,
  type ReferenceSite,
} from './index.js';
import { ascii, concat, fill, plantedFile, sameBytes, seededHashParts } from '../../test/references-fixture.js';

const PLACEHOLDER_TEXT = 'e'.repeat(32);

/** Normalizes `bytes` fed in chunks whose sizes `nextSize` picks. */
function normalizeInChunks(bytes: Uint8Array, hashParts: readonly string[], nextSize: () => number): { normalized: Uint8Array; refs: ReferenceSite[] } {
  const normalizer = new ReferenceNormalizer(hashParts);
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = Math.max(1, nextSize());
    out.push(normalizer.push(bytes.subarray(at, at + size)));
    at += size;
  }
  out.push(normalizer.end());
  expect(normalizer.length).toBe(bytes.length);
  return { normalized: concat(out), refs: normalizer.refs };
}

describe('normalizeReferences', () => {
  it('finds exactly the planted hash parts in random data, replaces them, and restores the file', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const hashParts = seededHashParts(seed, 1 + (seed % 9));
      const { template, sites } = plantedFile(seed, 1000 + seed * 997, seed % 30, hashParts.length);
      const file = fill(template, sites, hashParts);
      const before = file.slice();
      const { normalized, refs } = normalizeReferences(file, hashParts);
      expect(refs, `seed ${seed}`).toEqual(sites);
      expect(sameBytes(file, before)).toBe(true); // the input is not changed
      expect(normalized.length).toBe(file.length);
      const expected = file.slice();
      for (const { offset } of sites) expected.set(REFERENCE_PLACEHOLDER, offset);
      expect(sameBytes(normalized, expected), `seed ${seed}`).toBe(true);
      expect(sameBytes(restoreReferences(normalized, refs, hashParts), file)).toBe(true);
    }
  });

  it('changes neither a Buffer it normalizes nor one it restores', () => {
    const [a] = seededHashParts(2, 1) as [string];
    const file = Buffer.from(`#!/nix/store/${a}-node/bin/node`);
    const { normalized, refs } = normalizeReferences(file, [a]);
    expect(file.toString()).toBe(`#!/nix/store/${a}-node/bin/node`);
    const normalizedBuffer = Buffer.from(normalized);
    expect(Buffer.from(restoreReferences(normalizedBuffer, refs, [a])).toString()).toBe(file.toString());
    expect(normalizedBuffer.toString()).toBe(`#!/nix/store/${'e'.repeat(32)}-node/bin/node`);
  });

  it('uses a placeholder of 32 bytes outside nix32, so it is never a hash part', () => {
    expect(REFERENCE_PLACEHOLDER.length).toBe(HASH_PART_LENGTH);
    expect(() => new HashPartSet([PLACEHOLDER_TEXT])).toThrow(expect.objectContaining({ code: 'REFERENCES_INVALID' }));
  });

  it('finds hash parts inside nix32 runs, back to back, at the very start and end, and after a false start', () => {
    const [a, b, c] = seededHashParts(7, 3) as [string, string, string];
    const text = [
      a, // offset 0
      b, // 32: back to back
      'xyz', // nix32 characters run straight on
      c, // 67
      '/nix/store/',
      a.slice(0, 20), // a false start: a's prefix, then a whole (overlapping candidate windows)
      a, // 98 + 20 = 129... computed below
      '-name\0',
      b.slice(1), // b missing its first byte: not a site
      '\n',
      c, // at the very end
    ].join('');
    const bytes = ascii(text);
    const expected: ReferenceSite[] = [
      { offset: 0, ref: 0 },
      { offset: 32, ref: 1 },
      { offset: 67, ref: 2 },
      { offset: text.indexOf(a, 99), ref: 0 },
      { offset: text.length - 32, ref: 2 },
    ];
    expect(expected[3]!.offset).toBe(67 + 32 + 11 + 20);
    const { normalized, refs } = normalizeReferences(bytes, [a, b, c]);
    expect(refs).toEqual(expected);
    expect(new TextDecoder().decode(normalized)).toBe(
      [PLACEHOLDER_TEXT, PLACEHOLDER_TEXT, 'xyz', PLACEHOLDER_TEXT, '/nix/store/', a.slice(0, 20), PLACEHOLDER_TEXT, '-name\0', b.slice(1), '\n', PLACEHOLDER_TEXT].join(''),
    );
    expect(sameBytes(restoreReferences(normalized, refs, [a, b, c]), bytes)).toBe(true);
  });

  it('takes the leftmost of two overlapping hash parts, and still restores exactly', () => {
    const [a, tail] = seededHashParts(11, 2) as [string, string];
    const b = a.slice(16) + tail.slice(0, 16); // b starts with a's last 16 characters
    const bytes = ascii(`q${a}${b.slice(16)}q`); // a at 1, b at 17: they overlap
    const { normalized, refs } = normalizeReferences(bytes, [b, a]);
    expect(refs).toEqual([{ offset: 1, ref: 1 }]);
    expect(new TextDecoder().decode(normalized)).toBe(`q${PLACEHOLDER_TEXT}${b.slice(16)}q`);
    expect(sameBytes(restoreReferences(normalized, refs, [b, a]), bytes)).toBe(true);
  });

  it('gives a hash part listed twice its lowest index', () => {
    const [self, dep] = seededHashParts(3, 2) as [string, string];
    const { refs } = normalizeReferences(ascii(`${dep}:${self}`), [self, dep, self]);
    expect(refs).toEqual([{ offset: 0, ref: 1 }, { offset: 33, ref: 0 }]);
  });

  it('restores a file that holds the placeholder naturally, exactly', () => {
    const [a] = seededHashParts(5, 1) as [string];
    // What nuke-refs leaves, a real reference, and the placeholder again with no store path around it.
    const text = `/nix/store/${PLACEHOLDER_TEXT}-glibc/lib:/nix/store/${a}-x/lib\0${PLACEHOLDER_TEXT}${PLACEHOLDER_TEXT.slice(0, 9)}`;
    const bytes = ascii(text);
    const { normalized, refs } = normalizeReferences(bytes, [a]);
    expect(refs).toEqual([{ offset: text.indexOf(a), ref: 0 }]);
    const restored = restoreReferences(normalized, refs, [a]);
    expect(new TextDecoder().decode(restored)).toBe(text);
    // With no references at all, normalization is the identity, placeholder or not.
    expect(normalizeReferences(bytes, [])).toEqual({ normalized: bytes, refs: [] });
  });

  it('normalizes the same binary with two reference sets of the same shape to the same bytes', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const refCount = 1 + (seed % 12);
      const before = seededHashParts(seed * 2, refCount);
      const after = seededHashParts(seed * 2 + 1, refCount);
      const { template, sites } = plantedFile(seed + 100, 5000 + seed * 313, 3 + (seed % 40), refCount);
      const old = normalizeReferences(fill(template, sites, before), before);
      const rebuilt = normalizeReferences(fill(template, sites, after), after);
      expect(sameBytes(rebuilt.normalized, old.normalized), `seed ${seed}`).toBe(true);
      expect(rebuilt.refs).toEqual(old.refs);
      // Each restores to its own real file.
      expect(sameBytes(restoreReferences(old.normalized, old.refs, after), fill(template, sites, after))).toBe(true);
      expect(sameBytes(restoreReferences(rebuilt.normalized, rebuilt.refs, before), fill(template, sites, before))).toBe(true);
    }
  });

  it('refuses hash parts that are not 32 nix32 characters, before reading the file', () => {
    const [good] = seededHashParts(9, 1) as [string];
    const bad: unknown[] = [
      good.slice(1), // 31
      `${good}0`, // 33
      `${good.slice(0, 31)}e`, // e is not nix32
      good.toUpperCase(),
      `${good.slice(0, 31)}\u0100`,
      `${good.slice(0, 30)}é`,
      '',
      42,
      null,
    ];
    for (const hashPart of bad) {
      expect(() => normalizeReferences(new Uint8Array(64), [good, hashPart as string]), String(hashPart)).toThrow(
        expect.objectContaining({ code: 'REFERENCES_INVALID', message: expect.stringContaining('hash part 1') }),
      );
      expect(() => new ReferenceNormalizer([hashPart as string])).toThrow(expect.objectContaining({ code: 'REFERENCES_INVALID' }));
    }
  });
});

describe('ReferenceNormalizer (chunks)', () => {
  it('gives the one-shot result whatever the chunk sizes', () => {
    for (let seed = 1; seed <= 12; seed++) {
      const hashParts = seededHashParts(seed + 50, 5);
      const { template, sites } = plantedFile(seed + 50, 20_000, 200, hashParts.length);
      const file = fill(template, sites, hashParts);
      const whole = normalizeReferences(file, hashParts);
      const random = seededRandom(seed);
      for (const nextSize of [() => 1, () => 31, () => 32, () => 33, () => 4096, () => random(100), () => random(5000)]) {
        const chunked = normalizeInChunks(file, hashParts, nextSize);
        expect(chunked.refs).toEqual(whole.refs);
        expect(sameBytes(chunked.normalized, whole.normalized)).toBe(true);
      }
    }
  });

  it('finds a hash part cut by a chunk boundary at every one of its bytes', () => {
    const [a, b] = seededHashParts(21, 2) as [string, string];
    const file = ascii(`${'0'.repeat(40)}${a}${'z'.repeat(5)}${b}!`);
    const expected = [{ offset: 40, ref: 0 }, { offset: 77, ref: 1 }];
    for (let cut = 1; cut < file.length; cut++) {
      for (const second of [1, 7, 32, file.length]) {
        let calls = 0;
        const chunked = normalizeInChunks(file, [a, b], () => (calls++ === 0 ? cut : second));
        expect(chunked.refs, `cut ${cut}/${second}`).toEqual(expected);
        expect(sameBytes(chunked.normalized, normalizeReferences(file, [a, b]).normalized)).toBe(true);
      }
    }
  });

  it('holds back at most 31 bytes, and refuses a push after end', () => {
    const normalizer = new ReferenceNormalizer(seededHashParts(1, 1));
    expect(normalizer.push(new Uint8Array(10)).length).toBe(0);
    expect(normalizer.push(new Uint8Array(100)).length).toBeGreaterThanOrEqual(110 - 31);
    expect(normalizer.push(new Uint8Array(0)).length).toBe(0);
    const rest = normalizer.end();
    expect(rest.length).toBeLessThanOrEqual(31);
    expect(normalizer.length).toBe(110);
    expect(() => normalizer.push(new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'INGEST_ABORTED' }));
    expect(() => normalizer.end()).toThrow(expect.objectContaining({ code: 'INGEST_ABORTED' }));
  });
});
