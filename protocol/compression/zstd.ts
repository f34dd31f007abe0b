/**
 * Streaming zstd, shared by the Nix cache (coordinator/nix-cache, which
 * re-exports this module as its zstd.ts) and the data plane's wire
 * compression (wire-compression.ts), with zstd-napi (libzstd bindings built
 * from the bundled zstd sources at install: Node 20's zlib has no zstd,
 * which arrived in Node 22.15). Chunks flow through; nothing is buffered
 * whole.
 *
 * Decompression is bounded by construction, because its input is
 * untrusted and tiny inputs expand enormously (one zstd RLE block of a few
 * bytes is 128 KiB of output; 1 GiB of zeros compresses to ~33 KB). It
 * drives libzstd's `ZSTD_decompressStream` by hand with an output buffer of
 * at most ZSTD_OUTPUT_STEP_BYTES, one step per chunk the consumer pulls, and
 * stops as soon as the output passes the caller's limit. (zstd-napi's
 * `DecompressStream` Transform instead expands a whole input chunk at once,
 * ignoring backpressure: a 33 KB chunk became 1 GiB of buffered output.)
 *
 * Its bounds (summed up with xz's in decompress.ts; docs/nix-cache.md, "Bounds"):
 * - ZSTD_WINDOW_LOG_MAX: the window libzstd may allocate per decompression;
 * - ZSTD_OUTPUT_STEP_BYTES: the output produced per step, held until the
 *   consumer takes it;
 * - `maxOutputBytes`, which every caller of zstdDecompress must state (for
 *   NAR uploads: the narinfo's NarSize, itself at most the cache's
 *   maxNarBytes; on the data plane: the blob or segment size its header
 *   declares).
 * Refusals are DecompressError (decompress-error.ts), as for xz.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CompressStream, type CompressParameters } from 'zstd-napi';
import zstdBinding from 'zstd-napi/binding.js';
import type { Transform } from 'node:stream';
import { checkDecompressOptions, DecompressError, type DecompressOptions } from './decompress-error.js';

/** zstd's default level: ~300+ MB/s per core, a good trade for serving on the fly. */
export const ZSTD_LEVEL = 3;

/**
 * Largest window accepted when decompressing (2^27 = 128 MiB, libzstd's
 * default limit, which `zstd` and Nix stay within unless told otherwise).
 * The window is what one decompression may allocate besides its output
 * step: a frame declaring a larger one is refused as DECOMPRESS_CORRUPT before
 * anything is allocated for it.
 */
export const ZSTD_WINDOW_LOG_MAX = 27;

/**
 * Most output bytes one decompression step produces, and so the most it
 * holds that its consumer has not taken: libzstd's recommended output
 * buffer size (ZSTD_DStreamOutSize, one full block: 128 KiB).
 */
export const ZSTD_OUTPUT_STEP_BYTES: number = zstdBinding.dStreamOutSize();

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

/** Compresses a byte stream into one zstd frame: at `level`, or with these libzstd parameters. */
export function zstdCompress(source: AsyncIterable<Uint8Array>, level: number | CompressParameters = ZSTD_LEVEL): AsyncGenerator<Uint8Array> {
  return through(source, new CompressStream(typeof level === 'number' ? { compressionLevel: level } : level));
}

/**
 * Decompresses a zstd stream (one or more frames, skippable frames
 * allowed), producing output only as the consumer pulls it.
 *
 * Refuses, by throwing DecompressError (compression 'zstd') from the iterator:
 * - DECOMPRESS_OUTPUT_LIMIT once the output would pass `maxOutputBytes`: at most
 *   `maxOutputBytes + 1` bytes are ever produced, and the bytes past the
 *   limit are never yielded;
 * - DECOMPRESS_CORRUPT for input that is not valid zstd, or a frame whose window
 *   exceeds 2^ZSTD_WINDOW_LOG_MAX (the message names the compressed offset);
 * - DECOMPRESS_TRUNCATED when the input ends inside a frame.
 *
 * Memory: the window of the current frame (at most 2^ZSTD_WINDOW_LOG_MAX)
 * plus one output step (ZSTD_OUTPUT_STEP_BYTES) not yet taken by the
 * consumer, plus the input chunk being read. Bytes yielded before a refusal
 * were valid output; the consumer must treat the whole stream as refused.
 */
export async function* zstdDecompress(source: AsyncIterable<Uint8Array>, options: DecompressOptions): AsyncGenerator<Uint8Array> {
  checkDecompressOptions('zstd', options);
  const { maxOutputBytes, what } = options;
  const dctx = new zstdBinding.DCtx();
  dctx.setParameter(zstdBinding.DParameter.windowLogMax, ZSTD_WINDOW_LOG_MAX);
  let produced = 0;
  let consumed = 0;
  let inFrame = false;
  for await (const chunk of source) {
    let input = chunk;
    for (;;) {
      // One byte past the limit is enough to know it is passed; never ask libzstd for more.
      const output = Buffer.allocUnsafe(Math.min(ZSTD_OUTPUT_STEP_BYTES, maxOutputBytes - produced + 1));
      let result: ReturnType<typeof dctx.decompressStream>;
      try {
        result = dctx.decompressStream(output, input);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new DecompressError('DECOMPRESS_CORRUPT', 'zstd', what, `${what} is not valid zstd: ${reason} (in the compressed bytes from offset ${consumed})`, maxOutputBytes, { cause: error });
      }
      const [remaining, written, read] = result;
      consumed += read;
      input = input.subarray(read);
      // 0: a frame ended and is flushed. A call that moved nothing (empty input, between frames)
      // answers with the size of the next frame header it wants, which says nothing about the last.
      if (read > 0 || written > 0) inFrame = remaining !== 0;
      produced += written;
      if (produced > maxOutputBytes) {
        throw new DecompressError('DECOMPRESS_OUTPUT_LIMIT', 'zstd', what, `${what} decompresses to more than its limit of ${maxOutputBytes} bytes`, maxOutputBytes);
      }
      // A short step (end of input mid-block) would pin a whole step buffer for a few bytes: copy those out.
      if (written > 0) yield written >= output.length / 4 ? output.subarray(0, written) : new Uint8Array(output.subarray(0, written));
      // A full output buffer may mean more is waiting inside libzstd even with no input left.
      if (input.length === 0 && (written < output.length || remaining === 0)) break;
    }
  }
  if (inFrame) throw new DecompressError('DECOMPRESS_TRUNCATED', 'zstd', what, `${what} ends inside a zstd frame (after ${consumed} compressed bytes)`, maxOutputBytes);
}
