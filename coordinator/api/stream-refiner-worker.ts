/**
 * The refining thread (stream-refiner.ts, started through
 * nix/runnable-module.ts): compresses the chunks it is posted into one zstd
 * frame at the given parameters and writes it to the file itself.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import type { RefinerData, RefinerMessage, RefinerReply } from './stream-refiner.js';

const { binding, file, level, windowLog } = workerData as RefinerData;
const port = parentPort!;
// zstd-napi's binding by its resolved path: a worker module names no package (nix/runnable-module.ts).
const zstd = createRequire(binding)(binding) as typeof ZstdBinding;
const cctx = new zstd.CCtx();
cctx.setParameter(zstd.CParameter.compressionLevel, level);
cctx.setParameter(zstd.CParameter.windowLog, windowLog);
const fd = openSync(file, 'w');
const output = Buffer.allocUnsafe(zstd.cStreamOutSize());
let written = 0;
// libzstd is fed in slices: terminating a worker takes effect between calls into native code, so a slice
// bounds how long closing the coordinator waits (~25 ms at level 19 here, not ~0.4 s for a 1 MiB chunk).
const SLICE_BYTES = 64 * 1024;

function compress(chunk: Uint8Array, end: boolean): void {
  for (let at = 0; at < chunk.length; at += SLICE_BYTES) compressSlice(chunk.subarray(at, at + SLICE_BYTES), false);
  if (end) compressSlice(new Uint8Array(0), true);
}

function compressSlice(input: Uint8Array, end: boolean): void {
  for (;;) {
    const [remaining, produced, consumed] = cctx.compressStream2(output, input, end ? zstd.EndDirective.end : zstd.EndDirective.continue);
    for (let done = 0; done < produced; ) done += writeSync(fd, output, done, produced - done, written + done);
    written += produced;
    input = input.subarray(consumed);
    if (end ? remaining === 0 : input.length === 0 && produced < output.length) return;
  }
}

port.on('message', (message: RefinerMessage) => {
  if ('chunk' in message) {
    compress(message.chunk, false);
    port.postMessage({ taken: 1 } satisfies RefinerReply);
  } else {
    compress(new Uint8Array(0), true);
    closeSync(fd);
    port.postMessage({ done: written } satisfies RefinerReply);
  }
});
