import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { quicStreamChunks } from './quic-streams.js';

describe('quicStreamChunks', () => {
  it('yields the chunks as they arrived (no concatenation), pausing a producer that runs ahead', async () => {
    const stream = new PassThrough();
    const chunks = Array.from({ length: 40 }, (_, i) => Buffer.alloc(256 * 1024, i));
    for (const chunk of chunks) stream.write(chunk);
    stream.end();
    const received: Uint8Array[] = [];
    let sawPaused = false;
    for await (const chunk of quicStreamChunks(stream)) {
      sawPaused ||= stream.isPaused();
      received.push(chunk);
    }
    expect(received.map((chunk) => chunk.length)).toEqual(chunks.map((chunk) => chunk.length));
    expect(Buffer.concat(received).equals(Buffer.concat(chunks))).toBe(true);
    expect(sawPaused).toBe(true);
  });

  it('fails with the stream error, or when the stream closes before its end', async () => {
    const failing = new PassThrough();
    failing.write(Buffer.from('x'));
    setTimeout(() => failing.destroy(new Error('stream reset: 7')), 10);
    await expect(async () => {
      for await (const _ of quicStreamChunks(failing)) void _;
    }).rejects.toThrow('stream reset: 7');

    const closed = new PassThrough();
    setTimeout(() => closed.destroy(), 10);
    await expect(async () => {
      for await (const _ of quicStreamChunks(closed)) void _;
    }).rejects.toThrow('closed before its end');
  });

  it('stops listening when the consumer stops early, leaving the stream to its owner', async () => {
    const stream = new PassThrough();
    stream.write(Buffer.from('a'));
    stream.write(Buffer.from('b'));
    for await (const chunk of quicStreamChunks(stream)) {
      expect(Buffer.from(chunk).toString()).toBe('a');
      break;
    }
    expect(stream.listenerCount('data')).toBe(0);
    expect(stream.destroyed).toBe(false);
  });
});
