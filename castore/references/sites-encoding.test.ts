// The stored form of a site list: the bytes the spec in sites-encoding.ts says, one encoding per
// list, and a decoder that refuses everything else (truncation, lying counts, trailing bytes,
// non-minimal or oversized varints) with REFERENCES_INVALID.
import { describe, expect, it } from 'vitest';
import { seededBytes, seededRandom } from '../../test/seeded-random.js';
import { CastoreError } from '../errors.js';
import { decodeReferenceSites, encodeReferenceSites, REFERENCE_SITES_FORMAT, type ReferenceSite } from './index.js';

const refused = (what: RegExp) => expect.objectContaining({ code: 'REFERENCES_INVALID', message: expect.stringMatching(what) });
const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);

function randomSites(seed: number): ReferenceSite[] {
  const random = seededRandom(seed);
  const sites: ReferenceSite[] = [];
  let end = 0;
  for (let i = random(50); i > 0; i--) {
    // Gaps of every varint length, from back-to-back sites to gigabytes apart.
    const gap = [0, random(128), random(20_000), random(2 ** 30) * 7][random(4)]!;
    sites.push({ offset: end + gap, ref: random(4) === 0 ? random(100_000) : random(40) });
    end = sites.at(-1)!.offset + 32;
  }
  return sites;
}

describe('encodeReferenceSites / decodeReferenceSites', () => {
  it('encodes as specified', () => {
    expect(REFERENCE_SITES_FORMAT).toBe(1);
    expect(encodeReferenceSites([])).toEqual(bytes(1, 0));
    const sites = [
      { offset: 5, ref: 0 },
      { offset: 37, ref: 2 }, // right after the first: gap 0
      { offset: 300, ref: 130 }, // gap 300 - 69 = 231 = 0xe7 0x01; ref 130 = 0x82 0x01
    ];
    const encoded = bytes(1, 3, 5, 0, 0, 2, 0xe7, 0x01, 0x82, 0x01);
    expect(encodeReferenceSites(sites)).toEqual(encoded);
    expect(decodeReferenceSites(encoded)).toEqual(sites);
  });

  it('round-trips random lists, one encoding per list', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const sites = randomSites(seed);
      const encoded = encodeReferenceSites(sites);
      expect(decodeReferenceSites(encoded)).toEqual(sites);
      expect(encodeReferenceSites(decodeReferenceSites(encoded))).toEqual(encoded);
    }
  });

  it('is compact: about 2 bytes a site for a typical binary', () => {
    const sites = Array.from({ length: 1000 }, (_, i) => ({ offset: i * 100, ref: i % 20 }));
    expect(encodeReferenceSites(sites).length).toBe(1 + 2 + 1000 * 2);
  });

  it('refuses to encode sites that are unsorted or overlap', () => {
    expect(() => encodeReferenceSites([{ offset: 10, ref: 0 }, { offset: 20, ref: 0 }])).toThrow(refused(/sorted and not overlap/));
    expect(() => encodeReferenceSites([{ offset: -5, ref: 0 }])).toThrow(refused(/non-negative/));
  });

  it('refuses another format, and an empty input', () => {
    expect(() => decodeReferenceSites(bytes())).toThrow(refused(/empty/));
    for (const format of [0, 2, 255]) expect(() => decodeReferenceSites(bytes(format, 0))).toThrow(refused(new RegExp(`format ${format} is not 1`)));
  });

  it('refuses every truncation of a valid encoding', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const encoded = encodeReferenceSites(randomSites(seed * 7));
      for (let n = 0; n < encoded.length; n++) {
        expect(() => decodeReferenceSites(encoded.subarray(0, n)), `seed ${seed}, ${n} of ${encoded.length}`).toThrow(
          expect.objectContaining({ code: 'REFERENCES_INVALID' }),
        );
      }
    }
  });

  it('refuses trailing bytes', () => {
    expect(() => decodeReferenceSites(bytes(1, 0, 0))).toThrow(refused(/1 bytes after the last site/));
    expect(() => decodeReferenceSites(bytes(1, 1, 5, 0, 7, 7))).toThrow(expect.objectContaining({ code: 'REFERENCES_INVALID', offset: 4 }));
  });

  it('refuses a count the bytes left cannot hold, before allocating for it', () => {
    // 2^49 sites claimed in 7 bytes, then nothing.
    expect(() => decodeReferenceSites(bytes(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01))).toThrow(refused(/count of 562949953421312 sites does not fit/));
    expect(() => decodeReferenceSites(bytes(1, 2, 0, 0, 0))).toThrow(refused(/does not fit in the 3 bytes left/));
    // A count that fits the bytes but not the file.
    expect(() => decodeReferenceSites(bytes(1, 2, 0, 0, 0, 0), { length: 63 })).toThrow(refused(/2 sites cannot fit in a file of 63 bytes/));
  });

  it('refuses varints that are not minimal, too long, or above 2^53 - 1', () => {
    expect(() => decodeReferenceSites(bytes(1, 0x80, 0x00))).toThrow(refused(/count is not minimally encoded/));
    expect(() => decodeReferenceSites(bytes(1, 1, 0x85, 0x00, 0))).toThrow(refused(/gap is not minimally encoded/));
    expect(() => decodeReferenceSites(bytes(1, 1, 0, 0x80, 0x80, 0x00))).toThrow(refused(/ref is not minimally encoded/));
    const nine = [0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    expect(() => decodeReferenceSites(bytes(1, 1, ...nine, 0, ...new Array<number>(20).fill(0)))).toThrow(refused(/longer than 8 bytes/));
    // 2^53 exactly, in 8 bytes (the 8th carries bits 49–55).
    const twoTo53 = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
    expect(() => decodeReferenceSites(bytes(1, 1, ...twoTo53, 0))).toThrow(refused(/above 2\^53 - 1/));
    // 2^53 - 1 as a gap is a number, but the site's end is not.
    const max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
    expect(() => decodeReferenceSites(bytes(1, 1, ...max, 0))).toThrow(refused(/offset is above 2\^53 - 1/));
  });

  it('refuses sites outside the file, or naming refs it does not have, when told', () => {
    const encoded = encodeReferenceSites([{ offset: 0, ref: 0 }, { offset: 100, ref: 4 }]);
    expect(decodeReferenceSites(encoded, { length: 132, refCount: 5 })).toHaveLength(2);
    expect(() => decodeReferenceSites(encoded, { length: 131, refCount: 5 })).toThrow(refused(/does not fit in 131 bytes/));
    expect(() => decodeReferenceSites(encoded, { length: 132, refCount: 4 })).toThrow(refused(/names reference 4, not one of the 4/));
  });

  it('on random bytes, either refuses with REFERENCES_INVALID or returns what encodes back to them', () => {
    let decoded = 0;
    for (let seed = 1; seed <= 5000; seed++) {
      const input = seededBytes(seed, 1 + (seed % 24));
      input[0] = 1;
      if (seed % 2 === 1) {
        // One-byte varints and the count that matches them, so half of the inputs decode.
        for (let i = 1; i < input.length; i++) input[i]! &= 0x7f;
        input[1] = (input.length - 2) / 2;
      }
      try {
        const sites = decodeReferenceSites(input);
        decoded++;
        expect(encodeReferenceSites(sites)).toEqual(input);
      } catch (error) {
        expect(error).toBeInstanceOf(CastoreError);
        expect((error as CastoreError).code).toBe('REFERENCES_INVALID');
      }
    }
    expect(decoded).toBeGreaterThan(1000);
  });
});
