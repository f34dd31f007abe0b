/**
 * Streaming xz decompression for NAR uploads: xz is what `nix copy --to
 * http://…` sends when no `?compression=` is given. The decoder is
 * xz-decompress (MIT): xz-embedded, the xz decoder of the Linux kernel and
 * of Lasse Collin's XZ Utils project, compiled to WebAssembly and shipped
 * inside the npm package (no native code, nothing built or downloaded at
 * install). It takes what XZ Utils and Nix write: one or more xz streams
 * with stream padding, LZMA2, CRC32 or CRC64 checks (Nix uses CRC64) or
 * none. It has no BCJ/delta filters and no SHA-256 check: such streams are
 * refused as DECOMPRESS_CORRUPT (neither Nix nor `xz` uses them by default).
 *
 * Decompression is bounded by construction, because the input is untrusted
 * and tiny inputs expand enormously (1 GiB of zeros is ~150 KB of xz). The
 * package's stream runs the decoder once per pull, with at most
 * XZ_INPUT_STEP_BYTES of input and an output buffer of XZ_OUTPUT_STEP_BYTES,
 * and pulls only when its one-step queue has room; this module reads it as
 * its own consumer pulls and stops as soon as the output passes the
 * caller's limit.
 *
 * Its bounds (summed up with zstd's in decompress.ts; docs/nix-cache.md,
 * "Bounds"), all fixed by the package's build (xz-decompress 0.2.x,
 * src/native/xz-decompress.c) and checked by xz.test.ts:
 * - XZ_DICT_MAX_BYTES: the largest LZMA2 dictionary, the decoder's memory;
 * - XZ_OUTPUT_STEP_BYTES / XZ_INPUT_STEP_BYTES: the buffers of one step;
 * - XZ_MAX_CONCURRENT_DECOMPRESSIONS: the package decodes one stream at a
 *   time per process (a lock around its one WebAssembly instance); others
 *   wait for it;
 * - `maxOutputBytes`, which every caller must state (for NAR uploads: the
 *   narinfo's NarSize, itself at most the cache's maxNarBytes).
 * Refusals are DecompressError (protocol/compression/decompress-error.ts), as for zstd.
 */
import xzDecompressPackage from 'xz-decompress';
import { checkDecompressOptions, DecompressError, type DecompressOptions } from '../../protocol/compression/decompress-error.js';

const { XzReadableStream } = xzDecompressPackage;

const MiB = 1024 * 1024;

/**
 * Largest LZMA2 dictionary accepted (64 MiB: `xz -9`'s; Nix's default,
 * preset 6, uses 8 MiB). The package builds xz-embedded with
 * `xz_dec_init(XZ_DYNALLOC, 1 << 26)`: a stream asking for more is refused
 * (DECOMPRESS_CORRUPT) before anything is allocated for it, and a smaller
 * one allocates only its own dictionary. The dictionary lives in the
 * WebAssembly memory, which can grow but never shrink: after an xz upload
 * the process keeps up to this much (reused by the next one).
 */
export const XZ_DICT_MAX_BYTES = 64 * MiB;

/**
 * Most output bytes one decoder step produces (the package's BUFSIZE).
 * The package's stream queues one step ahead of this module's read, so at
 * most two steps are held that the consumer has not taken.
 */
export const XZ_OUTPUT_STEP_BYTES = 64 * 1024;

/** Most compressed bytes handed to the decoder per step (the package's BUFSIZE). */
export const XZ_INPUT_STEP_BYTES = 64 * 1024;

/**
 * xz decompressions running at once in this process: the package
 * serialises them (one WebAssembly instance, one decoder at a time). Others
 * wait; so the xz decoder's memory is XZ_DICT_MAX_BYTES for the whole
 * process, not per upload. A decompression holds its turn until it ends,
 * fails or is returned (`for await` returns it on every exit).
 */
export const XZ_MAX_CONCURRENT_DECOMPRESSIONS = 1;

/** xz-embedded's `enum xz_ret` values that refuse a stream, as the package reports them. */
const XZ_REFUSALS: Record<number, string> = {
  2: 'its integrity check type is not supported (only none, CRC32 and CRC64 are)',
  3: 'the decoder could not allocate memory',
  4: `its dictionary exceeds the limit of ${XZ_DICT_MAX_BYTES} bytes`,
  5: 'it does not start with the xz magic bytes',
  6: 'it uses options this decoder does not support (a filter other than LZMA2, or a SHA-256 check)',
  7: 'its data is corrupt',
  8: 'no progress was possible',
};
const XZ_BUF_ERROR = 8;
const XZ_MEM_ERROR = 3;
const PACKAGE_FAILURE = /^get_next_output failed with error code (\d+)$/;

/**
 * Decompresses an xz stream (one or more streams, with stream padding),
 * producing output only as the consumer pulls it.
 *
 * Refuses, by throwing DecompressError (compression 'xz') from the iterator:
 * - DECOMPRESS_OUTPUT_LIMIT once the output would pass `maxOutputBytes`:
 *   the step that passes it is never yielded, and at most
 *   `maxOutputBytes + 2 * XZ_OUTPUT_STEP_BYTES` bytes are ever produced;
 * - DECOMPRESS_CORRUPT for input that is not valid xz (bad magic, a damaged
 *   block or index, a failed check), a dictionary over XZ_DICT_MAX_BYTES,
 *   or a filter or check the decoder lacks;
 * - DECOMPRESS_TRUNCATED when the input is empty or ends inside a stream
 *   (trailing bytes that are not a whole further stream count as this too).
 *
 * Memory: the dictionary of the current stream (at most XZ_DICT_MAX_BYTES,
 * shared by the process: XZ_MAX_CONCURRENT_DECOMPRESSIONS), two output
 * steps and one input step, plus the source chunk being read. Bytes yielded
 * before a refusal were valid output; the consumer must treat the whole
 * stream as refused. The consumer must run the iterator to its end or
 * return it (as `for await` does), since until then it holds the process's
 * one xz decoder.
 */
export async function* xzDecompress(source: AsyncIterable<Uint8Array>, options: DecompressOptions): AsyncGenerator<Uint8Array> {
  checkDecompressOptions('xz', options);
  const { maxOutputBytes, what } = options;
  const input = source[Symbol.asyncIterator]();
  let read = 0;
  let sourceEnded = false;
  // An empty chunk would tell the package's decoder that the input has ended: never hand it one.
  const nextNonEmpty = async (): Promise<Uint8Array | undefined> => {
    for (;;) {
      const next = await input.next();
      if (next.done) {
        sourceEnded = true;
        return undefined;
      }
      if (next.value.length > 0) {
        read += next.value.length;
        return next.value;
      }
    }
  };
  try {
    // The package cannot take an input with no bytes at all; nor is it xz.
    let pending = await nextNonEmpty();
    if (pending === undefined) throw new DecompressError('DECOMPRESS_TRUNCATED', 'xz', what, `${what} is empty, not an xz stream`, maxOutputBytes);
    const compressed = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          const chunk = pending ?? (await nextNonEmpty());
          pending = undefined;
          if (chunk === undefined) controller.close();
          else controller.enqueue(chunk);
        },
      },
      // Read the source only when the decoder asks for input.
      new CountQueuingStrategy({ highWaterMark: 0 }),
    );
    const reader = new XzReadableStream(compressed).getReader();
    let finished = false;
    try {
      let produced = 0;
      for (;;) {
        let step: Awaited<ReturnType<typeof reader.read>>;
        try {
          step = await reader.read();
        } catch (error) {
          finished = true; // an errored stream has already given up its decoder
          throw refusal(error, what, maxOutputBytes, read, sourceEnded);
        }
        if (step.done) {
          finished = true;
          return;
        }
        const chunk = step.value;
        if (chunk.length === 0) continue;
        produced += chunk.length;
        if (produced > maxOutputBytes) {
          throw new DecompressError('DECOMPRESS_OUTPUT_LIMIT', 'xz', what, `${what} decompresses to more than its limit of ${maxOutputBytes} bytes`, maxOutputBytes);
        }
        yield chunk;
      }
    } finally {
      // Gives the process's xz decoder back (the package frees it and releases its lock on cancel).
      if (!finished) await reader.cancel().catch(() => undefined);
    }
  } finally {
    await input.return?.();
  }
}

/** The DecompressError for a failure the package reported (anything else is not the input's fault: rethrown). */
function refusal(error: unknown, what: string, limit: number, read: number, sourceEnded: boolean): unknown {
  const code = error instanceof Error ? PACKAGE_FAILURE.exec(error.message)?.[1] : undefined;
  if (code === undefined || Number(code) === XZ_MEM_ERROR) return error;
  const xzRet = Number(code);
  // Out of input while the decoder still wanted some: the stream was cut short.
  if (xzRet === XZ_BUF_ERROR && sourceEnded) {
    return new DecompressError('DECOMPRESS_TRUNCATED', 'xz', what, `${what} ends inside an xz stream (after ${read} compressed bytes)`, limit, { cause: error });
  }
  const reason = XZ_REFUSALS[xzRet] ?? `xz-embedded error ${xzRet}`;
  return new DecompressError('DECOMPRESS_CORRUPT', 'xz', what, `${what} is not valid xz: ${reason} (within its first ${read} compressed bytes)`, limit, { cause: error });
}
