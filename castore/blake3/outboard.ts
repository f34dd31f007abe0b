/**
 * Outboards: the parents of a blob's group tree in pre-order, 64 bytes each
 * (left child CV, right child CV), as bao and iroh-blobs lay them out. With
 * the blob id (the root) and the outboard, a receiver can check every group
 * on arrival: see verifier.ts.
 */
import { CastoreError } from '../errors.js';
import { cvEquals, cvFromBytes, cvToBytes, GroupBuffer, GROUP_SIZE, groupCount, isLittleEndian, leftSubtreeLeaves, OUTBOARD_NODE_SIZE, outboardSize } from './tree.js';

export interface OutboardResult {
  /** The BLAKE3-256 hash of the blob: its id. */
  root: Uint8Array;
  /** Empty for blobs of one group (<= 16 KiB). */
  outboard: Uint8Array;
  size: number;
}

/**
 * Walks the group tree in pre-order. `leaf(index)` gives a group's CV;
 * `node(offset, left, right)` sees each parent with its outboard offset.
 * Returns the root CV (with the ROOT flag applied at the top).
 */
function walkTree(
  groups: GroupBuffer,
  count: number,
  leaf: (index: number) => Uint32Array,
  node: (offset: number, left: Uint32Array, right: Uint32Array, parentCv: Uint32Array) => void,
): Uint32Array {
  let offset = 0;
  const visit = (start: number, leaves: number, isRoot: boolean): Uint32Array => {
    if (leaves === 1) return leaf(start);
    const slot = offset;
    offset += OUTBOARD_NODE_SIZE;
    const split = leftSubtreeLeaves(leaves);
    const left = visit(start, split, false);
    const right = visit(start + split, leaves - split, false);
    const parentCv = new Uint32Array(8);
    groups.parent(left, right, isRoot, parentCv);
    node(slot, left, right, parentCv);
    return parentCv;
  };
  return visit(0, count, true);
}

/**
 * Computes a blob's id and outboard while its bytes stream through, in any
 * chunking. Memory: one 16 KiB group plus 32 bytes per group (the outboard
 * itself is written at `finish`).
 */
export class OutboardBuilder {
  private readonly buffer = new GroupBuffer();
  private filled = 0;
  private groupIndex = 0;
  private groupCvs = new Uint32Array(64 * 8);
  private finished = false;

  update(chunk: Uint8Array): void {
    if (this.finished) throw new Error('OutboardBuilder.update after finish');
    let offset = 0;
    while (offset < chunk.length) {
      if (this.filled === GROUP_SIZE) this.completeGroup();
      if (this.filled === 0 && chunk.length - offset > GROUP_SIZE && (chunk.byteOffset + offset) % 4 === 0 && isLittleEndian) {
        // A whole group with more bytes after it (so not the root), aligned: hash it where it lies.
        const words = new Uint32Array(chunk.buffer, chunk.byteOffset + offset, GROUP_SIZE / 4);
        this.ensureCvCapacity();
        this.buffer.hashFullGroupInPlace(words, 0, this.groupIndex, this.groupCvs.subarray(this.groupIndex * 8, this.groupIndex * 8 + 8));
        this.groupIndex++;
        offset += GROUP_SIZE;
        continue;
      }
      const take = Math.min(GROUP_SIZE - this.filled, chunk.length - offset);
      this.buffer.bytes.set(chunk.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
    }
  }

  /** Hashes the full buffered group: more bytes follow, so it is not the root. */
  private ensureCvCapacity(): void {
    if ((this.groupIndex + 1) * 8 > this.groupCvs.length) {
      const grown = new Uint32Array(this.groupCvs.length * 2);
      grown.set(this.groupCvs);
      this.groupCvs = grown;
    }
  }

  private completeGroup(): void {
    this.ensureCvCapacity();
    this.buffer.hashGroup(this.filled, this.groupIndex, false, this.groupCvs.subarray(this.groupIndex * 8, this.groupIndex * 8 + 8));
    this.groupIndex++;
    this.filled = 0;
  }

  get size(): number {
    return this.groupIndex * GROUP_SIZE + this.filled;
  }

  finish(): OutboardResult {
    this.finished = true;
    const size = this.size;
    if (this.groupIndex === 0) {
      const root = new Uint32Array(8);
      this.buffer.hashGroup(this.filled, 0, true, root);
      return { root: cvToBytes(root), outboard: new Uint8Array(0), size };
    }
    this.completeGroup();
    return { ...outboardFromGroupCvs(this.groupCvs, this.groupIndex, this.buffer), size };
  }
}

/**
 * The root (the blob's id) and outboard of a blob of `count` > 1 groups
 * whose group chaining values are `groupCvs` (8 words each, in order): the
 * tree above them, without the bytes. A receiver that knows every group's
 * chaining value (some hashed, some known equal to a verified basis's)
 * verifies the blob by comparing this root with its id.
 */
export function outboardFromGroupCvs(groupCvs: Uint32Array, count: number, buffer = new GroupBuffer()): { root: Uint8Array; outboard: Uint8Array } {
  if (count < 2) throw new RangeError('a blob of one group has no tree above it: hash it as the root');
  const outboard = new Uint8Array((count - 1) * OUTBOARD_NODE_SIZE);
  const root = walkTree(
    buffer,
    count,
    (index) => groupCvs.subarray(index * 8, index * 8 + 8),
    (offset, left, right) => {
      cvToBytes(left, outboard, offset);
      cvToBytes(right, outboard, offset + 32);
    },
  );
  return { root: cvToBytes(root), outboard };
}

/** An outboard checked against its root: the expected CV of every group. */
export interface VerifiedOutboard {
  size: number;
  groups: number;
  /** Expected CV of group `index`, or undefined for a one-group blob (checked against the root itself). */
  groupCv(index: number): Uint32Array | undefined;
  root: Uint32Array;
}

/**
 * Checks that `outboard` is the outboard of a blob of `size` bytes whose id
 * is `root`. Refuses a wrong length (BLAKE3_BAD_SIZE) and any node that does
 * not hash up to the root (BLAKE3_OUTBOARD_MISMATCH, with the node's byte
 * offset in the outboard).
 */
export function verifyOutboard(root: Uint8Array, size: number, outboard: Uint8Array, objectId?: string): VerifiedOutboard {
  if (!Number.isSafeInteger(size) || size < 0) throw new CastoreError('BLAKE3_BAD_SIZE', `invalid blob size ${size}`, { objectId });
  const expectedLength = outboardSize(size);
  if (outboard.length !== expectedLength) {
    throw new CastoreError('BLAKE3_BAD_SIZE', `outboard is ${outboard.length} bytes; a blob of ${size} bytes needs ${expectedLength}`, { objectId });
  }
  const count = groupCount(size);
  const rootCv = cvFromBytes(root);
  if (count === 1) return { size, groups: 1, groupCv: () => undefined, root: rootCv };
  const leaves = new Uint32Array(count * 8);
  // Verify top-down: each node must hash to what its parent (or the root) expects.
  const groups = new GroupBuffer();
  const parentCv = new Uint32Array(8);
  const visit = (start: number, leafCount: number, expected: Uint32Array, offsetRef: { at: number }, isRoot: boolean): void => {
    if (leafCount === 1) {
      leaves.set(expected, start * 8);
      return;
    }
    const at = offsetRef.at;
    offsetRef.at += OUTBOARD_NODE_SIZE;
    const left = cvFromBytes(outboard, at);
    const right = cvFromBytes(outboard, at + 32);
    groups.parent(left, right, isRoot, parentCv);
    if (!cvEquals(parentCv, expected)) {
      throw new CastoreError('BLAKE3_OUTBOARD_MISMATCH', 'outboard node does not hash to its parent', { objectId, offset: at });
    }
    const split = leftSubtreeLeaves(leafCount);
    visit(start, split, left, offsetRef, false);
    visit(start + split, leafCount - split, right, offsetRef, false);
  };
  visit(0, count, rootCv, { at: 0 }, true);
  return { size, groups: count, groupCv: (index) => leaves.subarray(index * 8, index * 8 + 8), root: rootCv };
}
