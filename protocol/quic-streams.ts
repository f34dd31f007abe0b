/**
 * Reading and writing QUIC streams of @currentspace/http3, the same on the
 * coordinator and in the client: writes cut to a size the library handles
 * reliably and paced by its backpressure, reads taken from `data` events
 * without a copy. The notes on each say what was measured.
 */
import type { EventEmitter } from 'node:events';
import { drained } from './drained.js';

/**
 * Requests one connection may have in flight. Ferry's clients use 2 (4 at
 * most); the library's default of 10,000 let one connection, authenticated
 * or not, park that many pending requests. A client over the limit gets
 * QUIC's StreamLimit when it opens the stream; credit returns as streams
 * close.
 */
export const MAX_STREAMS_PER_CONNECTION = 64;

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

/** Bytes a reader lets queue before it pauses the stream. */
const READ_QUEUE_MAX = 4 * 1024 * 1024;

/**
 * A QUIC stream's incoming chunks, as they arrived. Not the stream's own
 * async iterator: that concatenates everything buffered into a new buffer
 * at each step (a copy of every byte), and `for await (… of stream)` also
 * destroys the stream when its readable side ends, before a reply is
 * written. Fails with the stream's error, or if it closes before its end;
 * stops listening when the consumer stops early (the caller decides
 * whether to destroy the stream).
 */
export async function* quicStreamChunks(stream: EventEmitter & { pause(): unknown; resume(): unknown; isPaused(): boolean }): AsyncGenerator<Uint8Array> {
  const queue: Uint8Array[] = [];
  let head = 0;
  let queued = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onData = (chunk: Uint8Array) => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= READ_QUEUE_MAX) stream.pause();
    wake?.();
  };
  const onEnd = () => {
    ended = true;
    wake?.();
  };
  const onError = (error: Error) => {
    failure ??= error;
    wake?.();
  };
  const onClose = () => {
    if (!ended) failure ??= new Error('the stream closed before its end');
    wake?.();
  };
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', onError);
  stream.on('close', onClose);
  try {
    for (;;) {
      if (head < queue.length) {
        const chunk = queue[head]!;
        queue[head++] = undefined as unknown as Uint8Array;
        if (head > 1024) {
          queue.splice(0, head);
          head = 0;
        }
        queued -= chunk.length;
        if (queued < READ_QUEUE_MAX / 2 && stream.isPaused()) stream.resume();
        yield chunk;
        continue;
      }
      if (failure) throw failure;
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    stream.off('data', onData);
    stream.off('end', onEnd);
    stream.off('error', onError);
    stream.off('close', onClose);
  }
}
