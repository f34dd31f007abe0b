/**
 * Verified streaming: a receiver holding only a blob id checks the
 * outboard, then every 16 KiB group as it arrives, so corrupt data is
 * caught at the first bad group, never after the whole blob. Transfers can
 * resume at any group boundary and byte ranges can be checked on their own.
 */
import { CastoreError } from '../errors.js';
import { verifyOutboard, type VerifiedOutboard } from './outboard.js';
import { cvEquals, GroupBuffer, GROUP_SIZE } from './tree.js';

export interface BlobVerifierOptions {
  /** Group to start at (resuming a transfer): bytes pushed begin at `startGroup * GROUP_SIZE`. */
  startGroup?: number;
  /** Named in errors. */
  objectId?: string;
}

function checkGroup(buffer: GroupBuffer, tree: VerifiedOutboard, index: number, length: number, actual: Uint32Array, objectId?: string): void {
  const expected = tree.groupCv(index);
  buffer.hashGroup(length, index, expected === undefined, actual);
  if (!cvEquals(actual, expected ?? tree.root)) {
    throw new CastoreError('BLAKE3_GROUP_MISMATCH', `bytes of group ${index} do not match the blob's hash tree`, {
      objectId,
      offset: index * GROUP_SIZE,
    });
  }
}

/**
 * Checks a blob's bytes group by group as they stream in. `push` returns
 * only verified bytes (whole groups); a bad group throws
 * BLAKE3_GROUP_MISMATCH (offset = the group's first byte) as soon as it is
 * complete, extra bytes throw BLAKE3_BAD_SIZE, and `finish` refuses a blob
 * that ended early. The outboard is checked at construction.
 */
export class BlobVerifier {
  private readonly tree: VerifiedOutboard;
  private readonly buffer = new GroupBuffer();
  private readonly actual = new Uint32Array(8);
  private group: number;
  private filled = 0;
  private readonly objectId: string | undefined;

  constructor(root: Uint8Array, size: number, outboard: Uint8Array, options: BlobVerifierOptions = {}) {
    this.objectId = options.objectId;
    this.tree = verifyOutboard(root, size, outboard, options.objectId);
    this.group = options.startGroup ?? 0;
    if (!Number.isSafeInteger(this.group) || this.group < 0 || this.group > this.tree.groups) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `cannot start at group ${this.group} of ${this.tree.groups}`, { objectId: this.objectId });
    }
  }

  /**
   * Makes the verifier expect the blob's bytes from `offset` on again (a
   * group boundary the caller has consumed verified bytes up to), dropping
   * a group in progress: after a dropped or corrupt transfer, and also when
   * `push` threw after verifying earlier groups of the same chunk, which
   * the caller then never received.
   */
  rewindTo(offset: number): void {
    if (offset % GROUP_SIZE !== 0 || offset > this.verifiedBytes) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `cannot rewind to byte ${offset} (verified up to ${this.verifiedBytes})`, { objectId: this.objectId });
    }
    this.group = offset / GROUP_SIZE;
    this.filled = 0;
  }

  /** Bytes verified so far, counted from the blob's start: resume with `startGroup = verifiedBytes / GROUP_SIZE`. */
  get verifiedBytes(): number {
    return Math.min(this.group * GROUP_SIZE, this.tree.size);
  }

  private groupLength(index: number): number {
    return Math.min(GROUP_SIZE, this.tree.size - index * GROUP_SIZE);
  }

  push(chunk: Uint8Array): Uint8Array[] {
    const verified: Uint8Array[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.group >= this.tree.groups || (this.tree.size === 0)) {
        throw new CastoreError('BLAKE3_BAD_SIZE', `more bytes than the blob's ${this.tree.size}`, { objectId: this.objectId, offset: this.tree.size });
      }
      const wanted = this.groupLength(this.group);
      const take = Math.min(wanted - this.filled, chunk.length - offset);
      this.buffer.bytes.set(chunk.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === wanted) verified.push(this.completeGroup(wanted));
    }
    return verified;
  }

  private completeGroup(length: number): Uint8Array {
    // Copy out before hashing: hashGroup zero-pads the buffer past `length`.
    const bytes = this.buffer.bytes.slice(0, length);
    checkGroup(this.buffer, this.tree, this.group, length, this.actual, this.objectId);
    this.group++;
    this.filled = 0;
    return bytes;
  }

  /** Ends the stream: refuses a blob with bytes missing. An empty blob is verified here. */
  finish(): void {
    if (this.tree.size === 0 && this.group === 0) {
      checkGroup(this.buffer, this.tree, 0, 0, this.actual, this.objectId);
      this.group = 1;
    }
    if (this.group < this.tree.groups) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `blob ended after ${this.group * GROUP_SIZE + this.filled} of ${this.tree.size} bytes`, {
        objectId: this.objectId,
        offset: this.group * GROUP_SIZE + this.filled,
      });
    }
  }
}

/**
 * Verifies `bytes` as the blob's bytes starting at `offset`, which must be
 * a group boundary; `bytes` must cover whole groups or run to the blob's
 * end. Refuses misaligned or out-of-bounds ranges (BLAKE3_BAD_SIZE) and
 * bytes that do not match (BLAKE3_GROUP_MISMATCH naming the group's offset).
 */
export function verifyRange(root: Uint8Array, size: number, outboard: Uint8Array, offset: number, bytes: Uint8Array, objectId?: string): void {
  const end = offset + bytes.length;
  if (offset % GROUP_SIZE !== 0 || offset < 0 || end > size || (end % GROUP_SIZE !== 0 && end !== size)) {
    throw new CastoreError('BLAKE3_BAD_SIZE', `range ${offset}+${bytes.length} is not whole groups of a blob of ${size} bytes`, { objectId, offset });
  }
  const verifier = new BlobVerifier(root, size, outboard, { startGroup: offset / GROUP_SIZE, ...(objectId ? { objectId } : {}) });
  verifier.push(bytes);
  if (end === size) verifier.finish();
}
