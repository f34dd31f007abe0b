/**
 * Pack files: the bytes of small blobs, appended by one ingest to its own
 * file `packs/<ingest id>.pack` and published by the commit that inserts
 * their rows (pack, offset). Writing a closure's 20,000 small files is then
 * one sequential file and one fsync, with the bytes written exactly once.
 * A pack file without a `packs` row belongs to an ingest in progress or to
 * a crashed one (removed by GC once its process is gone).
 */
import { close, closeSync, fdatasync, fsyncSync, mkdirSync, open, openSync, readSync, rmSync, writevSync } from 'node:fs';
import path from 'node:path';
import { CastoreError } from '../errors.js';

/**
 * Blobs up to this size go into the ingest's pack file (most files of a
 * closure): written once, one fsync per ingest, where a file each would
 * cost an fsync each (bench/castore.bench.ts), and hashed whole with the
 * native BLAKE3 (no outboard is kept: one is derived when asked for).
 * Larger blobs are files with their outboard. The same bound as the data
 * plane's batched blobs, which are verified whole too.
 */
export const PACK_MAX = 1024 * 1024;

export function packsDir(dataDir: string): string {
  return path.join(dataDir, 'packs');
}

export function packPath(dataDir: string, packId: string): string {
  return path.join(packsDir(dataDir), `${packId}.pack`);
}

/**
 * While a pack grows, its written bytes are flushed to disk in the
 * background every this many bytes (on a thread of libuv's pool), so the
 * fsync before the commit only has the tail left to write.
 */
const BACKGROUND_SYNC_EVERY = 32 * 1024 * 1024;

/** Appends blobs to one new pack file (created on the first append). */
export class PackWriter {
  private fd: number | undefined;
  private written = 0;
  private syncedUpTo = 0;

  constructor(
    private readonly dataDir: string,
    readonly packId: string,
  ) {}

  get size(): number {
    return this.written;
  }

  /** Appends `blobs` in order, in as few system calls as possible; returns the offset each starts at. */
  append(blobs: readonly Uint8Array[]): number[] {
    if (this.fd === undefined) {
      mkdirSync(packsDir(this.dataDir), { recursive: true });
      this.fd = openSync(packPath(this.dataDir, this.packId), 'wx', 0o444);
    }
    const offsets: number[] = [];
    let end = this.written;
    for (const blob of blobs) {
      offsets.push(end);
      end += blob.length;
    }
    // writev takes at most IOV_MAX (1024) buffers; a short write continues from where it stopped.
    let pending = blobs.filter((blob) => blob.length > 0);
    while (pending.length > 0) {
      const batch = pending.slice(0, 1024);
      let done = writevSync(this.fd, batch, this.written);
      this.written += done;
      let index = 0;
      while (index < batch.length && done >= batch[index]!.length) done -= batch[index++]!.length;
      pending = index < batch.length ? [batch[index]!.subarray(done), ...batch.slice(index + 1), ...pending.slice(1024)] : pending.slice(1024);
    }
    if (this.written - this.syncedUpTo >= BACKGROUND_SYNC_EVERY) this.syncInBackground();
    return offsets;
  }

  /**
   * Starts writing what is there so far to disk without waiting. It uses a
   * descriptor of its own, so `finish()` and `discard()` never close one
   * that a pool thread still uses; a failure here is harmless, because
   * `finish()` fsyncs everything again before the commit relies on it.
   */
  private syncInBackground(): void {
    this.syncedUpTo = this.written;
    open(packPath(this.dataDir, this.packId), 'r', (openError, fd) => {
      if (openError) return;
      fdatasync(fd, () => close(fd, () => undefined));
    });
  }

  /** Makes the bytes durable (before the commit that publishes them). */
  finish(): void {
    if (this.fd === undefined) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = undefined;
  }

  /** Deletes the pack file; safe at any point. */
  discard(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    rmSync(packPath(this.dataDir, this.packId), { force: true });
  }
}

/** Reads byte ranges from pack files, keeping their descriptors open. */
export class PackReader {
  private readonly fds = new Map<string, number>();

  constructor(private readonly dataDir: string) {}

  /** `length` bytes at `offset` of pack `packId`; BLOB_CORRUPT if the pack is shorter. */
  read(packId: string, offset: number, length: number, objectId: string): Buffer {
    let fd = this.fds.get(packId);
    if (fd === undefined) {
      try {
        fd = openSync(packPath(this.dataDir, packId), 'r');
      } catch (error) {
        throw new CastoreError('BLOB_CORRUPT', `pack ${packId} holding blob ${objectId} cannot be opened: ${(error as Error).message}`, { objectId, cause: error });
      }
      this.fds.set(packId, fd);
    }
    const bytes = Buffer.allocUnsafe(length);
    for (let done = 0; done < length; ) {
      const read = readSync(fd, bytes, done, length - done, offset + done);
      if (read === 0) throw new CastoreError('BLOB_CORRUPT', `pack ${packId} ends inside blob ${objectId}`, { objectId, offset: done });
      done += read;
    }
    return bytes;
  }

  /** Forgets a pack (GC deleted or rewrote it). */
  forget(packId: string): void {
    const fd = this.fds.get(packId);
    if (fd !== undefined) closeSync(fd);
    this.fds.delete(packId);
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
