/**
 * A materializer writer thread (started by materialize.ts, see
 * nix/runnable-module.ts): executes each job's operations in order through
 * an InlineSink, and hands each message's arena back. After a failure a job
 * executes nothing more; its reply carries the error.
 */
import { parentPort } from 'node:worker_threads';
import { InlineSink, OP_CLOSE, OP_OPEN, OP_SYMLINK, OP_WRITE, type WriterError, type WriterReply, type WriterRequest } from './materialize-sink.js';

interface JobState {
  sink: InlineSink;
  failed: boolean;
}

const port = parentPort!;
const jobs = new Map<number, JobState>();

function run(sink: InlineSink, ops: WriterRequest['ops'], arena: Uint8Array): void {
  for (let i = 0; i < ops.length; ) {
    const op = ops[i++];
    switch (op) {
      case OP_OPEN: {
        const at = ops[i++] as string;
        sink.open(at, ops[i++] as number);
        break;
      }
      case OP_WRITE: {
        const offset = ops[i++] as number;
        sink.writeRange(arena, offset, ops[i++] as number);
        break;
      }
      case OP_CLOSE:
        sink.close();
        break;
      case OP_SYMLINK: {
        const at = ops[i++] as string;
        sink.symlink(at, ops[i++] as string);
        break;
      }
      default:
        throw new Error(`materialize writer: unknown operation ${String(op)}`);
    }
  }
}

function writerError(caught: unknown): WriterError {
  const error = caught as NodeJS.ErrnoException;
  return { message: String(error?.message), code: error?.code, errno: error?.errno, syscall: error?.syscall, path: error?.path };
}

port.on('message', ({ job, ops, arena, exactModes, end }: WriterRequest) => {
  let state = jobs.get(job);
  if (state === undefined) jobs.set(job, (state = { sink: new InlineSink(), failed: false }));
  let error: WriterError | undefined;
  if (!state.failed) {
    state.sink.exactModes = exactModes;
    try {
      run(state.sink, ops, arena);
    } catch (caught) {
      state.failed = true;
      error = writerError(caught);
    }
  }
  if (end || state.failed) {
    try {
      state.sink.closeOpenFile();
    } catch {
      // Already failed, or ending: the tree is removed or redone.
    }
  }
  if (end) jobs.delete(job);
  const reply: WriterReply = { job, end, error, arena: arena.buffer as ArrayBuffer };
  port.postMessage(reply, [reply.arena]);
});
