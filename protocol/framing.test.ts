import { describe, expect, it } from 'vitest';
import { encodeHeaderFrame, FrameError, FrameReader } from './framing.js';

async function* chunksOf(bytes: Uint8Array, sizes: number[]): AsyncGenerator<Uint8Array> {
  let offset = 0;
  for (let index = 0; offset < bytes.length; index++) {
    const size = sizes[index % sizes.length]!;
    yield bytes.subarray(offset, offset + size);
    offset += size;
  }
}

describe('FrameReader', () => {
  it('reads headers and exact byte counts across any chunking, copying only what spans chunks', async () => {
    const body = new Uint8Array(10_000).map((_, i) => i % 251);
    const message = Buffer.concat([encodeHeaderFrame({ op: 'x', n: 1 }), body, encodeHeaderFrame({ end: true })]);
    for (const sizes of [[1], [3, 7], [4096], [message.length], [0, 5, 0, 11]]) {
      const reader = new FrameReader(chunksOf(message, sizes));
      expect(await reader.readHeader(1024)).toEqual({ op: 'x', n: 1 });
      const parts = [await reader.readExact(1), await reader.readExact(4999), await reader.readExact(0), await reader.readExact(5000)];
      expect(Buffer.concat(parts).equals(Buffer.from(body))).toBe(true);
      expect(await reader.readHeader(1024)).toEqual({ end: true });
      await reader.expectEnd();
      expect(reader.offset).toBe(message.length);
    }
  });

  it('refuses a header longer than the bound its reader names, before reading it', async () => {
    const frame = encodeHeaderFrame({ op: 'x', pad: 'y'.repeat(100) });
    await expect(new FrameReader(chunksOf(frame, [frame.length])).readHeader(frame.length - 5)).rejects.toMatchObject({ code: 'FRAME_TOO_LARGE' });
    expect(await new FrameReader(chunksOf(frame, [frame.length])).readHeader(frame.length - 4)).toMatchObject({ op: 'x' });
  });

  it('says where a stream was cut, and refuses trailing bytes', async () => {
    const cut = new FrameReader(chunksOf(new Uint8Array(100), [30]));
    await cut.readExact(50);
    const error = await cut.readExact(60, 'blob b').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(FrameError);
    expect((error as FrameError).code).toBe('FRAME_TRUNCATED');
    expect((error as FrameError).message).toContain('blob b at byte 100 (10 bytes missing)');
    const trailing = new FrameReader(chunksOf(new Uint8Array(10), [4]));
    await trailing.readExact(9);
    await expect(trailing.expectEnd()).rejects.toMatchObject({ code: 'FRAME_TRAILING_BYTES' });
  });
});
