/**
 * Materializing store paths into the store directory, as Nix lays them
 * out: files read-only (0444, or 0555 when executable), directories 0555,
 * every mtime 1. Each path is written under a temp name in the same
 * directory and renamed into place, so a store path is either absent or
 * complete — a crash leaves only a temp tree, which `removeStaleTemps`
 * deletes at the next start.
 *
 * A deployment overlaps this with the fetch (`ClosureMaterializer`): the
 * trees are laid out as soon as their directories are known, and each file
 * is written when the fetch has verified its blob; whatever the fetch did
 * not bring (already local, or too large to batch) comes from the castore.
 *
 * Speed (bench/materialize.bench.ts: 1.8-1.9x the simple version on the
 * 20,000-file closure, on 2 cores): a file is created with its final mode
 * and gets its times through its descriptor (open, write, futimes, close:
 * no chmod or utimes by path). Blobs are read from the castore in batches
 * with `readBlobBatch` (one index query, adjacent packed blobs in one
 * read, no await per file). Large trees are written by writer threads
 * while this thread reads or fetches: reading and creating files (kernel
 * time) each took about half the time, and now overlap. Small trees are
 * written inline, where a thread's round trip would cost more than it
 * saves.
 */
import { chmodSync, closeSync, existsSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { CastoreError, digestFromBytes, blake3, type LocalCastore, type Digest, type Entry, type FileNode, type Node, type StorePathInfo } from '../castore/index.js';
import { storePathBaseName, storePathLocation } from '../nix/store-path.js';
import { startModuleWorker } from '../nix/runnable-module.js';
import { InlineSink, OP_CLOSE, OP_OPEN, OP_SYMLINK, OP_WRITE, type Sink, type WriterError, type WriterReply, type WriterRequest } from './materialize-sink.js';

const TEMP_PREFIX = '.ferry-tmp-';

/** Trees with at least this many nodes (or files of at least this many bytes) go through the writer threads. */
const THREAD_MIN_NODES = 128;
const THREAD_MIN_FILE_BYTES = 8 * 1024 * 1024;
/**
 * Files up to this size are read with `readBlobBatch`: one index query per
 * directory, adjacent packed blobs in one read, no await per file. Larger
 * ones are streamed with `readBlob`.
 */
const BATCH_FILE_MAX = 4 * 1024 * 1024;
/** Blob ids per `readBlobBatch` call. */
const BATCH_IDS = 1000;

/** Whether the umask leaves 0555 and 0444 intact (`dir` was just created with mode 0755). */
function umaskKeepsModes(dir: string): boolean {
  return (lstatSync(dir).mode & 0o777) === 0o755;
}

// ---------------------------------------------------------------------------
// Writer threads (materialize-writer-worker.ts): each executes a stream of
// file operations in order, through the same InlineSink as a small tree.

const WRITER_MODULE = new URL('./materialize-writer-worker.js', import.meta.url);

/**
 * Writer threads: two where there are two cores. Creating files is kernel
 * time that two threads share well when it is high (ext4 scanning for free
 * inodes after many deletions: clearly faster than one writer; bench/README.md,
 * "Figures behind code comments"); otherwise the second one changes little.
 */
const WRITER_THREADS = Math.min(2, availableParallelism());
/** Bytes per message (file bytes are copied into it; a larger file spans messages). */
const ARENA_BYTES = 1024 * 1024;
/** Operations per message, at most (then it is sent with a part-empty arena). */
const MESSAGE_MAX_OPS = 4096;
/** Messages a tree may have queued per writer before the reader waits (bounds memory to a few MiB). */
const MAX_QUEUED_MESSAGES = 4;
/** How long idle writers keep their spare arenas. */
const SPARE_ARENAS_MS = 2000;
/**
 * How long an idle writer thread lives: a closure is many store paths in a
 * row, but between deployments (most of an agent's life) each thread's
 * isolate would hold memory for nothing. A new one starts in milliseconds.
 */
const WRITER_IDLE_MS = 10_000;

interface JobHandlers {
  reply(reply: WriterReply): void;
  died(error: Error): void;
}

/** A writer thread, started on first use, keeping the process alive only while it has jobs, stopped after WRITER_IDLE_MS idle. */
class WriterThread {
  private readonly worker: Worker;
  private readonly jobs = new Map<number, JobHandlers>();
  private nextJob = 0;
  /** Arenas back from the writer, reused (fresh ones cost zero-filling and page faults), dropped after a while idle. */
  private readonly spareArenas: ArrayBuffer[] = [];
  private dropSpares: NodeJS.Timeout | undefined;
  private retire: NodeJS.Timeout | undefined;
  dead = false;

  constructor() {
    this.worker = startModuleWorker(WRITER_MODULE, { name: 'ferry-materialize' });
    this.worker.unref();
    this.worker.on('message', (reply: WriterReply) => {
      if (this.spareArenas.length <= MAX_QUEUED_MESSAGES) this.spareArenas.push(reply.arena);
      this.jobs.get(reply.job)?.reply(reply);
    });
    const die = (error: Error) => {
      this.dead = true;
      for (const job of this.jobs.values()) job.died(error);
      this.jobs.clear();
    };
    this.worker.on('error', (error) => die(new Error(`materialize writer thread failed: ${error.message}`, { cause: error })));
    this.worker.on('exit', (code) => die(new Error(`materialize writer thread exited (code ${code})`)));
  }

  /** Stops an idle thread; `writers()` starts a new one when needed. */
  private retireIfIdle(): void {
    if (this.jobs.size > 0 || this.dead) return;
    this.dead = true;
    void this.worker.terminate();
  }

  arena(): ArrayBuffer {
    return this.spareArenas.pop() ?? new ArrayBuffer(ARENA_BYTES);
  }

  startJob(handlers: JobHandlers): number {
    const job = this.nextJob++;
    if (this.jobs.size === 0) this.worker.ref();
    clearTimeout(this.dropSpares);
    clearTimeout(this.retire);
    this.jobs.set(job, handlers);
    return job;
  }

  send(request: WriterRequest): void {
    this.worker.postMessage(request, [request.arena.buffer as ArrayBuffer]);
  }

  endJob(job: number): void {
    this.jobs.delete(job);
    if (this.jobs.size === 0) {
      this.worker.unref();
      // A closure is many store paths in a row: keep the arenas for the next one, not for ever.
      this.dropSpares = setTimeout(() => (this.spareArenas.length = 0), SPARE_ARENAS_MS).unref();
      this.retire = setTimeout(() => this.retireIfIdle(), WRITER_IDLE_MS).unref();
    }
  }
}

let writerThreads: WriterThread[] = [];

/** The writer threads, or none when none can be started (trees are then written inline). */
function writers(): WriterThread[] {
  writerThreads = writerThreads.filter((thread) => !thread.dead);
  try {
    while (writerThreads.length < WRITER_THREADS) writerThreads.push(new WriterThread());
  } catch {
    // Fewer threads, or none.
  }
  return writerThreads;
}

function writerError(error: WriterError): Error {
  return Object.assign(new Error(error.message), {
    ...(error.code !== undefined ? { code: error.code } : {}),
    ...(error.errno !== undefined ? { errno: error.errno } : {}),
    ...(error.syscall !== undefined ? { syscall: error.syscall } : {}),
    ...(error.path !== undefined ? { path: error.path } : {}),
  });
}

/** One writer thread's part of a tree: its operations, batched into messages, file bytes copied into each message's arena. */
class Channel {
  private readonly job: number;
  private ops: WriterRequest['ops'] = [];
  private arena: Uint8Array;
  private used = 0;
  queued = 0;
  failure: Error | undefined;
  private ended!: () => void;
  private readonly endReply = new Promise<void>((resolve) => (this.ended = resolve));

  constructor(
    private readonly thread: WriterThread,
    private readonly sink: { readonly exactModes: boolean },
    onReply: () => void,
  ) {
    this.arena = new Uint8Array(thread.arena());
    this.job = thread.startJob({
      reply: (reply) => {
        this.queued--;
        if (reply.error) this.failure ??= writerError(reply.error);
        if (reply.end) this.ended();
        onReply();
      },
      died: (error) => {
        this.failure ??= error;
        this.ended();
        onReply();
      },
    });
  }

  open(at: string, mode: number): void {
    this.ops.push(OP_OPEN, at, mode);
  }

  write(bytes: Uint8Array): void {
    for (let done = 0; done < bytes.length; ) {
      if (this.used === this.arena.length) this.send(false);
      const length = Math.min(bytes.length - done, this.arena.length - this.used);
      this.arena.set(done === 0 && length === bytes.length ? bytes : bytes.subarray(done, done + length), this.used);
      this.ops.push(OP_WRITE, this.used, length);
      this.used += length;
      done += length;
    }
  }

  close(): void {
    this.ops.push(OP_CLOSE);
    this.sendIfIdle();
  }

  symlink(at: string, target: string): void {
    this.ops.push(OP_SYMLINK, at, target);
    this.sendIfIdle();
  }

  /** Between files: sends at once while the writer has nothing to do (so it starts early), else when the message is full. */
  private sendIfIdle(): void {
    if (this.queued === 0 || this.ops.length >= MESSAGE_MAX_OPS) this.send(false);
  }

  private send(end: boolean): void {
    this.thread.send({ job: this.job, ops: this.ops, arena: this.arena.subarray(0, this.used), exactModes: this.sink.exactModes, end });
    this.queued++;
    this.ops = [];
    this.arena = end ? new Uint8Array(0) : new Uint8Array(this.thread.arena());
    this.used = 0;
  }

  /** Ends the job and waits until the writer has finished it (or died); after a failure, with nothing more to do. */
  async finish(failed: boolean): Promise<void> {
    if (failed) {
      this.ops = [];
      this.used = 0;
    }
    if (this.thread.dead) this.ended();
    else this.send(true);
    await this.endReply;
    this.thread.endJob(this.job);
  }
}

/** Files and symlinks go to the writer threads, each file to the one with the least queued. */
class ThreadSink implements Sink {
  exactModes = false;
  private readonly channels: Channel[];
  private current: Channel;
  private next = 0;
  /** Callers waiting for the writers to catch up (concurrent fetch requests each offer blobs). */
  private waiters: (() => void)[] = [];

  constructor(threads: readonly WriterThread[]) {
    this.channels = threads.map((thread) => new Channel(thread, this, () => this.wakeWaiters()));
    this.current = this.channels[0]!;
  }

  private pick(): Channel {
    // Least queued; among equals, in turn.
    let best = this.channels[this.next]!;
    for (const channel of this.channels) if (channel.queued < best.queued) best = channel;
    this.next = (this.next + 1) % this.channels.length;
    return best;
  }

  open(at: string, mode: number): void {
    this.current = this.pick();
    this.current.open(at, mode);
  }

  write(bytes: Uint8Array): void {
    this.current.write(bytes);
  }

  close(): void {
    this.current.close();
  }

  symlink(at: string, target: string): void {
    this.pick().symlink(at, target);
  }

  private failure(): Error | undefined {
    return this.channels.find((channel) => channel.failure)?.failure;
  }

  private queued(): number {
    let queued = 0;
    for (const channel of this.channels) queued += channel.queued;
    return queued;
  }

  ready(): Promise<void> | undefined {
    const failure = this.failure();
    if (failure) throw failure;
    return this.queued() < MAX_QUEUED_MESSAGES * this.channels.length ? undefined : this.drain();
  }

  private wakeWaiters(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  private async drain(): Promise<void> {
    while (this.queued() >= MAX_QUEUED_MESSAGES * this.channels.length && !this.failure()) await new Promise<void>((resolve) => this.waiters.push(resolve));
    const failure = this.failure();
    if (failure) throw failure;
  }

  async finish(failed: boolean): Promise<void> {
    await Promise.all(this.channels.map((channel) => channel.finish(failed)));
    if (failed) return;
    const failure = this.failure();
    if (failure) throw failure;
  }
}

// ---------------------------------------------------------------------------
// Walking the castore.

/** The bytes of many blobs back to back, in the order of `ids`, read lazily through `readBlobBatch`. */
class BatchedBlobs {
  private next = 0;
  private runs: Iterator<Uint8Array> | undefined;
  private run: Uint8Array = new Uint8Array(0);
  private offset = 0;

  constructor(
    private readonly store: LocalCastore,
    private readonly ids: readonly Digest[],
    private readonly sizes: readonly number[],
  ) {}

  /** Gives the next `length` bytes to `sink.write`, in one or more pieces. */
  writeTo(sink: Sink, length: number): void {
    while (length > 0) {
      if (this.offset === this.run.length) this.nextRun();
      const piece = Math.min(length, this.run.length - this.offset);
      sink.write(this.run.subarray(this.offset, this.offset + piece));
      this.offset += piece;
      length -= piece;
    }
  }

  private nextRun(): void {
    for (;;) {
      const result = this.runs?.next();
      if (result && !result.done) {
        this.run = result.value;
        this.offset = 0;
        if (this.run.length > 0) return;
        continue;
      }
      if (this.next >= this.ids.length) throw new Error('materialize: the castore returned fewer bytes than its blobs have');
      const ids = this.ids.slice(this.next, this.next + BATCH_IDS);
      const batch = this.store.readBlobBatch(ids);
      batch.sizes.forEach((size, index) => {
        const expected = this.sizes[this.next + index];
        if (size !== expected) throw new CastoreError('BLOB_CORRUPT', `blob ${ids[index]} has ${size} bytes, its directory entry says ${expected}`, { objectId: ids[index] });
      });
      this.next += ids.length;
      this.runs = batch.bytes[Symbol.iterator]();
    }
  }
}

/** A file of a planned tree that waits for its blob. */
interface FileTarget {
  at: string;
  node: FileNode;
}

/** A store path being laid out under its temp name. */
interface PlannedPath {
  info: StorePathInfo;
  temp: string;
  final: string;
}

/** Whether `at` is a regular file holding exactly `node` as materialized: mode, mtime 1 and bytes (hashed). */
function holdsFile(at: string, node: FileNode): boolean {
  try {
    const stat = lstatSync(at);
    if (!stat.isFile() || stat.size !== node.size || (stat.mode & 0o777) !== (node.executable ? 0o555 : 0o444) || stat.mtimeMs !== 1000) return false;
    return node.size === 0 || digestFromBytes(blake3(readFileSync(at))) === node.digest;
  } catch {
    return false;
  }
}

/**
 * Materializes a set of store paths, overlapping with their fetch: `plan`
 * lays out each tree under a temp name (directories, symlinks and empty
 * files at once), `offer` writes the files waiting for a blob the fetch
 * has just verified, and `finish` writes the rest from the castore, seals
 * the trees and renames them into place, references first. A store path
 * is thus either absent or complete; `abort` (or, after a crash,
 * `removeStaleTemps`) deletes the temp trees.
 */
export class ClosureMaterializer {
  private readonly planned: PlannedPath[] = [];
  /** Files still waiting, by blob. */
  private readonly waiting = new Map<Digest, FileTarget[]>();
  /** Directories to seal, children before their parent. */
  private readonly directories: string[] = [];
  private sink: Sink | undefined;
  private umaskChecked = false;

  constructor(
    private readonly store: LocalCastore,
    private readonly storeDir: string,
  ) {}

  /**
   * Lays out the trees of `infos` that are not in the store directory yet
   * (call once, before any `offer`). `readDirectory` gives a directory's
   * entries; by default the castore's (a fetch passes the directories it
   * has verified but not committed yet). A temp tree that an earlier
   * attempt left (`suspend`, or a crash) is taken up again: its files that
   * hold exactly their blob (hashed) are kept, anything else in it is
   * replaced, and temp trees of paths not planned are deleted. Returns the
   * files still waiting for a blob, one per blob. Throws what creating the
   * layout or reading a directory throws; `abort` then cleans up.
   */
  plan(infos: readonly StorePathInfo[], readDirectory: (id: Digest) => readonly Entry[] = (id) => this.store.readDirectory(id)): FileNode[] {
    if (this.sink) throw new Error('ClosureMaterializer.plan: called twice');
    const todo = infos.filter((info) => !existsSync(storePathLocation(this.storeDir, info.storePath)));
    let nodes = 0;
    for (const info of todo) nodes += info.root.type === 'directory' ? info.root.size : info.root.type === 'file' && info.root.size >= THREAD_MIN_FILE_BYTES ? THREAD_MIN_NODES : 1;
    const threads = nodes >= THREAD_MIN_NODES ? writers() : [];
    this.sink = threads.length > 0 ? new ThreadSink(threads) : new InlineSink();
    if (todo.length > 0) mkdirSync(this.storeDir, { recursive: true });
    // One temp name per store path, so that the next attempt finds what this one wrote.
    const temps = new Map(todo.map((info) => [`${TEMP_PREFIX}${storePathBaseName(info.storePath)}`, info]));
    removeStaleTemps(this.storeDir, new Set(temps.keys()));
    for (const [name, info] of temps) {
      const planned = { info, temp: path.join(this.storeDir, name), final: storePathLocation(this.storeDir, info.storePath) };
      this.planned.push(planned);
      this.layOut(info.root, planned.temp, readDirectory, lstatExists(planned.temp));
    }
    return [...this.waiting.values()].map((targets) => targets[0]!.node);
  }

  /** `resuming`: `at` may already exist, from an earlier attempt. */
  private layOut(node: Node, at: string, readDirectory: (id: Digest) => readonly Entry[], resuming: boolean): void {
    const sink = this.sink!;
    if (resuming && node.type !== 'directory') {
      if (node.type === 'file' && holdsFile(at, node)) return;
      removeTree(at);
    }
    switch (node.type) {
      case 'symlink':
        sink.symlink(at, node.target);
        return;
      case 'file':
        if (node.size === 0) {
          sink.open(at, node.executable ? 0o555 : 0o444);
          sink.close();
          return;
        }
        {
          const targets = this.waiting.get(node.digest);
          if (targets) targets.push({ at, node });
          else this.waiting.set(node.digest, [{ at, node }]);
        }
        return;
      case 'directory':
        if (resuming && lstatExists(at)) {
          if (lstatSync(at).isDirectory()) {
            chmodSync(at, 0o755);
            const entries = readDirectory(node.digest);
            const names = new Set(entries.map((entry) => entry.name));
            for (const name of readdirSync(at)) if (!names.has(name)) removeTree(path.join(at, name));
            for (const entry of entries) this.layOut(entry, `${at}/${entry.name}`, readDirectory, true);
            this.directories.push(at);
            return;
          }
          removeTree(at);
        }
        mkdirSync(at, { mode: 0o755 });
        if (!this.umaskChecked) {
          // Learnt before any file exists: with a umask that clears none of 0555, open() gives the exact mode.
          this.umaskChecked = true;
          sink.exactModes = umaskKeepsModes(at);
        }
        // Entry names are valid (no '/', not '.' or '..'): concatenation is the join.
        for (const entry of readDirectory(node.digest)) this.layOut(entry, `${at}/${entry.name}`, readDirectory, false);
        this.directories.push(at);
        return;
    }
  }

  /**
   * Writes the files waiting for blob `id`. `bytes` must be the blob,
   * verified; they may be reused once the returned promise settles (which
   * waits while the writers are behind).
   */
  async offer(id: Digest, bytes: Uint8Array): Promise<void> {
    const targets = this.waiting.get(id);
    if (!targets || bytes.length !== targets[0]!.node.size) return;
    this.waiting.delete(id);
    const sink = this.sink!;
    for (const { at, node } of targets) {
      sink.open(at, node.executable ? 0o555 : 0o444);
      sink.write(bytes);
      sink.close();
    }
    await sink.ready();
  }

  /**
   * Writes the files no `offer` gave (from the castore: a missing blob
   * throws BLOB_NOT_FOUND…), seals the trees and renames them into place,
   * references first. Returns how many store paths it published.
   */
  async finish(): Promise<number> {
    const sink = this.sink ?? new InlineSink();
    let failed = true;
    try {
      const batched: FileTarget[] = [];
      for (const [digest, waiting] of this.waiting) {
        const targets = this.linkFromCastore(digest, this.linkFromStore(digest, waiting));
        for (const target of targets) {
          if (target.node.size > BATCH_FILE_MAX) await writeStreamed(this.store, sink, target.node, target.at);
          else batched.push(target);
        }
      }
      this.waiting.clear();
      const batch = new BatchedBlobs(this.store, batched.map((target) => target.node.digest), batched.map((target) => target.node.size));
      for (const { at, node } of batched) {
        sink.open(at, node.executable ? 0o555 : 0o444);
        batch.writeTo(sink, node.size);
        sink.close();
        const wait = sink.ready();
        if (wait) await wait;
      }
      failed = false;
    } finally {
      await sink.finish(failed);
      this.sink = undefined;
    }
    // Once nothing is created in them any more (that changes a directory's mtime), children first.
    for (const at of this.directories) {
      chmodSync(at, 0o555);
      utimesSync(at, 1, 1);
    }
    if (this.planned.length === 0) return 0;
    // Each rename publishes a complete path; the directory is synced after each, so the references stay first.
    const dirFd = openSync(this.storeDir, 'r');
    try {
      for (const planned of this.planned) {
        renameSync(planned.temp, planned.final);
        fsyncSync(dirFd);
      }
    } finally {
      closeSync(dirFd);
    }
    const published = this.planned.length;
    this.planned.length = 0;
    return published;
  }

  /**
   * Hard-links the targets of an adopted blob to its store file, verified
   * first (LocalCastore.verifiedStoreFile), when they have its mode: identical,
   * read-only, mtime 1, so nothing is written again and the disk holds the
   * bytes once across generations (as Nix's store optimisation does).
   * Returns the targets left to write: another mode, or a link refused.
   */
  private linkFromStore(digest: Digest, targets: FileTarget[]): FileTarget[] {
    const source = this.store.verifiedStoreFile(digest);
    if (source === undefined) return targets;
    const sourceExecutable = (lstatSync(source).mode & 0o100) !== 0;
    return targets.filter(({ at, node }) => {
      if (node.executable !== sourceExecutable) return true;
      try {
        linkSync(source, at);
        return false;
      } catch {
        return true; // another file system, too many links: written instead
      }
    });
  }

  /**
   * Hard-links the targets of a large blob the castore holds as a file of
   * its own (one this deployment fetched) instead of copying its bytes,
   * when they have the first target's mode: the castore adopts the store's
   * name for it at the end of the deployment (keepBytesOnce) and drops its
   * own, so the bytes are written to disk once. The castore verified them
   * when they arrived. Returns the targets left to write.
   */
  private linkFromCastore(digest: Digest, targets: FileTarget[]): FileTarget[] {
    if (targets.length === 0) return targets;
    const source = this.store.ownBlobFile(digest);
    if (source === undefined) return targets;
    const executable = targets[0]!.node.executable;
    let linked = false;
    const left = targets.filter(({ at, node }) => {
      if (node.executable !== executable) return true;
      try {
        linkSync(source, at);
        linked = true;
        return false;
      } catch {
        return true; // another file system: written instead
      }
    });
    // The store's mode and mtime (shared with the castore's name for it, which cares for neither).
    if (linked) {
      chmodSync(source, executable ? 0o555 : 0o444);
      utimesSync(source, 1, 1);
    }
    return left;
  }

  /** Stops writing and deletes the temp trees (what was already renamed stays: it is complete). */
  async abort(): Promise<void> {
    await this.sink?.finish(true);
    this.sink = undefined;
    this.waiting.clear();
    for (const planned of this.planned.splice(0)) removeTree(planned.temp);
  }

  /**
   * Lets the writers finish what was offered, then stops, leaving the temp
   * trees for the next attempt: the next `plan` of these store paths keeps
   * every file already complete (and checks it first).
   */
  async suspend(): Promise<void> {
    try {
      await this.sink?.finish(false);
    } catch {
      // A writer failed: whatever it left is checked, and redone, by the next plan.
    }
    this.sink = undefined;
    this.waiting.clear();
  }
}

async function writeStreamed(store: LocalCastore, sink: Sink, node: FileNode, at: string): Promise<void> {
  sink.open(at, node.executable ? 0o555 : 0o444);
  for await (const chunk of store.readBlob(node.digest)) {
    sink.write(chunk);
    await sink.ready();
  }
  sink.close();
}

/**
 * Writes `info`'s tree to `storeDir` from the castore unless it is already
 * there. Refuses nothing silently: a missing castore object throws
 * (BLOB_NOT_FOUND…) and leaves nothing in the store directory. Returns
 * whether it wrote anything.
 */
export async function materializeStorePath(store: LocalCastore, info: StorePathInfo, storeDir: string): Promise<boolean> {
  const materializer = new ClosureMaterializer(store, storeDir);
  try {
    materializer.plan([info]);
    return (await materializer.finish()) > 0;
  } catch (error) {
    await materializer.abort();
    throw error;
  }
}

/** Deletes a tree Ferry made read-only (directories need write permission to be emptied). */
export function removeTree(target: string): void {
  let stat;
  try {
    stat = lstatSync(target);
  } catch {
    return;
  }
  if (stat.isDirectory()) {
    chmodSync(target, 0o755);
    for (const entry of readdirSync(target)) removeTree(path.join(target, entry));
  }
  rmSync(target, { recursive: true, force: true });
}

function lstatExists(at: string): boolean {
  try {
    lstatSync(at);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes the temp trees in the store directory but those named in `keep`
 * (all of them: an agent with no deployment in progress, at start).
 */
export function removeStaleTemps(storeDir: string, keep: ReadonlySet<string> = new Set()): number {
  if (!existsSync(storeDir)) return 0;
  const stale = readdirSync(storeDir).filter((entry) => entry.startsWith(TEMP_PREFIX) && !keep.has(entry));
  for (const entry of stale) removeTree(path.join(storeDir, entry));
  return stale.length;
}
