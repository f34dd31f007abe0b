import { hash as packageBlake3 } from 'blake3';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CastoreError } from '../errors.js';
import { SMALL_INPUT_MAX } from './hash.js';
import { BlobVerifier, blake3, blake3Hasher, blake3Hex, GROUP_SIZE, OutboardBuilder, outboardSize, verifyOutboard, verifyRange } from './index.js';
import { seededRandom } from '../../test/seeded-random.js';

/** The official BLAKE3 test vectors (test_vectors.json, hash mode, first 32 bytes): input byte i = i % 251. */
const OFFICIAL_VECTORS: Record<number, string> = {
  0: 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
  1: '2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213',
  1023: '10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11',
  1024: '42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7',
  1025: 'd00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444',
  2048: 'e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a',
  2049: '5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030',
  3072: 'b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2',
  31744: '62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47',
  102400: 'bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085',
};

function vectorInput(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = i % 251;
  return bytes;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** Feeds `bytes` to `sink` in random-sized pieces at random (often unaligned) offsets. */
function feedInPieces(bytes: Uint8Array, random: (n: number) => number, sink: (piece: Uint8Array) => void): void {
  for (let offset = 0; offset < bytes.length; ) {
    const size = Math.min(bytes.length - offset, random(3) === 0 ? random(40000) : random(5000));
    sink(bytes.subarray(offset, offset + size));
    offset += size;
  }
}

function build(bytes: Uint8Array): { root: Uint8Array; outboard: Uint8Array } {
  const builder = new OutboardBuilder();
  builder.update(bytes);
  return builder.finish();
}

function expectCastoreError(body: () => unknown, code: string, offset?: number): void {
  try {
    body();
  } catch (error) {
    expect(error).toBeInstanceOf(CastoreError);
    expect((error as CastoreError).code).toBe(code);
    if (offset !== undefined) expect((error as CastoreError).offset).toBe(offset);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('BLAKE3 (ours, TypeScript)', () => {
  for (const [length, expected] of Object.entries(OFFICIAL_VECTORS)) {
    it(`matches the official vector and the blake3 package for ${length} bytes`, () => {
      const input = vectorInput(Number(length));
      expect(hex(packageBlake3(input) as Uint8Array)).toBe(expected);
      expect(hex(build(input).root)).toBe(expected);
      // The whole-input hash, also on a view at an odd offset of a larger buffer, and the incremental one.
      expect(hex(blake3(input))).toBe(expected);
      const padded = new Uint8Array(input.length + 7);
      padded.set(input, 3);
      expect(hex(blake3(padded.subarray(3, 3 + input.length)))).toBe(expected);
      const hasher = blake3Hasher();
      hasher.update(input.subarray(0, 1000));
      hasher.update(input.subarray(1000));
      expect(hex(hasher.digest())).toBe(expected);
    });
  }

  it('hashes like the blake3 package on both sides of the TypeScript/native boundary', () => {
    for (const size of [SMALL_INPUT_MAX - 1, SMALL_INPUT_MAX, SMALL_INPUT_MAX + 1, GROUP_SIZE, GROUP_SIZE + 1]) {
      const bytes = randomBytes(size + 1).subarray(1);
      expect(hex(blake3(bytes)), `size ${size}`).toBe(hex(packageBlake3(bytes) as Uint8Array));
    }
  });

  it('blake3Hex is the hash of the UTF-8 text, at every chunk boundary and past the TypeScript/native boundary', () => {
    const reference = (text: string) => hex(packageBlake3(Buffer.from(text, 'utf8')) as Uint8Array);
    const alphabet = ['a', '\u00e9', '\u20ac', '\u{1f600}', '"', '\n'];
    for (let length = 0; length <= 4200; length += length < 1100 ? 1 : 7) {
      let text = '';
      for (let i = 0; i < length; i++) text += alphabet[(i * 7 + length) % alphabet.length];
      expect(blake3Hex(text), `length ${length}`).toBe(reference(text));
    }
    for (const size of [SMALL_INPUT_MAX / 3, SMALL_INPUT_MAX / 3 + 1, SMALL_INPUT_MAX, SMALL_INPUT_MAX + 1, 64 * 1024, 300_000]) {
      const text = randomBytes(size).toString('latin1');
      expect(blake3Hex(text), `size ${size}`).toBe(reference(text));
    }
  });

  it('computes the root the whole-input hash computes, for sizes around group boundaries in any chunking', () => {
    const random = seededRandom(7);
    for (const size of [0, 1, 1023, 16383, 16384, 16385, 32768, 32769, 3 * GROUP_SIZE + 5, 17 * GROUP_SIZE, (1 << 20) + 3]) {
      const bytes = vectorInput(size + 3).subarray(3); // unaligned on purpose
      const builder = new OutboardBuilder();
      feedInPieces(bytes, random, (piece) => builder.update(piece));
      const { root, outboard } = builder.finish();
      expect(hex(root), `size ${size}`).toBe(hex(blake3(bytes)));
      expect(outboard.length).toBe(outboardSize(size));
    }
  });
});

describe('outboards and verified streaming', () => {
  const size = 9 * GROUP_SIZE + 1234;
  const data = vectorInput(size);
  const { root, outboard } = build(data);

  it('accepts a matching outboard and refuses a flipped bit, naming the node', () => {
    expect(verifyOutboard(root, size, outboard).groups).toBe(10);
    for (const node of [0, 3, 8]) {
      const bad = new Uint8Array(outboard);
      bad[node * 64 + 17]! ^= 0x10;
      expectCastoreError(() => verifyOutboard(root, size, bad), 'BLAKE3_OUTBOARD_MISMATCH', node * 64);
    }
    expectCastoreError(() => verifyOutboard(root, size, outboard.subarray(64)), 'BLAKE3_BAD_SIZE');
    expectCastoreError(() => verifyOutboard(root, size + GROUP_SIZE, outboard), 'BLAKE3_BAD_SIZE');
  });

  it('streams good data through in any chunking', () => {
    const random = seededRandom(99);
    const verifier = new BlobVerifier(root, size, outboard);
    const out: Uint8Array[] = [];
    feedInPieces(data, random, (piece) => out.push(...verifier.push(piece)));
    verifier.finish();
    expect(Buffer.concat(out).equals(Buffer.from(data))).toBe(true);
    expect(verifier.verifiedBytes).toBe(size);
  });

  it('detects a flipped bit at its group, before accepting any later byte', () => {
    for (const flipAt of [0, 5 * GROUP_SIZE + 77, size - 1]) {
      const corrupt = new Uint8Array(data);
      corrupt[flipAt]! ^= 1;
      const badGroup = Math.floor(flipAt / GROUP_SIZE);
      const verifier = new BlobVerifier(root, size, outboard);
      const accepted: Uint8Array[] = [];
      /** Bytes of the pushes that returned: the one that throws hands over nothing, not even the good groups it completed. */
      let fedBeforeError = 0;
      let error: unknown;
      try {
        feedInPieces(corrupt, seededRandom(flipAt), (piece) => {
          accepted.push(...verifier.push(piece));
          fedBeforeError += piece.length;
        });
        verifier.finish();
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(CastoreError);
      expect((error as CastoreError).code).toBe('BLAKE3_GROUP_MISMATCH');
      expect((error as CastoreError).offset).toBe(badGroup * GROUP_SIZE);
      // The push that completed the bad group threw: every group completed before it was handed over, good.
      const completedBefore = Math.floor(fedBeforeError / GROUP_SIZE);
      expect(completedBefore).toBeLessThanOrEqual(badGroup);
      expect(accepted.length).toBe(completedBefore);
      expect(Buffer.concat(accepted).equals(Buffer.from(data.subarray(0, completedBefore * GROUP_SIZE)))).toBe(true);
      // Fed a group per push, every good group before the bad one is handed over.
      const groupwise = new BlobVerifier(root, size, outboard);
      const groupwiseAccepted: Uint8Array[] = [];
      expect(() => {
        for (let at = 0; at < size; at += GROUP_SIZE) groupwiseAccepted.push(...groupwise.push(corrupt.subarray(at, at + GROUP_SIZE)));
      }).toThrow(CastoreError);
      expect(Buffer.concat(groupwiseAccepted).equals(Buffer.from(data.subarray(0, badGroup * GROUP_SIZE)))).toBe(true);
    }
  });

  it('resumes from a group boundary', () => {
    const first = new BlobVerifier(root, size, outboard);
    first.push(data.subarray(0, 4 * GROUP_SIZE + 500)); // connection drops mid-group
    expect(first.verifiedBytes).toBe(4 * GROUP_SIZE);
    const resumed = new BlobVerifier(root, size, outboard, { startGroup: first.verifiedBytes / GROUP_SIZE });
    const rest = resumed.push(data.subarray(first.verifiedBytes));
    resumed.finish();
    expect(Buffer.concat(rest).equals(Buffer.from(data.subarray(4 * GROUP_SIZE)))).toBe(true);
  });

  it('rewinds to what the caller received, even after a chunk verified groups and then hit a bad one', () => {
    const verifier = new BlobVerifier(root, size, outboard);
    const received = verifier.push(data.subarray(0, 2 * GROUP_SIZE)).reduce((sum, group) => sum + group.length, 0);
    const corrupt = new Uint8Array(data.subarray(2 * GROUP_SIZE, 6 * GROUP_SIZE));
    corrupt[3 * GROUP_SIZE + 5]! ^= 1; // groups 2-4 verify inside this call, group 5 does not: the caller gets nothing
    expectCastoreError(() => verifier.push(corrupt), 'BLAKE3_GROUP_MISMATCH', 5 * GROUP_SIZE);
    expect(verifier.verifiedBytes).toBe(5 * GROUP_SIZE);
    verifier.rewindTo(received);
    const rest = verifier.push(data.subarray(received));
    verifier.finish();
    expect(Buffer.concat(rest).equals(Buffer.from(data.subarray(received)))).toBe(true);
    expectCastoreError(() => verifier.rewindTo(GROUP_SIZE + 1), 'BLAKE3_BAD_SIZE');
  });

  it('refuses too many and too few bytes', () => {
    const tooMany = new BlobVerifier(root, size, outboard);
    expectCastoreError(() => tooMany.push(vectorInput(size + 1)), 'BLAKE3_BAD_SIZE', size);
    const tooFew = new BlobVerifier(root, size, outboard);
    tooFew.push(data.subarray(0, size - 1));
    expectCastoreError(() => tooFew.finish(), 'BLAKE3_BAD_SIZE');
  });

  it('verifies byte ranges: a middle range and the short last group', () => {
    verifyRange(root, size, outboard, 3 * GROUP_SIZE, data.subarray(3 * GROUP_SIZE, 6 * GROUP_SIZE));
    verifyRange(root, size, outboard, 9 * GROUP_SIZE, data.subarray(9 * GROUP_SIZE));
    const tampered = new Uint8Array(data.subarray(3 * GROUP_SIZE, 6 * GROUP_SIZE));
    tampered[GROUP_SIZE + 1]! ^= 0x80;
    expectCastoreError(() => verifyRange(root, size, outboard, 3 * GROUP_SIZE, tampered), 'BLAKE3_GROUP_MISMATCH', 4 * GROUP_SIZE);
    expectCastoreError(() => verifyRange(root, size, outboard, 100, data.subarray(100, 200)), 'BLAKE3_BAD_SIZE');
  });

  it('verifies single-group and empty blobs against the root itself', () => {
    for (const small of [0, 1, 5000, GROUP_SIZE]) {
      const bytes = vectorInput(small);
      const built = build(bytes);
      expect(built.outboard.length).toBe(0);
      const verifier = new BlobVerifier(built.root, small, built.outboard);
      verifier.push(bytes);
      verifier.finish();
      if (small > 0) {
        const bad = new Uint8Array(bytes);
        bad[small - 1]! ^= 4;
        expectCastoreError(() => new BlobVerifier(built.root, small, built.outboard).push(bad), 'BLAKE3_GROUP_MISMATCH', 0);
      }
    }
  });
});
