/**
 * Where large blobs live on disk: `blobs/<first two hex>/<id>` holds the
 * bytes (their outboard is in the index). Files are always written under
 * `tmp/` first, fsynced, then renamed into place by a commit, so a crash
 * never leaves a half-written blob visible under its id.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { OutboardBuilder } from '../blake3/index.js';
import { digestFromBytes, type Digest } from '../node.js';

export function blobDataPath(dataDir: string, id: Digest): string {
  return path.join(dataDir, 'blobs', id.slice(0, 2), id);
}

export function tempDir(dataDir: string): string {
  return path.join(dataDir, 'tmp');
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
 * outboard. Nothing is visible under the id until `commitTempBlob`.
 */
export class TempBlobWriter {
  private readonly fd: number;
  private readonly builder = new OutboardBuilder();
  private written = 0;
  private closed = false;
  readonly dataPath: string;

  constructor(dataDir: string, tempName: string) {
    const dir = tempDir(dataDir);
    mkdirSync(dir, { recursive: true });
    this.dataPath = path.join(dir, tempName);
    this.fd = openSync(this.dataPath, 'wx', 0o444);
  }

  get size(): number {
    return this.written;
  }

  write(chunk: Uint8Array): void {
    this.builder.update(chunk);
    let offset = 0;
    while (offset < chunk.length) offset += writeSync(this.fd, chunk, offset);
    this.written += chunk.length;
  }

  /** Fsyncs the bytes; returns the finished temp blob with its id and outboard. */
  finish(): TempBlob {
    const { root, outboard } = this.builder.finish();
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.closed = true;
    return { id: digestFromBytes(root), size: this.written, dataPath: this.dataPath, outboard };
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
