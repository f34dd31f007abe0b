/**
 * BLAKE3-256 of a string's UTF-8 bytes, as hex, in one call: the audit log
 * hashes one small canonical-JSON text per event, where the `blake3`
 * package's per-call setup (a stream object per hash) costs ~10x the
 * hashing itself. Built on the castore's BLAKE3 compression function (the
 * same one its outboards use); identical to `blake3` for every input (test).
 */
import { createRequire } from 'node:module';
import { compress, compressChunk, IV, PARENT, ROOT } from '../../castore/blake3/compress.js';

const CHUNK_BYTES = 1024;
const CHUNK_WORDS = CHUNK_BYTES / 4;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const encoder = new TextEncoder();

let words = new Uint32Array(CHUNK_WORDS);
let bytes = new Uint8Array(words.buffer);
/** Chaining values waiting for their right sibling: at most one per tree level (54 levels cover 2^64 bytes). */
const stack = new Uint32Array(54 * 8);
const parentBlock = new Uint32Array(16);
const out = new Uint32Array(8);
const outBytes = Buffer.from(out.buffer);

function mergeInto(left: Uint32Array, leftOffset: number, flags: number, target: Uint32Array, targetOffset: number, right: Uint32Array, rightOffset: number): void {
  parentBlock.set(left.subarray(leftOffset, leftOffset + 8), 0);
  parentBlock.set(right.subarray(rightOffset, rightOffset + 8), 8);
  compress(IV, 0, parentBlock, 0, 0, 64, flags, target, targetOffset);
}

/**
 * The `blake3` package, for big-endian machines only, loaded on first use:
 * loading it instantiates its WebAssembly module, whose background
 * compilation a short-lived process (`ferry config submit` computes a
 * config id with this file) then waits for at exit — ~0.2 s.
 */
function packageBlake3(bytes: Buffer): Buffer {
  const { hash } = createRequire(import.meta.url)('blake3') as typeof import('blake3');
  return hash(bytes) as Buffer;
}

export function blake3Text(text: string): string {
  if (!LITTLE_ENDIAN) return packageBlake3(Buffer.from(text, 'utf8')).toString('hex');
  const room = Math.max(64, Math.ceil((text.length * 3) / 64) * 64);
  if (bytes.length < room) {
    words = new Uint32Array(Math.ceil(room / CHUNK_BYTES) * CHUNK_WORDS);
    bytes = new Uint8Array(words.buffer);
  }
  const length = encoder.encodeInto(text, bytes).written;
  bytes.fill(0, length, Math.max(64, Math.ceil(length / 64) * 64));
  const chunks = Math.max(1, Math.ceil(length / CHUNK_BYTES));
  if (chunks === 1) {
    compressChunk(words, 0, length, 0, ROOT, out, 0);
    return outBytes.toString('hex');
  }
  let depth = 0;
  for (let c = 0; c < chunks - 1; c++) {
    compressChunk(words, c * CHUNK_WORDS, CHUNK_BYTES, c, 0, stack, depth * 8);
    depth++;
    // A complete subtree closes at every trailing zero bit of the chunk count.
    for (let total = c + 1; (total & 1) === 0; total >>>= 1) {
      mergeInto(stack, (depth - 2) * 8, PARENT, stack, (depth - 2) * 8, stack, (depth - 1) * 8);
      depth--;
    }
  }
  compressChunk(words, (chunks - 1) * CHUNK_WORDS, length - (chunks - 1) * CHUNK_BYTES, chunks - 1, 0, out, 0);
  for (; depth > 0; depth--) mergeInto(stack, (depth - 1) * 8, depth === 1 ? PARENT | ROOT : PARENT, out, 0, out, 0);
  return outBytes.toString('hex');
}
