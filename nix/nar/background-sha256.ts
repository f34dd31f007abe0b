/**
 * SHA-256 of a byte stream, computed on a worker thread once the stream
 * is large, so that hashing a big NAR (bench/README.md, "Figures behind code comments") overlaps
 * with decoding and storing it on the main thread. Small streams (most
 * store paths) are hashed inline and never wait for the worker to start.
 *
 * Bytes reach the worker through a fixed shared ring per hash, so memory
 * stays bounded (and allocation-free) however far the worker falls behind:
 * `update` waits when the ring is full. One worker per process, shared by
 * every hash in progress and started on first use; it keeps the process
 * alive only while a digest is owed.
 */
import { createHash } from 'node:crypto';
import { startModuleWorker } from '../runnable-module.js';

/** Below this many bytes a stream is hashed inline. */
const INLINE_MAX = 4 * 1024 * 1024;
/** Bytes in flight to the worker per hash. */
const RING_BYTES = 8 * 1024 * 1024;

const HASH_WORKER = new URL('./background-sha256-worker.js', import.meta.url);

interface Job {
  onHashed(bytes: number): void;
  onDigest(digest: Uint8Array): void;
  onError(error: Error): void;
}

/** To the hashing thread: a new job's ring, bytes at `offset` of the ring to hash, the end of a job. */
export type HashRequest = { job: number; ring?: SharedArrayBuffer; offset?: number; length?: number; end?: boolean; abandon?: boolean };
/** From the hashing thread: bytes hashed (their space in the ring is free again), or the job's digest. */
export type HashReply = { job: number; hashed: number } | { job: number; digest: Uint8Array };

class HashWorker {
  private readonly worker = startModuleWorker(HASH_WORKER);
  private readonly jobs = new Map<number, Job>();
  private nextJob = 0;

  constructor() {
    this.worker.unref();
    this.worker.on('message', (reply: HashReply) => {
      const job = this.jobs.get(reply.job);
      if (!job) return;
      if ('hashed' in reply) job.onHashed(reply.hashed);
      else {
        this.release(reply.job);
        job.onDigest(reply.digest);
      }
    });
    const fail = (error: Error) => {
      if (shared === this) shared = undefined;
      for (const [id, job] of this.jobs) {
        this.release(id);
        job.onError(error);
      }
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the hashing worker exited (code ${code})`)));
  }

  open(ring: SharedArrayBuffer, job: Job): number {
    const id = this.nextJob++;
    this.jobs.set(id, job);
    // Owing a digest keeps the process alive (an unref'd worker alone would let it exit mid-await).
    if (this.jobs.size === 1) this.worker.ref();
    this.worker.postMessage({ job: id, ring } satisfies HashRequest);
    return id;
  }

  release(id: number): void {
    if (this.jobs.delete(id) && this.jobs.size === 0) this.worker.unref();
  }

  post(message: HashRequest): void {
    this.worker.postMessage(message);
  }
}

let shared: HashWorker | undefined;

/** Incremental SHA-256 that moves to the shared worker thread when the input grows past 4 MiB. */
export class BackgroundSha256 {
  private held: Uint8Array[] | undefined = [];
  private heldBytes = 0;
  private worker: HashWorker | undefined;
  private job = -1;
  private ring: Uint8Array | undefined;
  private written = 0;
  private hashed = 0;
  private waiting: { resolve: () => void; reject: (error: Error) => void } | undefined;
  private result: Promise<Uint8Array> | undefined;
  private settle: { resolve: (digest: Uint8Array) => void; reject: (error: Error) => void } | undefined;
  private error: Error | undefined;

  /**
   * Adds `chunk`: copied or hashed before the returned promise settles,
   * never kept. Waits while the worker is a full ring (8 MiB) behind;
   * rejects if the worker failed or the hash was abandoned.
   */
  async update(chunk: Uint8Array): Promise<void> {
    if (this.error) throw this.error;
    if (this.held) {
      // Until the stream is known to be big, keep copies (the caller may reuse its buffers):
      // hashed inline by `digest()`, or handed to the worker when the stream grows.
      this.held.push(new Uint8Array(chunk));
      this.heldBytes += chunk.length;
      if (this.heldBytes >= INLINE_MAX) await this.moveToWorker();
      return;
    }
    await this.send(chunk);
  }

  /** The digest of everything added. Call once, after the last `update`. */
  digest(): Promise<Uint8Array> {
    if (this.held) {
      const hash = createHash('sha256');
      for (const chunk of this.held) hash.update(chunk);
      return Promise.resolve(hash.digest());
    }
    if (!this.result) {
      this.result = new Promise<Uint8Array>((resolve, reject) => {
        this.settle = { resolve, reject };
        if (this.error) reject(this.error);
      });
      if (!this.error) this.worker!.post({ job: this.job, end: true });
    }
    return this.result;
  }

  /** Drops the hash (the stream failed); the worker forgets it. */
  abandon(): void {
    if (this.worker && !this.result && !this.error) {
      this.worker.release(this.job);
      this.worker.post({ job: this.job, end: true, abandon: true });
    }
    this.held = undefined;
    this.fail(new Error('the hash was abandoned'));
  }

  private fail(error: Error): void {
    this.error ??= error;
    this.waiting?.reject(error);
    this.waiting = undefined;
    this.settle?.reject(error);
  }

  private async moveToWorker(): Promise<void> {
    shared ??= new HashWorker();
    this.worker = shared;
    const ring = new SharedArrayBuffer(RING_BYTES);
    this.ring = new Uint8Array(ring);
    this.job = this.worker.open(ring, {
      onHashed: (bytes) => {
        this.hashed += bytes;
        this.waiting?.resolve();
        this.waiting = undefined;
      },
      onDigest: (digest) => this.settle?.resolve(digest),
      onError: (error) => this.fail(error),
    });
    const held = this.held!;
    this.held = undefined;
    for (const chunk of held) await this.send(chunk);
  }

  /** Copies `chunk` into the ring, piece by piece as space frees up, and tells the worker. */
  private async send(chunk: Uint8Array): Promise<void> {
    const ring = this.ring!;
    let done = 0;
    while (done < chunk.length) {
      while (this.written - this.hashed >= ring.length) {
        if (this.error) throw this.error;
        await new Promise<void>((resolve, reject) => {
          this.waiting = { resolve, reject };
        });
      }
      const offset = this.written % ring.length;
      const length = Math.min(chunk.length - done, ring.length - (this.written - this.hashed), ring.length - offset);
      ring.set(chunk.subarray(done, done + length), offset);
      this.worker!.post({ job: this.job, offset, length });
      this.written += length;
      done += length;
    }
  }
}
