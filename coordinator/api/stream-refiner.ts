/**
 * Compressing a `blobs.stream` again at a high level, in a worker thread
 * (blob-stream-cache.ts, "refined" entries).
 *
 * The levels that matter here (16 and up: zstd's optimal parsers) compress
 * a few MB/s, a minute or more of a core for a closure of hundreds of MB.
 * That cannot run on the command thread, and it must stop at once when the
 * coordinator closes: libzstd's own worker threads (nbWorkers) finish the
 * job they hold before a context can be freed, and freeing it waits for
 * them. A Node worker is terminated instead. It compresses what the main
 * thread posts (the castore is read there: a second opener of it would not
 * be a reader only) and writes the file itself, so the output never crosses
 * back. At most REFINE_CHUNKS_IN_FLIGHT chunks wait for it.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

const REFINE_CHUNKS_IN_FLIGHT = 8;

/** The worker's source (CommonJS, evaluated: no file to resolve under tsx, vitest or build/). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { closeSync, openSync, writeSync } = require('node:fs');
const zstd = require(workerData.binding);
const cctx = new zstd.CCtx();
cctx.setParameter(zstd.CParameter.compressionLevel, workerData.level);
cctx.setParameter(zstd.CParameter.windowLog, workerData.windowLog);
const fd = openSync(workerData.file, 'w');
const output = Buffer.allocUnsafe(zstd.cStreamOutSize());
let written = 0;
// libzstd is fed in slices: terminating a worker takes effect between calls into native code, so a slice
// bounds how long closing the coordinator waits (~25 ms at level 19 here, not ~0.4 s for a 1 MiB chunk).
const SLICE_BYTES = 64 * 1024;
function compress(chunk, end) {
  for (let at = 0; at < chunk.length; at += SLICE_BYTES) compressSlice(chunk.subarray(at, at + SLICE_BYTES), false);
  if (end) compressSlice(new Uint8Array(0), true);
}
function compressSlice(input, end) {
  for (;;) {
    const [remaining, produced, consumed] = cctx.compressStream2(output, input, end ? zstd.EndDirective.end : zstd.EndDirective.continue);
    for (let done = 0; done < produced; ) done += writeSync(fd, output, done, produced - done, written + done);
    written += produced;
    input = input.subarray(consumed);
    if (end ? remaining === 0 : input.length === 0 && produced < output.length) return;
  }
}
parentPort.on('message', (message) => {
  if (message.chunk) {
    compress(message.chunk, false);
    parentPort.postMessage({ taken: 1 });
  } else {
    compress(new Uint8Array(0), true);
    closeSync(fd);
    parentPort.postMessage({ done: written });
  }
});
`;

export interface RefineParameters {
  level: number;
  windowLog: number;
}

/**
 * Compresses the bytes `source` yields into one zstd frame written to
 * `file` (created or truncated), at `parameters`, in a worker thread.
 * Resolves with the file's size. Rejects when `source` throws, the worker
 * fails, or `signal` aborts (the worker is terminated at once); the file is
 * then left as it is, for the caller to remove.
 */
export async function refineToFile(source: AsyncIterable<Uint8Array>, file: string, parameters: RefineParameters, signal: AbortSignal): Promise<number> {
  signal.throwIfAborted();
  const binding = createRequire(import.meta.url).resolve('zstd-napi/binding.js');
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { binding, file, ...parameters } });
  let inFlight = 0;
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  let size: number | undefined;
  const settle = (error?: Error) => {
    failure ??= error;
    wake?.();
  };
  const aborted = () => settle(new Error('refining stopped: the coordinator is closing'));
  signal.addEventListener('abort', aborted, { once: true });
  worker.on('message', (message: { taken?: number; done?: number }) => {
    if (message.taken) inFlight -= message.taken;
    if (message.done !== undefined) size = message.done;
    wake?.();
  });
  worker.on('error', (error) => settle(error));
  worker.on('exit', (code) => settle(size === undefined ? new Error(`the refining worker exited (code ${code})`) : undefined));
  const waitFor = async (ready: () => boolean) => {
    while (!ready() && !failure) await new Promise<void>((resolve) => (wake = resolve));
    if (failure) throw failure;
  };
  try {
    for await (const chunk of source) {
      await waitFor(() => inFlight < REFINE_CHUNKS_IN_FLIGHT);
      inFlight++;
      worker.postMessage({ chunk });
    }
    worker.postMessage({ end: true });
    await waitFor(() => size !== undefined);
    return size!;
  } finally {
    signal.removeEventListener('abort', aborted);
    await worker.terminate();
  }
}
