/**
 * SHA-256 of a byte stream, computed on a worker thread once the stream
 * is large, so that hashing a big NAR (~0.5 ms per MiB here) overlaps
 * with decoding and storing it on the main thread. Small streams (most
 * store paths) are hashed inline and never wait for the worker to start.
 *
 * One worker per process, shared by every hash in progress and started
 * on first use; it keeps the process alive only while a digest is owed.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** Below this many bytes a stream is hashed inline. */
const INLINE_MAX = 4 * 1024 * 1024;
/** Bytes sent to the worker but not hashed yet, before `update` makes the caller wait. */
const OUTSTANDING_MAX = 32 * 1024 * 1024;

/** The worker's source (CommonJS, evaluated: no file to resolve under tsx, vitest or build/). */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const jobs = new Map();
parentPort.on('message', (message) => {
  let hash = jobs.get(message.job);
  if (!hash) jobs.set(message.job, (hash = createHash('sha256')));
  if (message.bytes) {
    hash.update(message.bytes);
    parentPort.postMessage({ job: message.job, hashed: message.bytes.length });
  }
  if (message.end) {
    jobs.delete(message.job);
    if (!message.abandon) parentPort.postMessage({ job: message.job, digest: hash.digest() });
  }
});
`;

interface Job {
  onHashed(bytes: number): void;
  onDigest(digest: Uint8Array): void;
  onError(error: Error): void;
}

type WorkerReply = { job: number; hashed: number } | { job: number; digest: Uint8Array };

class HashWorker {
  private readonly worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
  private readonly jobs = new Map<number, Job>();
  private nextJob = 0;
  private owed = 0;
  failure: Error | undefined;

  constructor() {
    this.worker.unref();
    this.worker.on('message', (reply: WorkerReply) => {
      const job = this.jobs.get(reply.job);
      if (!job) return;
      if ('hashed' in reply) job.onHashed(reply.hashed);
      else {
        this.release(reply.job);
        job.onDigest(reply.digest);
      }
    });
    const fail = (error: Error) => {
      this.failure = error;
      for (const [id, job] of this.jobs) {
        this.release(id);
        job.onError(error);
      }
      if (shared === this) shared = undefined;
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the hashing worker exited (code ${code})`)));
  }

  open(job: Job): number {
    const id = this.nextJob++;
    this.jobs.set(id, job);
    // Owing a digest keeps the process alive (an unref'd worker alone would let it exit mid-await).
    if (this.owed++ === 0) this.worker.ref();
    return id;
  }

  private release(id: number): void {
    if (!this.jobs.delete(id)) return;
    if (--this.owed === 0) this.worker.unref();
  }

  /** Sends bytes (transferred if `owned`, which must then be the whole of their buffer; else copied) and/or the end. */
  send(id: number, bytes: Uint8Array | undefined, end: boolean, abandon = false, owned = false): void {
    if (abandon) this.release(id);
    const copy = bytes && !owned ? new Uint8Array(bytes) : bytes;
    this.worker.postMessage({ job: id, bytes: copy, end, abandon }, copy ? [copy.buffer as ArrayBuffer] : []);
  }
}

let shared: HashWorker | undefined;

/** Incremental SHA-256 that moves to the shared worker thread when the input grows past 4 MiB. */
export class BackgroundSha256 {
  private inline = true;
  private held: Uint8Array[] = [];
  private heldBytes = 0;
  private worker: HashWorker | undefined;
  private job = -1;
  private outstanding = 0;
  private waiting: { resolve: () => void; reject: (error: Error) => void } | undefined;
  private result: Promise<Uint8Array> | undefined;
  private settle: { resolve: (digest: Uint8Array) => void; reject: (error: Error) => void } | undefined;
  private error: Error | undefined;

  /**
   * Adds `chunk`. Resolves at once unless the worker is more than 32 MiB
   * behind (then when it has caught up); rejects if the worker failed.
   * The chunk is copied or hashed before this returns, never kept.
   */
  async update(chunk: Uint8Array): Promise<void> {
    if (this.error) throw this.error;
    if (this.inline) {
      // Until the stream is known to be big, keep copies (the caller may reuse its buffers):
      // hashed inline by `digest()`, or handed to the worker when the stream grows.
      this.held.push(new Uint8Array(chunk));
      this.heldBytes += chunk.length;
      if (this.heldBytes >= INLINE_MAX) this.moveToWorker();
      return;
    }
    this.post(chunk);
    if (this.outstanding > OUTSTANDING_MAX) {
      await new Promise<void>((resolve, reject) => {
        this.waiting = { resolve, reject };
      });
    }
  }

  /** The digest of everything added. Call once, after the last `update`. */
  digest(): Promise<Uint8Array> {
    if (this.inline) {
      const hash = createHash('sha256');
      for (const chunk of this.held) hash.update(chunk);
      return Promise.resolve(hash.digest());
    }
    if (!this.result) {
      this.result = new Promise<Uint8Array>((resolve, reject) => {
        this.settle = { resolve, reject };
        if (this.error) reject(this.error);
      });
      if (!this.error) this.worker!.send(this.job, undefined, true);
    }
    return this.result;
  }

  /** Drops the hash (the stream failed); the worker forgets it. */
  abandon(): void {
    if (this.worker && !this.result && !this.error) this.worker.send(this.job, undefined, true, true);
    this.inline = false;
    this.held = [];
    this.error ??= new Error('the hash was abandoned');
  }

  private moveToWorker(): void {
    shared ??= new HashWorker();
    this.worker = shared;
    this.job = this.worker.open({
      onHashed: (bytes) => {
        this.outstanding -= bytes;
        if (this.waiting && this.outstanding <= OUTSTANDING_MAX / 2) {
          this.waiting.resolve();
          this.waiting = undefined;
        }
      },
      onDigest: (digest) => this.settle?.resolve(digest),
      onError: (error) => {
        this.error = error;
        this.waiting?.reject(error);
        this.settle?.reject(error);
      },
    });
    this.inline = false;
    const held = this.held;
    this.held = [];
    for (const chunk of held) this.post(chunk, true);
  }

  private post(chunk: Uint8Array, owned = false): void {
    this.outstanding += chunk.length;
    this.worker!.send(this.job, chunk, false, false, owned);
  }
}
