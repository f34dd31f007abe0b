/**
 * BLAKE3-256 (what `b3sum` prints) of a whole input, of a string, and
 * incrementally: the one entry point for plain hashing in Ferry. The 16 KiB
 * group trees and outboards of verified streaming are tree.ts and
 * outboard.ts, on the same compression function.
 *
 * Two implementations, each where it is the faster one (measured:
 * bench/README.md, "BLAKE3: which implementation where"):
 * - inputs of at most SMALL_INPUT_MAX bytes — audit events, config ids,
 *   directory encodings, most files of a closure — hash in TypeScript
 *   (tree.ts): creating a native hasher costs more than hashing them;
 * - larger inputs and incremental hashing use the native binding that the
 *   `blake3` package itself loads, called directly: the package wraps every
 *   hasher in a Node Transform stream, which costs more than the hashing.
 * Where the binding is missing, the package is the fallback (it then runs
 * WebAssembly). Both load on first use: loading the package instantiates
 * its WebAssembly module, whose background compilation a short-lived
 * process (`ferry config submit` computes a config id) then waits for at
 * exit.
 */
import { createRequire } from 'node:module';
import { cvToBytes, GroupBuffer, isLittleEndian } from './tree.js';

/** Inputs up to this size hash in TypeScript, larger ones natively (see the module comment); at most a group (the scratch buffer is one). */
export const SMALL_INPUT_MAX = 8 * 1024;

/** An incremental BLAKE3-256 hasher: `update` as bytes come, `digest` once at the end. */
export interface Blake3Hasher {
  update(bytes: Uint8Array): void;
  digest(): Uint8Array;
}

interface NativeHasher {
  update(bytes: Uint8Array): void;
  digest(): Uint8Array;
}

let createNativeHasher: (() => Blake3Hasher) | undefined;

function nativeHasher(): Blake3Hasher {
  createNativeHasher ??= loadNativeHasher();
  return createNativeHasher();
}

function loadNativeHasher(): () => Blake3Hasher {
  const require = createRequire(import.meta.url);
  try {
    const binding = require('@c4312/blake3-native/build/Release/blake3.node') as { createHash(): NativeHasher };
    return () => binding.createHash();
  } catch {
    const { createHash } = require('blake3') as typeof import('blake3');
    return () => {
      const hasher = createHash();
      return { update: (bytes) => void hasher.update(bytes), digest: () => hasher.digest() as Uint8Array };
    };
  }
}

/** Scratch for small inputs: hashing is synchronous, so one buffer serves every call. */
const scratch = new GroupBuffer();
const scratchRoot = new Uint32Array(8);
const scratchRootBytes = Buffer.from(scratchRoot.buffer);
const encoder = new TextEncoder();

/** Hashes the first `length` bytes of `scratch.bytes` as a whole input (at most one group) into scratchRoot. */
function hashScratch(length: number): void {
  scratch.hashGroup(length, 0, true, scratchRoot);
}

/** The 32-byte BLAKE3-256 hash of `bytes`. */
export function blake3(bytes: Uint8Array): Uint8Array {
  if (bytes.length <= SMALL_INPUT_MAX) {
    scratch.bytes.set(bytes, 0);
    hashScratch(bytes.length);
    return cvToBytes(scratchRoot);
  }
  const hasher = nativeHasher();
  hasher.update(bytes);
  return hasher.digest();
}

/**
 * The BLAKE3-256 hash of a string's UTF-8 bytes, as lowercase hex: the id
 * of everything Ferry hashes as canonical JSON (audit events, configs).
 */
export function blake3Hex(text: string): string {
  // A UTF-16 code unit is at most 3 UTF-8 bytes: a text that surely fits is encoded straight into the scratch buffer.
  if (text.length * 3 > SMALL_INPUT_MAX) return Buffer.from(blake3(Buffer.from(text, 'utf8'))).toString('hex');
  hashScratch(encoder.encodeInto(text, scratch.bytes).written);
  return isLittleEndian ? scratchRootBytes.toString('hex') : Buffer.from(cvToBytes(scratchRoot)).toString('hex');
}

/** A new incremental hasher (native: for streams, which are rarely small). */
export function blake3Hasher(): Blake3Hasher {
  return nativeHasher();
}
