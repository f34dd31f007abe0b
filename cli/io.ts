/** Byte-stream plumbing shared by commands: files or stdin in, stdout out. */
import { createReadStream } from 'node:fs';
import { drained } from '../protocol/drained.js';

/** Reads a file, or standard input when `pathOrDash` is `-`, as a stream of chunks. */
export function openInput(pathOrDash: string, stdin: NodeJS.ReadableStream = process.stdin): AsyncIterable<Uint8Array> {
  if (pathOrDash === '-') return stdin as AsyncIterable<Uint8Array>;
  return createReadStream(pathOrDash, { highWaterMark: 256 * 1024 });
}

/** `chunks` as they are, calling `onBytes` with the running total after each (for progress). */
export async function* counted(chunks: AsyncIterable<Uint8Array>, onBytes: (total: number) => void): AsyncGenerator<Uint8Array> {
  let total = 0;
  for await (const chunk of chunks) {
    total += chunk.length;
    onBytes(total);
    yield chunk;
  }
}

/**
 * Writes chunks to a stream respecting backpressure. A reader that goes away
 * early (`ferry nar dump x | head`) ends the copy quietly instead of failing.
 */
export async function writeAll(chunks: AsyncIterable<Uint8Array>, out: NodeJS.WritableStream): Promise<void> {
  let closed = false;
  const onError = (error: NodeJS.ErrnoException): void => {
    if (error.code === 'EPIPE') closed = true;
  };
  out.on('error', onError);
  try {
    for await (const chunk of chunks) {
      if (closed) break;
      if (!out.write(chunk)) await drained(out);
    }
  } finally {
    out.off('error', onError);
  }
}


/** Resolves at the first SIGINT or SIGTERM (a server command's "run until interrupted"). */
export function untilInterrupted(): Promise<void> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
