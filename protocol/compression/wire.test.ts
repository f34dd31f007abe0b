import { randomBytes } from 'node:crypto';
import { compress } from 'zstd-napi';
import { describe, expect, it } from 'vitest';
import { DecompressError } from './decompress-error.js';
import { unzstdExact, unzstdWhole, WIRE_MAX_RATIO, zstdForWire, zstdRawFrame, zstdRawFrameSize } from './wire.js';

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(DecompressError);
    return (error as DecompressError).code;
  }
  throw new Error('expected a refusal');
}

async function* chunksOf(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

describe('zstd on the wire', () => {
  it('compresses what shrinks by 10%, and leaves the rest (random bytes, tiny blobs) raw', () => {
    const text = Buffer.from('ferry ships closures; '.repeat(5000));
    const frame = zstdForWire(text)!;
    expect(frame.length).toBeLessThanOrEqual(text.length * WIRE_MAX_RATIO);
    expect(zstdForWire(randomBytes(100_000))).toBeUndefined();
    expect(zstdForWire(Buffer.from('tiny'))).toBeUndefined();
  });

  it('builds raw-block frames libzstd reads back, at every size around the 128 KiB block', async () => {
    for (const size of [0, 1, 4096, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1, 1024 * 1024, 1024 * 1024 - 16 * 1024]) {
      const bytes = randomBytes(size);
      const frame = zstdRawFrame(bytes);
      expect(frame.length).toBe(zstdRawFrameSize(size));
      expect(Buffer.from(await unzstdWhole(frame, size, 'raw frame')).equals(bytes)).toBe(true);
    }
  });

  it('decompresses independent frames to exactly the declared size, in any slicing', async () => {
    const parts = [Buffer.from('a'.repeat(300_000)), randomBytes(70_000), Buffer.from('b'.repeat(1000))];
    const frames = Buffer.concat([compress(parts[0]!), zstdRawFrame(parts[1]!), compress(parts[2]!)]);
    for (const slice of [1, 7, 4096, frames.length]) {
      const out: Uint8Array[] = [];
      for await (const chunk of unzstdExact(chunksOf(frames, slice), 371_000, 'frames')) out.push(chunk);
      expect(Buffer.concat(out).equals(Buffer.concat(parts))).toBe(true);
    }
  });

  it('refuses a size declared too small or too large, a bomb, corrupt and cut frames', async () => {
    const bytes = Buffer.from('x'.repeat(10_000));
    const frame = compress(bytes);
    expect(await codeOf(unzstdWhole(frame, 9_999, 'too small'))).toBe('DECOMPRESS_OUTPUT_LIMIT');
    expect(await codeOf(unzstdWhole(frame, 10_001, 'too large'))).toBe('DECOMPRESS_TRUNCATED');
    expect(await codeOf(unzstdWhole(compress(Buffer.alloc(256 * 1024 * 1024)), 1024 * 1024, 'bomb'))).toBe('DECOMPRESS_OUTPUT_LIMIT');
    expect(await codeOf(unzstdWhole(randomBytes(100), 10_000, 'garbage'))).toBe('DECOMPRESS_CORRUPT');
    expect(await codeOf(unzstdWhole(frame.subarray(0, frame.length - 2), 10_000, 'cut'))).toBe('DECOMPRESS_TRUNCATED');
  });
});
