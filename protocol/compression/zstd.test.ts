import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { DecompressError, DecompressErrorCode } from './decompress-error.js';
import { chunksOf, collect, expectDecompressError, failure } from '../../test/decompress-helpers.js';
import { zstdCompress, zstdDecompress, ZSTD_OUTPUT_STEP_BYTES } from './zstd.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

async function compress(bytes: Uint8Array): Promise<Buffer> {
  return collect(zstdCompress(chunksOf(bytes)));
}

const expectZstdError = (error: unknown, code: DecompressErrorCode, what: string): DecompressError => expectDecompressError(error, 'zstd', code, what);

/** A frame header (no checksum, no content size, window 2^windowLog) and one empty last raw block. */
function emptyFrameWithWindowLog(windowLog: number): Uint8Array {
  return Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3, 0x01, 0x00, 0x00);
}

describe('zstdDecompress', () => {
  it('refuses a bomb (1 GiB of zeros in ~33 KB) once its output passes maxOutputBytes, having produced at most one step', async () => {
    const zeros = new Uint8Array(MiB);
    const bomb = await collect(zstdCompress((async function* () { for (let i = 0; i < GiB / MiB; i++) yield zeros; })()));
    expect(bomb.length).toBeLessThan(100_000);

    const tight = await failure(zstdDecompress(chunksOf(bomb), { maxOutputBytes: 1000, what: 'the bomb' }));
    const error = expectZstdError(tight.error, 'DECOMPRESS_OUTPUT_LIMIT', 'the bomb');
    expect(error.limit).toBe(1000);
    expect(error.message).toMatch(/more than its limit of 1000 bytes/);
    expect(tight.yielded).toBeLessThanOrEqual(1000);

    // A larger limit: output arrives in steps of at most ZSTD_OUTPUT_STEP_BYTES, and stops at the limit.
    const loose = await failure(zstdDecompress(chunksOf(bomb), { maxOutputBytes: 8 * MiB, what: 'the bomb' }));
    expectZstdError(loose.error, 'DECOMPRESS_OUTPUT_LIMIT', 'the bomb');
    expect(loose.yielded).toBeLessThanOrEqual(8 * MiB);
    expect(loose.yielded).toBeGreaterThan(8 * MiB - ZSTD_OUTPUT_STEP_BYTES);
    expect(loose.largestChunk).toBeLessThanOrEqual(ZSTD_OUTPUT_STEP_BYTES);
  });

  it('produces output only as the consumer pulls it', async () => {
    const zeros = new Uint8Array(16 * MiB);
    const compressed = await compress(zeros);
    let pulled = 0;
    const slices = (async function* () {
      for await (const slice of chunksOf(compressed, [16])) {
        pulled++;
        yield slice;
      }
    })();
    const iterator = zstdDecompress(slices, { maxOutputBytes: zeros.length, what: 'zeros' });
    const first = await iterator.next();
    expect(first.done).toBe(false);
    expect(first.value!.length).toBeLessThanOrEqual(ZSTD_OUTPUT_STEP_BYTES);
    // One step's worth of input, not the stream (a few bytes of RLE block per 128 KiB step).
    expect(pulled).toBeLessThan(4);
    expect(Math.ceil(compressed.length / 16)).toBeGreaterThan(20);
    await iterator.return(undefined);
  });

  it('decompresses legitimate streams byte-identically: several frames, any input slicing, a limit of exactly their size', async () => {
    const text = Buffer.from('nix-archive-1 '.repeat(100_000));
    const random = randomBytes(3 * MiB + 17);
    const expected = Buffer.concat([text, random]);
    const compressed = Buffer.concat([await compress(text), await compress(random)]);
    for (const sizes of [[compressed.length], [1, 7, 4096, 65_536], [1024 * 1024]]) {
      const output = await collect(zstdDecompress(chunksOf(compressed, sizes), { maxOutputBytes: expected.length, what: 'two frames' }));
      expect(output.equals(expected)).toBe(true);
    }
    const oneShort = await failure(zstdDecompress(chunksOf(compressed), { maxOutputBytes: expected.length - 1, what: 'two frames' }));
    expectZstdError(oneShort.error, 'DECOMPRESS_OUTPUT_LIMIT', 'two frames');
    // The step that passes the limit is withheld whole: what was yielded is a prefix within the limit.
    expect(oneShort.yielded).toBeLessThanOrEqual(expected.length - 1);
    expect(oneShort.yielded).toBeGreaterThan(expected.length - 1 - ZSTD_OUTPUT_STEP_BYTES);

    // Output a multiple of the step size, and empty input chunks between and after frames.
    const steps = new Uint8Array(4 * ZSTD_OUTPUT_STEP_BYTES).fill(7);
    const stepsCompressed = await compress(steps);
    const withEmpties = (async function* () {
      for (const chunk of [stepsCompressed, new Uint8Array(0), stepsCompressed, new Uint8Array(0)]) yield chunk;
    })();
    expect((await collect(zstdDecompress(withEmpties, { maxOutputBytes: 2 * steps.length, what: 'steps' }))).equals(Buffer.concat([steps, steps]))).toBe(true);

    expect((await collect(zstdDecompress(chunksOf(new Uint8Array(0)), { maxOutputBytes: 0, what: 'nothing' }))).length).toBe(0);
    expect((await collect(zstdDecompress(chunksOf(await compress(new Uint8Array(0))), { maxOutputBytes: 0, what: 'empty frame' }))).length).toBe(0);
  });

  it('refuses corrupt and truncated input, and windows over 2^27', async () => {
    const garbage = await failure(zstdDecompress(chunksOf(Buffer.from('not zstd at all, not even close')), { maxOutputBytes: MiB, what: 'garbage' }));
    expect(expectZstdError(garbage.error, 'DECOMPRESS_CORRUPT', 'garbage').message).toMatch(/is not valid zstd: .* from offset 0/);

    const compressed = await compress(randomBytes(MiB));
    const truncated = await failure(zstdDecompress(chunksOf(compressed.subarray(0, compressed.length - 100)), { maxOutputBytes: 2 * MiB, what: 'cut short' }));
    expectZstdError(truncated.error, 'DECOMPRESS_TRUNCATED', 'cut short');

    const damaged = Buffer.from(compressed);
    damaged[4]! ^= 0xff; // the frame header descriptor
    expectZstdError((await failure(zstdDecompress(chunksOf(damaged), { maxOutputBytes: 2 * MiB, what: 'damaged' }))).error, 'DECOMPRESS_CORRUPT', 'damaged');

    expect((await collect(zstdDecompress(chunksOf(emptyFrameWithWindowLog(27)), { maxOutputBytes: 0, what: 'window 2^27' }))).length).toBe(0);
    const wide = await failure(zstdDecompress(chunksOf(emptyFrameWithWindowLog(28)), { maxOutputBytes: 0, what: 'window 2^28' }));
    expectZstdError(wide.error, 'DECOMPRESS_CORRUPT', 'window 2^28');
  });

  it('requires a non-negative integer limit', async () => {
    await expect(collect(zstdDecompress(chunksOf(new Uint8Array(0)), { maxOutputBytes: -1, what: 'x' }))).rejects.toThrow(RangeError);
    await expect(collect(zstdDecompress(chunksOf(new Uint8Array(0)), { maxOutputBytes: Number.NaN, what: 'x' }))).rejects.toThrow(RangeError);
  });
});
