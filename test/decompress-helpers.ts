/** Shared by the decompressors' tests (protocol/compression/zstd.test.ts, coordinator/nix-cache/xz.test.ts): inputs in chosen chunkings, and how a stream failed. */
import { expect } from 'vitest';
import { DecompressError, type DecompressErrorCode } from '../protocol/compression/decompress-error.js';

/** `bytes` as chunks of the given sizes, cycled (one chunk by default). */
export async function* chunksOf(bytes: Uint8Array, sizes: number[] = [bytes.length]): AsyncGenerator<Uint8Array> {
  for (let offset = 0, i = 0; offset < bytes.length; i++) {
    const size = Math.max(1, sizes[i % sizes.length]!);
    yield bytes.subarray(offset, offset + size);
    offset += size;
  }
}

export async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

/** The error `chunks` fails with, and the bytes it yielded before. */
export async function failure(chunks: AsyncIterable<Uint8Array>): Promise<{ error: unknown; yielded: number; largestChunk: number }> {
  let yielded = 0;
  let largestChunk = 0;
  try {
    for await (const chunk of chunks) {
      yielded += chunk.length;
      largestChunk = Math.max(largestChunk, chunk.length);
    }
  } catch (error) {
    return { error, yielded, largestChunk };
  }
  throw new Error(`expected a failure, but the stream ended after ${yielded} bytes`);
}

/** Expects a DecompressError of `compression` with `code`, naming `what`. */
export function expectDecompressError(error: unknown, compression: DecompressError['compression'], code: DecompressErrorCode, what: string): DecompressError {
  expect(error).toBeInstanceOf(DecompressError);
  const refused = error as DecompressError;
  expect({ code: refused.code, compression: refused.compression, what: refused.what }).toEqual({ code, compression, what });
  expect(refused.message).toContain(what);
  return refused;
}
