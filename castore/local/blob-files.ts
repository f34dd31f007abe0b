/**
 * Where large blobs live on disk: `blobs/<first two hex>/<id>` holds the
 * bytes (their outboard is in the index). Files are always written under
 * `tmp/` first, fsynced, then renamed into place by a commit, so a crash
 * never leaves a half-written blob visible under its id.
 */
import { close, closeSync, fdatasync, fsyncSync, mkdirSync, open, openSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { OutboardBuilder } from '../blake3/index.js';
import { digestFromBytes, type Digest } from '../node.js';

export function blobDataPath(dataDir: string, id: Digest): string {
  return path.join(dataDir, 'blobs', id.slice(0, 2), id);
}

export function tempDir(dataDir: string): string {
  return path.join(dataDir, 'tmp');
}

/** Fsyncs a finished temp blob (cheap when its background write-back is done): before a commit publishes it. */
export function makeDurable(blob: TempBlob): void {
  const fd = openSync(blob.dataPath, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A large blob written to temp files, waiting for a commit to rename it into place. */
export interface TempBlob {
  id: Digest;
  size: number;
  dataPath: string;
  outboard: Uint8Array;
}

/**
 * Streams one blob into temp files while computing its BLAKE3 id and
 * outboard. Nothing is visible under the id until a commit renames it.
 */
export class TempBlobWriter {
  private readonly fd: number;
  private readonly builder = new OutboardBuilder();
  private written = 0;
  private closed = false;
  readonly dataPath: string;

  /** `verified`: the id and outboard the bytes were already verified against (they are then not hashed again). */
  constructor(
    dataDir: string,
    tempName: string,
    private readonly verified?: { id: Digest; outboard: Uint8Array },
  ) {
    const dir = tempDir(dataDir);
    mkdirSync(dir, { recursive: true });
    this.dataPath = path.join(dir, tempName);
    this.fd = openSync(this.dataPath, 'wx', 0o444);
  }

  get size(): number {
    return this.written;
  }

  write(chunk: Uint8Array): void {
    if (!this.verified) this.builder.update(chunk);
    let offset = 0;
    while (offset < chunk.length) offset += writeSync(this.fd, chunk, offset);
    this.written += chunk.length;
  }

  /**
   * Closes the file and starts writing it to disk in the background; the
   * commit that publishes it calls `makeDurable` first. Returns the
   * finished temp blob with its id and outboard.
   */
  finish(): TempBlob {
    const { id, outboard } = this.verified ?? this.hashed();
    closeSync(this.fd);
    this.closed = true;
    // Own descriptor: nothing here waits for it, and a failure is harmless (makeDurable fsyncs again).
    open(this.dataPath, 'r', (openError, fd) => {
      if (!openError) fdatasync(fd, () => close(fd, () => undefined));
    });
    return { id, size: this.written, dataPath: this.dataPath, outboard };
  }

  private hashed(): { id: Digest; outboard: Uint8Array } {
    const { root, outboard } = this.builder.finish();
    return { id: digestFromBytes(root), outboard };
  }

  /** Removes the temp files; safe to call after a failure at any point. */
  discard(): void {
    if (!this.closed) {
      closeSync(this.fd);
      this.closed = true;
    }
    rmSync(this.dataPath, { force: true });
  }
}
