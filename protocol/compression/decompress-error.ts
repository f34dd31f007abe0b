/**
 * The one error type of every decompressor (zstd.ts here; the Nix cache's
 * xz.ts, dispatched by coordinator/nix-cache/decompress.ts, which
 * re-exports this module as its decompress-error.ts), so that a caller
 * maps refusals to answers once, whatever the compression. A FerryError:
 * its codes are the enum's (protocol/errors.ts), sent as they are when an
 * upload is refused.
 */
import { FerryError } from '../errors.js';

/** The compressions the cache can decompress (an upload's `Compression:` other than `none`). */
export type Compression = 'zstd' | 'xz';

export type DecompressErrorCode =
  /**
   * Not a stream of this compression, damaged (a failed check included), or
   * asking for more than the decoder's memory bound (a zstd window over
   * 2^ZSTD_WINDOW_LOG_MAX, an xz dictionary over XZ_DICT_MAX_BYTES), or
   * using a feature the decoder does not have (an xz filter other than
   * LZMA2, an xz SHA-256 check).
   */
  | 'DECOMPRESS_CORRUPT'
  /** The input ended inside a frame or stream (or was empty where a stream must be). */
  | 'DECOMPRESS_TRUNCATED'
  /** The output passed the caller's maxOutputBytes. */
  | 'DECOMPRESS_OUTPUT_LIMIT';

/**
 * A refused compressed stream, naming its compression, what was being
 * decompressed (`what`) and the output limit in force.
 */
export class DecompressError extends FerryError {
  override readonly name = 'DecompressError';
  declare readonly code: DecompressErrorCode;

  constructor(
    code: DecompressErrorCode,
    readonly compression: Compression,
    /** What was being decompressed, as the caller named it (e.g. `NAR nar/….nar.xz`). */
    readonly what: string,
    message: string,
    /** The maxOutputBytes in force. */
    readonly limit: number,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export interface DecompressOptions {
  /**
   * Most bytes the decompressed stream may have. Mandatory: every caller
   * states its bound. A non-negative safe integer.
   */
  maxOutputBytes: number;
  /** What is being decompressed, for error messages (e.g. `NAR nar/….nar.xz`). */
  what: string;
}

/** Throws RangeError unless `maxOutputBytes` is a non-negative safe integer. */
export function checkDecompressOptions(compression: Compression, options: DecompressOptions): void {
  const { maxOutputBytes, what } = options;
  if (!Number.isSafeInteger(maxOutputBytes) || maxOutputBytes < 0) {
    throw new RangeError(`${compression} decompression of ${what}: maxOutputBytes ${maxOutputBytes} is not a non-negative integer`);
  }
}
