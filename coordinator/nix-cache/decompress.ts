/**
 * Bounded decompression of untrusted uploads, one entry point for every
 * compression the Nix cache accepts (`Compression:` in an uploaded
 * narinfo): zstd (protocol/compression/zstd.ts) and xz (xz.ts, `nix copy --to`'s default).
 *
 * Every decompressor is bounded by construction, never by checking after
 * the fact: it runs its decoder one bounded output step at a time, only as
 * the consumer pulls, and refuses as soon as the output passes the
 * caller's `maxOutputBytes` (a tiny input can expand enormously: 1 GiB of
 * zeros is ~33 KB of zstd and ~150 KB of xz). The bounds, named in
 * zstd.ts (protocol/compression/zstd.ts, shared with the data plane) and
 * xz.ts, and restated in docs/nix-cache.md ("Bounds"):
 *
 * | bound                 | zstd                                 | xz                                        |
 * |-----------------------|--------------------------------------|-------------------------------------------|
 * | output                | maxOutputBytes (NarSize)             | maxOutputBytes (NarSize)                  |
 * | decoder memory        | window ≤ 2^ZSTD_WINDOW_LOG_MAX (128 MiB) per decompression | dictionary ≤ XZ_DICT_MAX_BYTES (64 MiB) per process |
 * | output held per step  | ZSTD_OUTPUT_STEP_BYTES (128 KiB)     | 2 × XZ_OUTPUT_STEP_BYTES (2 × 64 KiB)     |
 * | running at once       | MAX_CONCURRENT_NAR_INGESTS (4)       | XZ_MAX_CONCURRENT_DECOMPRESSIONS (1)      |
 *
 * bzip2 (Nix's `?compression=bzip2`) is not accepted: no maintained bzip2
 * decoder on npm streams with a bounded output step (see docs/nix-cache.md).
 */
import type { Compression, DecompressOptions } from '../../protocol/compression/decompress-error.js';
import { xzDecompress } from './xz.js';
import { zstdDecompress } from '../../protocol/compression/zstd.js';

export { DecompressError, type Compression, type DecompressErrorCode, type DecompressOptions } from '../../protocol/compression/decompress-error.js';

/** The compressions decompress() takes, e.g. to check an upload's before reading it. */
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'xz'];

/** True for a `Compression:` value decompress() takes. */
export function isCompression(value: string): value is Compression {
  return (COMPRESSIONS as readonly string[]).includes(value);
}

/**
 * Decompresses `source` as `compression`, producing output only as the
 * consumer pulls it, never more than `maxOutputBytes` of it. Refusals are
 * DecompressError thrown from the iterator (DECOMPRESS_OUTPUT_LIMIT,
 * DECOMPRESS_CORRUPT, DECOMPRESS_TRUNCATED), after which the consumer must
 * treat the whole stream as refused; a negative or non-integer
 * `maxOutputBytes` is a RangeError. Run the iterator to its end or return
 * it (`for await` does both).
 */
export function decompress(source: AsyncIterable<Uint8Array>, compression: Compression, options: DecompressOptions): AsyncGenerator<Uint8Array> {
  switch (compression) {
    case 'zstd':
      return zstdDecompress(source, options);
    case 'xz':
      return xzDecompress(source, options);
  }
}
