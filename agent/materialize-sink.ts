/**
 * Where the materializer's files and symlinks go (`Sink`), and the one
 * implementation that creates them (`InlineSink`): on the materializer's
 * own thread for a small tree, and inside each writer thread
 * (materialize-writer-worker.ts) for a large one. The messages between the
 * materializer and its writer threads are typed here too.
 */
import { closeSync, fchmodSync, futimesSync, lutimesSync, openSync, symlinkSync, writeSync } from 'node:fs';

/**
 * Where the files and symlinks of a tree go: written at once (`InlineSink`)
 * or by the writer threads (`ThreadSink`, materialize.ts). A file is `open`,
 * `write`* and `close`. Directories are not theirs: `ClosureMaterializer`
 * creates them before, and seals them after `finish`.
 */
export interface Sink {
  /**
   * With a umask that clears none of 0555 (checked per tree), the mode given
   * to open() is already exact; otherwise files are fchmod'ed.
   */
  exactModes: boolean;
  open(at: string, mode: number): void;
  /** `bytes` may be reused once this returns. */
  write(bytes: Uint8Array): void;
  /** Sets the file's times (and mode) through its descriptor, then closes it. */
  close(): void;
  symlink(at: string, target: string): void;
  /** A promise to wait for before giving more (backpressure), or undefined. Throws a failure already known. */
  ready(): Promise<void> | undefined;
  /**
   * Ends the tree, resolving only once nothing touches it any more (so that
   * a failed one can be removed). Throws a failure of its own unless `failed`
   * (the caller's error then stands).
   */
  finish(failed: boolean): Promise<void>;
}

/** Creates each file and symlink at once, on the calling thread: a file is created with its final mode and timed through its descriptor. */
export class InlineSink implements Sink {
  exactModes = false;
  private fd = -1;
  private mode = 0;

  open(at: string, mode: number): void {
    this.fd = openSync(at, 'wx', mode);
    this.mode = mode;
  }

  write(bytes: Uint8Array): void {
    this.writeRange(bytes, 0, bytes.length);
  }

  /** Writes `bytes[offset..offset+length]` (a writer thread's slice of its message, without a view per write). */
  writeRange(bytes: Uint8Array, offset: number, length: number): void {
    for (let done = 0; done < length; ) done += writeSync(this.fd, bytes, offset + done, length - done);
  }

  close(): void {
    const fd = this.fd;
    this.fd = -1;
    try {
      if (!this.exactModes) fchmodSync(fd, this.mode);
      futimesSync(fd, 1, 1);
    } finally {
      closeSync(fd);
    }
  }

  symlink(at: string, target: string): void {
    symlinkSync(target, at);
    lutimesSync(at, 1, 1);
  }

  ready(): undefined {
    return undefined;
  }

  async finish(): Promise<void> {
    this.closeOpenFile();
  }

  /** Closes a file left open by a failure (its bytes are incomplete: the tree is removed or redone). */
  closeOpenFile(): void {
    const fd = this.fd;
    this.fd = -1;
    if (fd !== -1) closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// Messages to and from a writer thread: each executes a stream of file
// operations in order, through an InlineSink per job.

/** Operations, flattened into `WriterRequest.ops` with their arguments. */
export const OP_OPEN = 1; // path, mode
export const OP_WRITE = 2; // offset, length (bytes in the message's arena)
export const OP_CLOSE = 3; // (fchmod unless the job's modes are exact, futimes, close)
export const OP_SYMLINK = 4; // path, target

export type WriterOp = typeof OP_OPEN | typeof OP_WRITE | typeof OP_CLOSE | typeof OP_SYMLINK;

export interface WriterRequest {
  job: number;
  ops: (WriterOp | string | number)[];
  /** A view of a whole transferred buffer, handed back in the reply. */
  arena: Uint8Array;
  exactModes: boolean;
  end: boolean;
}

/** What a failed operation threw, as far as it crosses threads (an Error's own properties do not). */
export interface WriterError {
  message: string;
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

export interface WriterReply {
  job: number;
  end: boolean;
  arena: ArrayBuffer;
  error?: WriterError;
}
