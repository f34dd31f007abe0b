/**
 * ed25519 for every actor key in Ferry. Keys and signatures are raw bytes
 * (32-byte seed, 32-byte public key, 64-byte signature). Key generation and
 * signing use @noble/ed25519 (audited, no native code); verification, which
 * the coordinator does on every request, uses node:crypto's native
 * implementation, several times faster (see bench/README.md). Both are
 * RFC 8032 ed25519 and interoperate byte for byte (tested).
 */
import * as ed from '@noble/ed25519';
import { createHash, createPublicKey, verify as nodeVerify, randomBytes, type KeyObject } from 'node:crypto';

ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest());

export interface Ed25519KeyPair {
  /** The 32-byte secret seed. */
  seed: Uint8Array;
  publicKey: Uint8Array;
}

export function generateEd25519KeyPair(): Ed25519KeyPair {
  const seed = new Uint8Array(randomBytes(32));
  return { seed, publicKey: ed.getPublicKey(seed) };
}

export function ed25519PublicKey(seed: Uint8Array): Uint8Array {
  return ed.getPublicKey(seed);
}

export function ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  return ed.sign(message, seed);
}

/** With noble, for comparison in benchmarks and interop tests. */
export function ed25519VerifyNoble(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return ed.verify(signature, message, publicKey);
  } catch {
    return false;
  }
}

// DER prefix of an ed25519 SubjectPublicKeyInfo; the raw key follows.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const keyObjects = new Map<string, KeyObject>();

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  const cacheKey = Buffer.from(publicKey).toString('hex');
  let key = keyObjects.get(cacheKey);
  if (!key) {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    if (keyObjects.size > 10_000) keyObjects.clear();
    keyObjects.set(cacheKey, key);
  }
  return key;
}

/** True iff `signature` is a valid ed25519 signature of `message` by `publicKey`; malformed inputs are simply invalid. */
export function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return nodeVerify(null, message, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}
