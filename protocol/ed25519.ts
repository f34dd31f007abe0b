/**
 * ed25519 for every actor key in Ferry. Keys and signatures are raw bytes
 * (32-byte seed, 32-byte public key, 64-byte signature). Signing and
 * verification use node:crypto's native implementation (OpenSSL): the
 * coordinator verifies on every request, and every CLI run and agent request
 * signs — with @noble/ed25519 (pure JS) a short-lived CLI spent a noticeable
 * part of its start-up building noble's tables for its first signature
 * (bench/README.md, "App-change latency"). noble stays as the second,
 * independent implementation the tests and benchmarks compare against. Both are RFC 8032 ed25519: signatures are deterministic
 * and byte-identical (tested).
 */
import * as ed from '@noble/ed25519';
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, randomBytes, type KeyObject } from 'node:crypto';

ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest());

export interface Ed25519KeyPair {
  /** The 32-byte secret seed. */
  seed: Uint8Array;
  publicKey: Uint8Array;
}

// DER prefix of an ed25519 PKCS#8 private key; the 32-byte seed follows.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
// DER prefix of an ed25519 SubjectPublicKeyInfo; the raw key follows.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** The node:crypto key of a 32-byte seed, for ed25519Sign (build it once per key: it is most of a signature's cost). */
export function ed25519PrivateKey(seed: Uint8Array): KeyObject {
  if (seed.length !== 32) throw new RangeError('an ed25519 seed is 32 bytes');
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function generateEd25519KeyPair(): Ed25519KeyPair {
  const seed = new Uint8Array(randomBytes(32));
  return { seed, publicKey: ed25519PublicKey(seed) };
}

export function ed25519PublicKey(seed: Uint8Array | KeyObject): Uint8Array {
  const privateKey = seed instanceof Uint8Array ? ed25519PrivateKey(seed) : seed;
  return new Uint8Array(createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length));
}

export function ed25519Sign(seed: Uint8Array | KeyObject, message: Uint8Array): Uint8Array {
  return new Uint8Array(nodeSign(null, message, seed instanceof Uint8Array ? ed25519PrivateKey(seed) : seed));
}

/** With noble, for comparison in benchmarks and interop tests. */
export function ed25519SignNoble(seed: Uint8Array, message: Uint8Array): Uint8Array {
  return ed.sign(message, seed);
}

/** With noble, for comparison in benchmarks and interop tests. */
export function ed25519PublicKeyNoble(seed: Uint8Array): Uint8Array {
  return ed.getPublicKey(seed);
}

/** With noble, for comparison in benchmarks and interop tests. */
export function ed25519VerifyNoble(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return ed.verify(signature, message, publicKey);
  } catch {
    return false;
  }
}

/**
 * Public keys as node:crypto keys, most recently used last: building one
 * costs about half a verification, and a coordinator verifies every
 * request of every agent of its fleet. Bounded (least recently used out),
 * above the fleet sizes one coordinator serves.
 */
const keyObjects = new Map<string, KeyObject>();
const KEPT_PUBLIC_KEYS = 50_000;

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  const cacheKey = Buffer.from(publicKey).toString('hex');
  let key = keyObjects.get(cacheKey);
  if (key) keyObjects.delete(cacheKey);
  else {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    if (keyObjects.size >= KEPT_PUBLIC_KEYS) keyObjects.delete(keyObjects.keys().next().value!);
  }
  keyObjects.set(cacheKey, key);
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
