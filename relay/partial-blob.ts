/**
 * A large blob on its way into the relay's castore, readable before it is
 * whole: its bytes go to a partial file (`<state>/partial/`) as they
 * arrive, and what of them is verified against the blob's outboard can be
 * served at once (docs/relays.md, "a large blob is readable as it is
 * verified"). Both ways a large blob comes up the uplink write through
 * one: the fetch-through of one blob (relay-cache.ts, its bytes verified
 * per group by RemoteCastore before they are appended) and the closure
 * copy (closure-copy.ts), whose segments are verified before they are
 * written when they come alone, and whose stream carries a large blob
 * unverified until its end (hashed whole as it is stored): those bytes
 * are verified here, group by group, once the blob's outboard is attached
 * (fetched when an agent first asks for the blob, `attachOutboard`).
 *
 * Synchronous where it changes state (append, attach, complete, fail,
 * remove), so a reader checking "in the castore? else the partial file"
 * between two awaits never finds the file gone under it.
 */
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { BlobVerifier, digestToBytes, type Digest } from '../castore/index.js';

/** Read from the partial file this much at a time (a reply streams it piece by piece). */
const READ_PIECE_BYTES = 1024 * 1024;

export class PartialBlob {
  /** Bytes written to the file, and the prefix of them verified against the outboard (or hashed whole). */
  written = 0;
  verified = 0;
  /** Set when its bytes will not all come (the fetch failed, the copy dropped it, a group did not verify). */
  failed: Error | undefined;
  private outboardBytes: Uint8Array | undefined;
  private verifier: BlobVerifier | undefined;
  private fd: number | undefined;
  private readonly wakes = new Set<() => void>();

  /**
   * Opens (truncates) `file` for blob `id` of `size` bytes. With `outboard`,
   * every chunk appended is already verified against it by the writer
   * (RemoteCastore, a segment fetch); without, appended bytes count as
   * verified only once an outboard is attached, or once `complete`.
   */
  constructor(
    readonly id: Digest,
    readonly size: number,
    readonly file: string,
    outboard?: Uint8Array,
  ) {
    this.fd = openSync(file, 'w');
    this.outboardBytes = outboard;
  }

  /** Its outboard when known (given, or attached). */
  get outboard(): Uint8Array | undefined {
    return this.outboardBytes;
  }

  /** Whether appended chunks are verified as they come (an outboard given at construction). */
  private get preverified(): boolean {
    return this.outboardBytes !== undefined && this.verifier === undefined;
  }

  /** Appends the next bytes of the blob; advances what is verified when it can tell. */
  append(chunk: Uint8Array): void {
    if (this.fd === undefined) return;
    for (let done = 0; done < chunk.length; ) done += writeSync(this.fd, chunk, done, chunk.length - done, this.written + done);
    this.written += chunk.length;
    if (this.preverified) this.verified = this.written;
    else if (this.verifier) this.push(chunk);
    this.wake();
  }

  /**
   * Attaches the blob's outboard (checked against the id: a wrong one
   * fails the partial, BLAKE3_* errors) and verifies what was written so
   * far; later chunks are verified as they are appended. Once only.
   */
  attachOutboard(outboard: Uint8Array): void {
    if (this.outboardBytes !== undefined || this.failed || this.fd === undefined) return;
    try {
      this.verifier = new BlobVerifier(digestToBytes(this.id), this.size, outboard, { objectId: this.id });
    } catch (error) {
      this.fail(error);
      return;
    }
    this.outboardBytes = outboard;
    const reader = openSync(this.file, 'r');
    try {
      const piece = Buffer.alloc(Math.min(READ_PIECE_BYTES, Math.max(1, this.written)));
      for (let position = 0; position < this.written && !this.failed; ) {
        const read = readSync(reader, piece, 0, Math.min(piece.length, this.written - position), position);
        if (read === 0) throw new Error(`partial file ${this.file} ends at ${position} of ${this.written} bytes written`);
        this.push(piece.subarray(0, read));
        position += read;
      }
    } finally {
      closeSync(reader);
    }
    this.wake();
  }

  private push(chunk: Uint8Array): void {
    try {
      for (const group of this.verifier!.push(chunk)) this.verified += group.length;
    } catch (error) {
      this.fail(error);
    }
  }

  /** The writer finished: every byte arrived and hashed to the id (the castore's writer checked it whole). */
  complete(): void {
    this.verified = this.written = this.size;
    this.close();
    this.wake();
  }

  /** Its bytes will not all come: readers waiting are refused; the file goes. */
  fail(error: unknown): void {
    this.failed ??= error instanceof Error ? error : new Error(String(error));
    this.remove();
  }

  /** The blob is in the castore (or abandoned): the file goes; readers read the castore. */
  remove(): void {
    this.close();
    rmSync(this.file, { force: true });
    this.wake();
  }

  private close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  private wake(): void {
    for (const check of [...this.wakes]) check();
  }

  /**
   * Resolves once bytes [0, end) are verified, or once `stored()` says the
   * castore has the blob; rejects with the failure when the bytes will not
   * come (and the castore does not have them).
   */
  waitFor(end: number, stored: () => boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.verified >= end || stored()) resolve();
        else if (this.failed) reject(this.failed);
        else return;
        this.wakes.delete(check);
      };
      this.wakes.add(check);
      check();
    });
  }

  /**
   * Bytes [offset, offset + length) as they are verified, piece by piece:
   * from the partial file, or from `fromStore` once `stored()` (the file
   * is gone then). Rejects as `waitFor` does.
   */
  async *read(offset: number, length: number, stored: () => boolean, fromStore: (offset: number, length: number) => AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    const end = offset + length;
    for (let position = offset; position < end; ) {
      const pieceEnd = Math.min(end, position + READ_PIECE_BYTES);
      await this.waitFor(pieceEnd, stored);
      // Between the check and the read nothing awaits: the file cannot go in between.
      if (stored()) {
        yield* fromStore(position, end - position);
        return;
      }
      const bytes = Buffer.alloc(pieceEnd - position);
      const reader = openSync(this.file, 'r');
      try {
        for (let done = 0; done < bytes.length; ) {
          const read = readSync(reader, bytes, done, bytes.length - done, position + done);
          if (read === 0) throw new Error(`partial file ${this.file} ends before byte ${position + done}`);
          done += read;
        }
      } finally {
        closeSync(reader);
      }
      yield bytes;
      position = pieceEnd;
    }
  }
}
