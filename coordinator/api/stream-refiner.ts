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
import { startModuleWorker } from '../../nix/runnable-module.js';

const REFINE_CHUNKS_IN_FLIGHT = 8;

const REFINER_WORKER = new URL('./stream-refiner-worker.js', import.meta.url);

export interface RefineParameters {
  level: number;
  windowLog: number;
}

/** What the refining thread is started with: zstd-napi's binding (resolved path), the file to write, the parameters. */
export interface RefinerData extends RefineParameters {
  binding: string;
  file: string;
}

/** To the refining thread: a chunk to compress, or the end of the frame. */
export type RefinerMessage = { chunk: Uint8Array } | { end: true };
/** From the refining thread: a chunk compressed (its slot is free), or the file's size once written. */
export type RefinerReply = { taken: number; done?: undefined } | { done: number; taken?: undefined };

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
  const worker = startModuleWorker(REFINER_WORKER, { workerData: { binding, file, ...parameters } satisfies RefinerData });
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
  worker.on('message', (message: RefinerReply) => {
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
      worker.postMessage({ chunk } satisfies RefinerMessage);
    }
    worker.postMessage({ end: true } satisfies RefinerMessage);
    await waitFor(() => size !== undefined);
    return size!;
  } finally {
    signal.removeEventListener('abort', aborted);
    await worker.terminate();
  }
}
