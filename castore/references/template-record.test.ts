// The template record: the layout template-record.ts specifies, one encoding per template, a strict
// decoder that refuses everything else (hostile counts, bad hash parts, non-canonical tables, sites
// that do not fit the file), the normalizer's site cap, and restoring a range of a templated file.
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../../test/seeded-random.js';
import { ascii, fill, plantedFile, sameBytes, seededHashParts } from '../../test/references-fixture.js';
import {
  decodeTemplateRecord,
  encodeReferenceSites,
  encodeTemplateRecord,
  HASH_PART_LENGTH,
  MAX_TEMPLATE_SITES,
  normalizeReferences,
  ReferenceNormalizer,
  restoreTemplateRange,
  TEMPLATE_RECORD_FORMAT,
  templateOf,
  templateWindow,
  type TemplateRecord,
} from './index.js';

const refused = (what: RegExp) => expect.objectContaining({ code: 'REFERENCES_INVALID', message: expect.stringMatching(what) });
const [A, B, C] = seededHashParts(7, 3) as [string, string, string];

function header(count: number): Uint8Array {
  const out = new Uint8Array(5);
  out[0] = TEMPLATE_RECORD_FORMAT;
  new DataView(out.buffer).setUint32(1, count, true);
  return out;
}

function join(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return new Uint8Array(Buffer.concat(parts));
}

describe('template records', () => {
  it('encodes as specified: format, u32 count, the hash parts, then the sites encoding', () => {
    const record: TemplateRecord = { hashParts: [B, A], sites: [{ offset: 3, ref: 0 }, { offset: 40, ref: 1 }, { offset: 100, ref: 0 }] };
    const encoded = encodeTemplateRecord(record);
    expect(encoded).toEqual(join(header(2), ascii(B), ascii(A), encodeReferenceSites(record.sites)));
    expect(decodeTemplateRecord(encoded, 200)).toEqual(record);
  });

  it('templateOf keeps only the hash parts used, in order of first use, and renumbers the sites', () => {
    const sites = [{ offset: 0, ref: 2 }, { offset: 50, ref: 0 }, { offset: 90, ref: 2 }];
    expect(templateOf(sites, [A, B, C])).toEqual({ hashParts: [C, A], sites: [{ offset: 0, ref: 0 }, { offset: 50, ref: 1 }, { offset: 90, ref: 0 }] });
    // A hash part listed twice (Nix lists a self-reference) is one entry.
    expect(templateOf([{ offset: 0, ref: 0 }, { offset: 40, ref: 1 }], [A, A]).hashParts).toEqual([A]);
    expect(() => templateOf([{ offset: 0, ref: 3 }], [A])).toThrow(refused(/names hash part 3/));
  });

  it('round-trips normalizations of random files, and restores them', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const hashParts = seededHashParts(seed, 1 + (seed % 7));
      const { template, sites } = plantedFile(seed, 500 + seed * 331, 1 + (seed % 20), hashParts.length);
      const file = fill(template, sites, hashParts);
      const { refs } = normalizeReferences(file, hashParts);
      const record = templateOf(refs, hashParts);
      const encoded = encodeTemplateRecord(record);
      const decoded = decodeTemplateRecord(encoded, file.length);
      expect(decoded).toEqual(record);
      expect(encodeTemplateRecord(decoded)).toEqual(encoded);
    }
  });

  it('refuses hostile and non-canonical records, naming where', () => {
    const sites = encodeReferenceSites([{ offset: 0, ref: 0 }]);
    const good = join(header(1), ascii(A), sites);
    expect(decodeTemplateRecord(good, 32)).toEqual({ hashParts: [A], sites: [{ offset: 0, ref: 0 }] });
    expect(() => decodeTemplateRecord(new Uint8Array(0), 32)).toThrow(refused(/shorter than its header/));
    expect(() => decodeTemplateRecord(join(Uint8Array.of(2), good.subarray(1)), 32)).toThrow(refused(/format 2 is not 1/));
    // A count the bytes cannot hold is refused before anything is allocated for it: the whole u32 range.
    for (const count of [0, 2, 0xffff_ffff, MAX_TEMPLATE_SITES + 1]) {
      expect(() => decodeTemplateRecord(join(header(count), ascii(A), sites), 32)).toThrow(refused(/count of/));
    }
    expect(() => decodeTemplateRecord(join(header(1), ascii(A.slice(0, 31) + 'e'), sites), 32)).toThrow(expect.objectContaining({ code: 'REFERENCES_INVALID', offset: 5 }));
    expect(() => decodeTemplateRecord(join(header(1), ascii(A.slice(0, 31) + '\u00ff'), sites), 32)).toThrow(refused(/outside nix32/));
    // Truncated, trailing bytes, a site that does not fit the file, a ref beyond the table.
    expect(() => decodeTemplateRecord(good.subarray(0, good.length - 1), 32)).toThrow(expect.objectContaining({ code: 'REFERENCES_INVALID' }));
    expect(() => decodeTemplateRecord(join(good, Uint8Array.of(0)), 32)).toThrow(refused(/after the last site/));
    expect(() => decodeTemplateRecord(good, 31)).toThrow(refused(/cannot fit|does not fit/));
    expect(() => decodeTemplateRecord(join(header(1), ascii(A), encodeReferenceSites([{ offset: 0, ref: 1 }])), 32)).toThrow(refused(/names reference 1/));
    // Canonical only: no site, a hash part twice, one unused, out of first-use order.
    expect(() => decodeTemplateRecord(join(header(1), ascii(A), encodeReferenceSites([])), 32)).toThrow(refused(/count of 1 hash parts|no site/));
    const two = encodeReferenceSites([{ offset: 0, ref: 0 }, { offset: 32, ref: 1 }]);
    expect(() => decodeTemplateRecord(join(header(2), ascii(A), ascii(A), two), 64)).toThrow(refused(/listed twice/));
    expect(() => decodeTemplateRecord(join(header(2), ascii(A), ascii(B), encodeReferenceSites([{ offset: 0, ref: 1 }, { offset: 32, ref: 0 }])), 64)).toThrow(refused(/next one/));
    const unused = encodeReferenceSites([{ offset: 0, ref: 0 }, { offset: 32, ref: 0 }, { offset: 64, ref: 0 }]);
    expect(() => decodeTemplateRecord(join(header(2), ascii(A), ascii(B), unused), 96)).toThrow(refused(/no site uses/));
    expect(() => encodeTemplateRecord({ hashParts: [A, B], sites: [{ offset: 0, ref: 0 }] })).toThrow(refused(/no site uses/));
    expect(() => encodeTemplateRecord({ hashParts: [], sites: [] })).toThrow(refused(/no site/));
  });

  it('refuses random garbage and random mutations without throwing anything but REFERENCES_INVALID', () => {
    const random = seededRandom(99);
    const base = encodeTemplateRecord({ hashParts: [A, B], sites: [{ offset: 10, ref: 0 }, { offset: 50, ref: 1 }, { offset: 300, ref: 0 }] });
    for (let round = 0; round < 2000; round++) {
      const bytes = round % 2 === 0 ? Uint8Array.from({ length: random(120) }, () => random(256)) : base.slice();
      if (round % 2 === 1) for (let flips = 1 + random(3); flips > 0; flips--) bytes[random(bytes.length)] = random(256);
      try {
        const decoded = decodeTemplateRecord(bytes, 400);
        expect(encodeTemplateRecord(decoded)).toEqual(bytes); // what decodes is canonical
      } catch (error) {
        expect(error).toMatchObject({ code: 'REFERENCES_INVALID' });
      }
    }
  });

  it('the normalizer stops at maxSites: the rest stays in the bytes, and the file still restores', () => {
    const hashParts = [A];
    const file = ascii(A.repeat(10));
    const capped = normalizeReferences(file, hashParts, { maxSites: 3 });
    expect(capped.refs.map((site) => site.offset)).toEqual([0, 32, 64]);
    expect(Buffer.from(capped.normalized.subarray(96)).toString()).toBe(A.repeat(7));
    const streamed = new ReferenceNormalizer(hashParts, { maxSites: 3 });
    const out = [streamed.push(file.subarray(0, 50)), streamed.push(file.subarray(50)), streamed.end()];
    expect(sameBytes(new Uint8Array(Buffer.concat(out)), capped.normalized)).toBe(true);
    expect(streamed.refs).toEqual(capped.refs);
  });
});

describe('restoring a range of a templated file', () => {
  it('widens the window to whole sites at both ends', () => {
    const sites = [{ offset: 10, ref: 0 }, { offset: 100, ref: 0 }];
    expect(templateWindow(sites, 20, 90)).toEqual({ offset: 10, length: 122, sites: [{ offset: 0, ref: 0 }, { offset: 90, ref: 0 }], skip: 10 });
    expect(templateWindow(sites, 42, 58)).toEqual({ offset: 42, length: 58, sites: [], skip: 0 });
    expect(templateWindow(sites, 0, 5)).toEqual({ offset: 0, length: 5, sites: [], skip: 0 });
  });

  it('restores every range of a random file exactly, from a reader that answers in odd chunks', async () => {
    const random = seededRandom(5);
    const hashParts = seededHashParts(5, 4);
    const { template, sites } = plantedFile(5, 3000, 40, 4);
    const file = fill(template, sites, hashParts);
    const { normalized, refs } = normalizeReferences(file, hashParts);
    const record = templateOf(refs, hashParts);
    const read = async function* (offset: number, length: number): AsyncGenerator<Uint8Array> {
      for (let at = offset; at < offset + length; ) {
        const step = Math.min(1 + random(97), offset + length - at);
        yield normalized.subarray(at, at + step);
        at += step;
      }
    };
    for (let round = 0; round < 300; round++) {
      const offset = random(file.length);
      const length = random(file.length - offset + 1);
      const restored = await collect(restoreTemplateRange(record, offset, length, read));
      expect(sameBytes(restored, file.subarray(offset, offset + length))).toBe(true);
    }
  });

  it('refuses normalized bytes that are not the placeholder at a site', async () => {
    const file = ascii(`xx${A}yy`);
    const { normalized, refs } = normalizeReferences(file, [A]);
    normalized[5] = 0x41;
    const read = async function* (offset: number, length: number): AsyncGenerator<Uint8Array> {
      yield normalized.subarray(offset, offset + length);
    };
    await expect(collect(restoreTemplateRange(templateOf(refs, [A]), 0, file.length, read))).rejects.toMatchObject({ code: 'REFERENCES_INVALID', offset: 5 });
    expect(HASH_PART_LENGTH).toBe(32);
  });
});
