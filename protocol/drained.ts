import type { EventEmitter } from 'node:events';

/**
 * Resolves when a writable stream that refused a write has drained — or
 * closed, so a writer never waits forever on a dead stream. Removes both
 * listeners either way (a long transfer waits thousands of times).
 */
export function drained(stream: EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * QUIC writes are cut to this size. With @currentspace/http3 0.9.0, replies
 * written in 4 MiB pieces stalled (the server's stream finished, the
 * client never saw the last bytes) in 2 of 3 transfers of a 195 MB closure;
 * in 256 KiB pieces, 0 of 16 did (bench/README.md, data plane).
 */
export const QUIC_WRITE_MAX = 256 * 1024;

/**
 * Writes `chunk` to a QUIC stream in QUIC_WRITE_MAX pieces, waiting for
 * the stream to drain when it refuses more. Returns false if the stream
 * was destroyed meanwhile (nothing more should be written).
 */
export async function writeToQuicStream(stream: EventEmitter & { destroyed: boolean; write(chunk: Uint8Array): boolean }, chunk: Uint8Array): Promise<boolean> {
  for (let offset = 0; offset < chunk.length; offset += QUIC_WRITE_MAX) {
    if (stream.destroyed) return false;
    if (!stream.write(chunk.subarray(offset, offset + QUIC_WRITE_MAX))) await drained(stream);
  }
  return !stream.destroyed;
}
