/**
 * Streaming zstd for the Nix cache, with zstd-napi (libzstd bindings built
 * from the bundled zstd sources at install: Node 20's zlib has no zstd,
 * which arrived in Node 22.15). Chunks flow through; nothing is buffered
 * whole.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CompressStream, DecompressStream } from 'zstd-napi';
import type { Transform } from 'node:stream';

/** zstd's default level: ~300+ MB/s per core, a good trade for serving on the fly. */
export const ZSTD_LEVEL = 3;
/** Largest window accepted when decompressing uploads (2^27 = 128 MiB, libzstd's default limit). */
const WINDOW_LOG_MAX = 27;

async function* through(source: AsyncIterable<Uint8Array>, transform: Transform): AsyncGenerator<Uint8Array> {
  const pumped = pipeline(Readable.from(source, { objectMode: false }), transform);
  // Failures surface through the transform's iterator; keep the pipeline's promise from going unhandled.
  pumped.catch(() => undefined);
  try {
    for await (const chunk of transform as AsyncIterable<Buffer>) yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    await pumped;
  } finally {
    transform.destroy();
  }
}

/** Compresses a byte stream into one zstd frame. */
export function zstdCompress(source: AsyncIterable<Uint8Array>, level = ZSTD_LEVEL): AsyncGenerator<Uint8Array> {
  return through(source, new CompressStream({ compressionLevel: level }));
}

/** Decompresses a zstd stream (one or more frames); refuses corrupt input and windows over 128 MiB. */
export function zstdDecompress(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  return through(source, new DecompressStream({ windowLogMax: WINDOW_LOG_MAX }));
}
