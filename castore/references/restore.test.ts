// Restoring refuses every site list that does not fit the normalized bytes, before writing a byte
// (or, for the placeholder check, as soon as the chunk that holds the site arrives).
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../test/seeded-random.js';
import { checkReferenceSites, normalizeReferences, ReferenceRestorer, restoreReferences, restoreReferencesInPlace, type ReferenceSite } from './index.js';
import { concat, fill, plantedFile, sameBytes, seededHashParts } from '../../test/references-fixture.js';

const refused = (what: RegExp | string) => expect.objectContaining({ code: 'REFERENCES_INVALID', message: expect.stringMatching(what) });

describe('restoreReferences', () => {
  const hashParts = seededHashParts(31, 3);
  const { template, sites } = plantedFile(31, 4096, 10, hashParts.length, 1);
  const file = fill(template, sites, hashParts);
  const { normalized, refs } = normalizeReferences(file, hashParts);

  it('restores, and restores the same bytes with chunks of any size', () => {
    expect(refs).toEqual(sites);
    expect(sameBytes(restoreReferences(normalized, refs, hashParts), file)).toBe(true);
    const random = seededRandom(4);
    for (const size of [() => 1, () => 31, () => 33, () => 1 + random(200)]) {
      const restorer = new ReferenceRestorer(refs, hashParts, normalized.length);
      const out: Uint8Array[] = [];
      for (let at = 0; at < normalized.length; ) {
        const n = size();
        out.push(restorer.push(normalized.subarray(at, at + n)));
        at += n;
      }
      restorer.end();
      expect(sameBytes(concat(out), file)).toBe(true);
    }
    expect(sameBytes(normalized, normalizeReferences(file, hashParts).normalized)).toBe(true); // not changed by restoring
  });

  it('restores in place into the caller\'s buffer, refusing a site that is not the placeholder', () => {
    const own = new Uint8Array(normalized);
    const out = restoreReferencesInPlace(own, refs, hashParts);
    expect(out).toBe(own);
    expect(sameBytes(own, file)).toBe(true);
    const damaged = new Uint8Array(normalized);
    damaged[refs[3]!.offset + 5] = 0x30;
    expect(() => restoreReferencesInPlace(damaged, refs, hashParts)).toThrow(refused(/not the placeholder/));
  });

  it('refuses sites out of range, unsorted, overlapping, or not integers', () => {
    const last = normalized.length - 32;
    const cases: [string, unknown[], RegExp][] = [
      ['past the end', [{ offset: last + 1, ref: 0 }], /does not fit in 4096 bytes/],
      ['far past the end', [{ offset: 2 ** 52, ref: 0 }], /does not fit/],
      ['negative', [{ offset: -1, ref: 0 }], /not a non-negative integer/],
      ['fractional', [{ offset: 1.5, ref: 0 }], /not a non-negative integer/],
      ['NaN', [{ offset: Number.NaN, ref: 0 }], /not a non-negative integer/],
      ['a string', [{ offset: '0', ref: 0 }], /not a non-negative integer/],
      ['unsorted', [refs[1], refs[0]], /sorted and not overlap/],
      ['overlapping', [{ offset: 0, ref: 0 }, { offset: 31, ref: 0 }], /sorted and not overlap/],
      ['duplicate', [refs[0], refs[0]], /sorted and not overlap/],
      ['not an object', [null], /not an object/],
    ];
    for (const [what, bad, message] of cases) {
      expect(() => restoreReferences(normalized, bad as ReferenceSite[], hashParts), what).toThrow(refused(message));
    }
    expect(() => restoreReferences(normalized, 'nope' as unknown as ReferenceSite[], hashParts)).toThrow(refused(/not a list/));
  });

  it('refuses a ref index out of range', () => {
    for (const ref of [3, -1, 0.5, 2 ** 53, '0', undefined]) {
      const bad = [{ offset: refs[0]!.offset, ref }] as ReferenceSite[];
      expect(() => restoreReferences(normalized, bad, hashParts), String(ref)).toThrow(refused(/not one of the 3 hash parts/));
    }
  });

  it('refuses more sites than length / 32 before reading any of them', () => {
    // 129 "sites" that are not even objects: the count alone is refused.
    const many = new Array<ReferenceSite>(4096 / 32 + 1);
    expect(() => restoreReferences(normalized, many, hashParts)).toThrow(refused(/129 reference sites cannot fit in 4096 bytes/));
    expect(() => restoreReferences(new Uint8Array(31), [{ offset: 0, ref: 0 }], hashParts)).toThrow(refused(/cannot fit in 31 bytes/));
  });

  it('refuses a hash part that is not 32 nix32 characters', () => {
    for (const bad of [hashParts[0]!.slice(1), `${hashParts[0]!.slice(1)}t`, 'E'.repeat(32)]) {
      expect(() => restoreReferences(normalized, refs, [bad, hashParts[1]!, hashParts[2]!])).toThrow(refused(/hash part 0/));
    }
  });

  it('refuses a site whose bytes are not the placeholder, at the byte that differs, in any chunk', () => {
    for (const k of [0, 17, 31]) {
      const tampered = normalized.slice();
      const at = refs[2]!.offset + k;
      tampered[at] = 0x30;
      expect(() => restoreReferences(tampered, refs, hashParts), `byte ${k}`).toThrow(
        expect.objectContaining({ code: 'REFERENCES_INVALID', offset: at, message: expect.stringContaining('not the placeholder') }),
      );
      // Streamed with the site cut in two: the refusal comes with the chunk that holds the byte.
      const restorer = new ReferenceRestorer(refs, hashParts, tampered.length);
      const cut = refs[2]!.offset + 16;
      if (k < 16) expect(() => restorer.push(tampered.subarray(0, cut))).toThrow(refused(/not the placeholder/));
      else {
        restorer.push(tampered.subarray(0, cut));
        expect(() => restorer.push(tampered.subarray(cut))).toThrow(refused(/not the placeholder/));
      }
      expect(() => restorer.push(new Uint8Array(0))).toThrow(refused(/after a refusal/));
    }
    // The real file is not a normalized one: its sites hold hash parts.
    expect(() => restoreReferences(file, refs, hashParts)).toThrow(refused(/not the placeholder/));
  });

  it('refuses a normalized file longer or shorter than declared', () => {
    const longer = new ReferenceRestorer([], hashParts, 100);
    expect(() => longer.push(normalized.subarray(0, 101))).toThrow(refused(/longer than its declared 100 bytes/));
    const shorter = new ReferenceRestorer([], hashParts, 100);
    shorter.push(new Uint8Array(99));
    expect(() => shorter.end()).toThrow(refused(/ended at 99 bytes, 100 were declared/));
    expect(() => new ReferenceRestorer([], hashParts, -1)).toThrow(refused(/cannot be/));
  });

  it('checks a site list without a file (as the encoder does)', () => {
    expect(() => checkReferenceSites([{ offset: 0, ref: 0 }, { offset: 32, ref: 9 }])).not.toThrow();
    expect(() => checkReferenceSites([{ offset: 32, ref: 0 }, { offset: 0, ref: 0 }])).toThrow(refused(/sorted/));
  });
});
