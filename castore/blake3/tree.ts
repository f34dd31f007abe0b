/**
 * The BLAKE3 tree at the granularity castore streams in: 16 KiB groups of
 * sixteen 1 KiB chunks. A group's chaining value (CV) is the non-root CV of
 * its subtree, and because 16 is a power of two, the parents above groups
 * are exactly BLAKE3's own parents: the root computed from group CVs is the
 * standard BLAKE3-256 hash (what `b3sum` prints).
 */
import { compress, compressChunk, IV, PARENT, ROOT } from './compress.js';

export const CHUNK_SIZE = 1024;
export const CHUNKS_PER_GROUP = 16;
export const GROUP_SIZE = CHUNK_SIZE * CHUNKS_PER_GROUP;
/** Bytes of one outboard node: the left and right child CVs. */
export const OUTBOARD_NODE_SIZE = 64;

/** Number of 16 KiB groups of a blob of `size` bytes (an empty blob has one, empty, group). */
export function groupCount(size: number): number {
  return Math.max(1, Math.ceil(size / GROUP_SIZE));
}

/** Bytes of the outboard of a blob of `size` bytes: one node per parent of the group tree. */
export function outboardSize(size: number): number {
  return (groupCount(size) - 1) * OUTBOARD_NODE_SIZE;
}

/** Number of leaves in the left subtree of a tree of `count` leaves: the largest power of two below it. */
export function leftSubtreeLeaves(count: number): number {
  return 2 ** Math.floor(Math.log2(count - 1));
}

export const isLittleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * A 16 KiB work area, 4-byte aligned, that group bytes are copied into so
 * the compression function can read message words through a Uint32Array.
 */
export class GroupBuffer {
  readonly bytes = new Uint8Array(GROUP_SIZE + 64);
  readonly words = new Uint32Array(this.bytes.buffer);
  private readonly cvs = new Uint32Array(CHUNKS_PER_GROUP * 8);
  private readonly parentBlock = new Uint32Array(16);

  /**
   * Hashes the first `length` bytes of the buffer as group `groupIndex`:
   * returns its CV (8 words) in `out`, or with `isRoot`, the root hash of
   * a blob that is this single group. Clobbers bytes past `length`.
   */
  hashGroup(length: number, groupIndex: number, isRoot: boolean, out: Uint32Array): void {
    // Zero the tail of the last block: BLAKE3 pads a short block with zeros.
    this.bytes.fill(0, length, Math.min(this.bytes.length, (Math.ceil(length / 64) || 1) * 64));
    if (!isLittleEndian) swapWords(this.words, Math.ceil(length / 4));
    const chunks = Math.max(1, Math.ceil(length / CHUNK_SIZE));
    const firstChunk = groupIndex * CHUNKS_PER_GROUP;
    for (let c = 0; c < chunks; c++) {
      const chunkLength = Math.min(CHUNK_SIZE, length - c * CHUNK_SIZE);
      compressChunk(this.words, c * 256, chunkLength, firstChunk + c, isRoot && chunks === 1 ? ROOT : 0, this.cvs, c * 8);
    }
    if (chunks === 1) {
      out.set(this.cvs.subarray(0, 8));
      return;
    }
    this.mergeChunks(0, chunks, isRoot, out);
  }

  /**
   * CV of a full, non-final group read in place from `words` (little-endian
   * hosts only): the fast path that skips copying into the buffer.
   */
  hashFullGroupInPlace(words: Uint32Array, wordOffset: number, groupIndex: number, out: Uint32Array): void {
    const firstChunk = groupIndex * CHUNKS_PER_GROUP;
    for (let c = 0; c < CHUNKS_PER_GROUP; c++) {
      compressChunk(words, wordOffset + c * 256, CHUNK_SIZE, firstChunk + c, 0, this.cvs, c * 8);
    }
    this.mergeChunks(0, CHUNKS_PER_GROUP, false, out);
  }

  /**
   * Merges `count` chunk CVs into the subtree CV, in place. Pairwise merging
   * left to right, carrying an odd last CV up a level, builds exactly
   * BLAKE3's left-balanced tree; two adjacent CVs are already the 16-word
   * parent block.
   */
  private mergeChunks(start: number, count: number, isRoot: boolean, out: Uint32Array): void {
    const cvs = this.cvs;
    let level = count;
    while (level > 1) {
      const pairs = level >>> 1;
      for (let i = 0; i < pairs; i++) {
        const flags = PARENT | (isRoot && level === 2 ? ROOT : 0);
        compress(IV, 0, cvs, (start + 2 * i) * 8, 0, 64, flags, cvs, (start + i) * 8);
      }
      if (level & 1) cvs.copyWithin((start + pairs) * 8, (start + level - 1) * 8, (start + level) * 8);
      level = pairs + (level & 1);
    }
    out.set(cvs.subarray(start * 8, start * 8 + 8));
  }

  /** Parent CV of two child CVs (8 words each). */
  parent(left: Uint32Array, right: Uint32Array, isRoot: boolean, out: Uint32Array): void {
    this.parentBlock.set(left, 0);
    this.parentBlock.set(right, 8);
    compress(IV, 0, this.parentBlock, 0, 0, 64, PARENT | (isRoot ? ROOT : 0), out, 0);
  }
}

/**
 * The chaining value `bytes` (one group: at most GROUP_SIZE bytes) have as
 * group `groupIndex` of a blob of more than one group: what the blob's
 * outboard holds for that group when the bytes are the same. Group-level
 * dedup compares these (castore/transfer/group-delta.ts).
 */
export function groupChainingValue(bytes: Uint8Array, groupIndex: number, buffer = new GroupBuffer(), out = new Uint32Array(8)): Uint32Array {
  if (bytes.length > GROUP_SIZE) throw new RangeError(`a group is at most ${GROUP_SIZE} bytes, got ${bytes.length}`);
  buffer.bytes.set(bytes, 0);
  buffer.hashGroup(bytes.length, groupIndex, false, out);
  return out;
}

function swapWords(words: Uint32Array, count: number): void {
  for (let i = 0; i < count; i++) {
    const w = words[i]!;
    words[i] = ((w & 0xff) << 24) | ((w & 0xff00) << 8) | ((w >>> 8) & 0xff00) | (w >>> 24);
  }
}

/** CV words <-> 32 bytes, little-endian as BLAKE3 defines the output. */
export function cvToBytes(cv: Uint32Array, out = new Uint8Array(32), offset = 0): Uint8Array {
  for (let i = 0; i < 8; i++) {
    const w = cv[i]!;
    out[offset + i * 4] = w & 0xff;
    out[offset + i * 4 + 1] = (w >>> 8) & 0xff;
    out[offset + i * 4 + 2] = (w >>> 16) & 0xff;
    out[offset + i * 4 + 3] = w >>> 24;
  }
  return out;
}

export function cvFromBytes(bytes: Uint8Array, offset = 0, out = new Uint32Array(8)): Uint32Array {
  for (let i = 0; i < 8; i++) {
    const at = offset + i * 4;
    out[i] = (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
  }
  return out;
}

export function cvEquals(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < 8; i++) if (a[i] !== b[i]) return false;
  return true;
}
