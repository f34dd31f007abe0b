/**
 * The `blobs.stream` replies a relay's closure copies receive from upstream
 * (zstd, as the coordinator compressed them), kept on disk and served to
 * the relay's agents as they are: a cold deploy's agents ask for the same
 * blobs in the same order the relay asked for them (castore/transfer/
 * stream-order.ts, both lacking the same closure), so one recording serves
 * every agent of the site. The relay then sends each agent ~3.6x fewer
 * bytes than the closure's blobs (the realistic corpus), compresses
 * nothing, and reads one file per agent instead of thousands of blobs;
 * agents verify every blob as from the coordinator (large ones group by
 * group against outboards they ask first), so a recording is never
 * trusted. bench/README.md, "Site relay behind a shaped uplink".
 *
 * A recording is keyed by the ids asked (SHA-256 of them in order): only a
 * request for exactly those blobs gets it, and a request served from it is
 * checked against the agent's grant like any other. It is readable while it
 * is written: an agent asking as the relay's copy runs follows the file.
 * A copy that fails (cut, a blob that does not verify) drops its recording,
 * and its readers' replies end cut (the agent then asks the rest, which no
 * recording has: batches). Complete recordings are kept across restarts
 * (`<key>.<encoding>.<size>`; a `.part` left by a crash is removed) and
 * bounded by bytes, least recently used first, never one being read.
 */
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Digest, StreamTap, StreamTapRecording } from '../castore/index.js';
import type { WireEncoding } from '../protocol/compression/wire.js';

/** A reader's chunk. */
const READ_BYTES = 1024 * 1024;
/** How long a request for a stream not (yet) recorded waits while a copy may still begin it. */
export const STREAM_WAIT_MS = 10_000;
const POLL_MS = 50;

type RecordingState = 'recording' | 'complete' | 'failed';

/** One kept (or being kept) reply. */
export class StreamRecording implements StreamTapRecording {
  /** Wire bytes in the file so far. */
  written = 0;
  state: RecordingState;
  readers = 0;
  lastUsed = Date.now();
  private fd: number | undefined;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly key: string,
    /** The blobs' total size (what the stream decompresses to). */
    readonly size: number,
    readonly encoding: WireEncoding,
    public file: string,
    private readonly onSettled: (recording: StreamRecording) => void,
    complete?: { wireBytes: number },
  ) {
    if (complete) {
      this.state = 'complete';
      this.written = complete.wireBytes;
    } else {
      this.state = 'recording';
      this.fd = openSync(file, 'w', 0o600);
    }
  }

  append(chunk: Uint8Array): void {
    if (this.fd === undefined) return;
    for (let done = 0; done < chunk.length; ) done += writeSync(this.fd, chunk, done, chunk.length - done);
    this.written += chunk.length;
    this.wake();
  }

  complete(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
    const final = this.file.replace(/\.part$/, '');
    renameSync(this.file, final);
    this.file = final;
    this.state = 'complete';
    this.wake();
    this.onSettled(this);
  }

  fail(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
    // Readers hold their own descriptors: they read to what was written, then see the failure.
    rmSync(this.file, { force: true });
    this.state = 'failed';
    this.wake();
    this.onSettled(this);
  }

  /** Resolves at the next append or end. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.add(resolve));
  }

  private wake(): void {
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const resolve of waiting) resolve();
  }
}

/** The relay's recordings (see the module comment). */
export class StreamRecordings {
  private readonly byKey = new Map<string, StreamRecording>();
  /** Replies served from a recording, and their wire bytes. */
  readonly counters = { recorded: 0, served: 0, servedWireBytes: 0 };

  constructor(
    private readonly dir: string,
    /** Bound of the complete recordings' bytes. */
    private readonly maxBytes: number,
  ) {
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      const match = /^([0-9a-f]{64})\.(identity|zstd)\.(\d+)$/.exec(name);
      const file = path.join(dir, name);
      if (!match) {
        rmSync(file, { force: true });
        continue;
      }
      const recording = new StreamRecording(match[1]!, Number(match[3]), match[2] as WireEncoding, file, () => undefined, { wireBytes: statSync(file).size });
      this.byKey.set(recording.key, recording);
    }
  }

  /** The tap a closure copy hands its stream replies to: a new recording, unless one of these ids is kept or being kept. */
  tap(): StreamTap {
    return {
      begin: (ids, size, encoding) => {
        const key = streamKey(ids);
        if (this.byKey.has(key)) return undefined;
        const recording = new StreamRecording(key, size, encoding, path.join(this.dir, `${key}.${encoding}.${size}.part`), (settled) => this.settled(settled));
        this.byKey.set(key, recording);
        return recording;
      },
    };
  }

  /**
   * The recording of a stream of exactly `ids`, complete or still written;
   * while none is and `copying()` says a copy may still begin it, waits
   * (at most STREAM_WAIT_MS). Undefined when there is none.
   */
  async find(ids: readonly Digest[], copying: () => boolean): Promise<StreamRecording | undefined> {
    const key = streamKey(ids);
    const deadline = Date.now() + STREAM_WAIT_MS;
    for (;;) {
      const recording = this.byKey.get(key);
      if (recording) return recording;
      if (!copying() || Date.now() >= deadline) return undefined;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  /**
   * The recording's wire bytes from its start, following it while it is
   * written. Throws when its copy failed before the end (the reply is then
   * cut: the agent verifies what it got and asks the rest elsewhere).
   */
  async *read(recording: StreamRecording): AsyncGenerator<Uint8Array> {
    recording.readers++;
    recording.lastUsed = Date.now();
    this.counters.served++;
    let fd: number;
    try {
      fd = openSync(recording.file, 'r');
    } catch (error) {
      recording.readers--;
      throw error;
    }
    try {
      let offset = 0;
      for (;;) {
        if (offset < recording.written) {
          const chunk = Buffer.allocUnsafe(Math.min(READ_BYTES, recording.written - offset));
          const read = readSync(fd, chunk, 0, chunk.length, offset);
          if (read === 0) throw new Error(`the stream recording ${recording.key} ends at ${offset} of ${recording.written} bytes`);
          offset += read;
          this.counters.servedWireBytes += read;
          yield read === chunk.length ? chunk : chunk.subarray(0, read);
          continue;
        }
        if (recording.state === 'complete') return;
        if (recording.state === 'failed') throw new Error('the upstream stream was cut before its end');
        await recording.changed();
      }
    } finally {
      closeSync(fd);
      recording.readers--;
      recording.lastUsed = Date.now();
      this.evictIfNeeded();
    }
  }

  /** Bytes of the complete recordings. */
  bytes(): number {
    let total = 0;
    for (const recording of this.byKey.values()) if (recording.state === 'complete') total += recording.written;
    return total;
  }

  private settled(recording: StreamRecording): void {
    if (recording.state === 'failed') {
      if (this.byKey.get(recording.key) === recording) this.byKey.delete(recording.key);
      return;
    }
    this.counters.recorded++;
    this.evictIfNeeded();
  }

  private evictIfNeeded(): void {
    let total = this.bytes();
    if (total <= this.maxBytes) return;
    const idle = [...this.byKey.values()].filter((recording) => recording.state === 'complete' && recording.readers === 0).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const recording of idle) {
      if (total <= this.maxBytes) break;
      this.byKey.delete(recording.key);
      rmSync(recording.file, { force: true });
      total -= recording.written;
    }
  }
}

/** The key of a stream of `ids`, in their order. */
function streamKey(ids: readonly Digest[]): string {
  return createHash('sha256').update(ids.join('\n')).digest('hex');
}
