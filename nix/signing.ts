/**
 * Nix's signing keys and signatures: ed25519, written `name:base64(…)`.
 * A secret key holds the 32-byte seed followed by the 32-byte public key
 * (libsodium's layout, which `nix-store --generate-binary-cache-key`
 * writes); signatures cover narinfo fingerprints. Uses node:crypto's
 * ed25519 so keys and signatures interoperate with Nix byte for byte.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { NixError } from './errors.js';
import { fingerprintOfNarInfo, type NarInfo } from './narinfo.js';

export interface NixSecretKey {
  name: string;
  seed: Uint8Array;
  publicKey: Uint8Array;
}

export interface NixPublicKey {
  name: string;
  publicKey: Uint8Array;
}

export interface NixSignature {
  keyName: string;
  signature: Uint8Array;
}

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function privateKeyObject(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, publicKey]), format: 'der', type: 'spki' });
}

function publicKeyOfSeed(seed: Uint8Array): Uint8Array {
  const der = createPublicKey(privateKeyObject(seed)).export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(der.length - 32));
}

/** Splits `name:base64` and decodes the payload, which must be `length` bytes. */
function splitNamed(text: string, length: number, what: string, code: 'BAD_KEY' | 'BAD_SIGNATURE'): { name: string; bytes: Uint8Array } {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  if (colon <= 0) throw new NixError(code, `${what} is not 'name:base64' (no name)`);
  const name = trimmed.slice(0, colon);
  const payload = trimmed.slice(colon + 1);
  const bytes = Buffer.from(payload, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(payload) || bytes.length !== length) {
    throw new NixError(code, `${what} '${name}' is not ${length} bytes of base64`);
  }
  return { name, bytes: new Uint8Array(bytes) };
}

/** Parses a secret key file's contents; refuses (BAD_KEY) a malformed key or one whose public half does not match its seed. */
export function parseNixSecretKey(text: string): NixSecretKey {
  const { name, bytes } = splitNamed(text, 64, 'secret key', 'BAD_KEY');
  const seed = bytes.slice(0, 32);
  const publicKey = bytes.slice(32);
  if (!Buffer.from(publicKeyOfSeed(seed)).equals(publicKey)) {
    throw new NixError('BAD_KEY', `secret key '${name}' is corrupt: its public half does not match its seed`);
  }
  return { name, seed, publicKey };
}

/** Parses a public key (`name:base64`, as in `trusted-public-keys`); refuses malformed ones (BAD_KEY). */
export function parseNixPublicKey(text: string): NixPublicKey {
  const { name, bytes } = splitNamed(text, 32, 'public key', 'BAD_KEY');
  return { name, publicKey: bytes };
}

export function parseNixSignature(text: string): NixSignature {
  const { name, bytes } = splitNamed(text, 64, 'signature', 'BAD_SIGNATURE');
  return { keyName: name, signature: bytes };
}

export function formatNixSecretKey(key: NixSecretKey): string {
  return `${key.name}:${Buffer.concat([key.seed, key.publicKey]).toString('base64')}`;
}

export function formatNixPublicKey(key: NixPublicKey): string {
  return `${key.name}:${Buffer.from(key.publicKey).toString('base64')}`;
}

/** A new key named `name` (Nix convention: `host-1`, the suffix being a rotation counter). */
export function generateNixSecretKey(name: string): NixSecretKey {
  if (name === '' || name.includes(':')) throw new NixError('BAD_KEY', `key name '${name}' must be non-empty and contain no ':'`);
  const seed = new Uint8Array(randomBytes(32));
  return { name, seed, publicKey: publicKeyOfSeed(seed) };
}

export function nixPublicKeyOf(key: NixSecretKey): NixPublicKey {
  return { name: key.name, publicKey: key.publicKey };
}

/** Signs a fingerprint (see narInfoFingerprint); returns `name:base64(signature)`. */
export function signFingerprint(key: NixSecretKey, fingerprint: string): string {
  const signature = sign(null, Buffer.from(fingerprint), privateKeyObject(key.seed));
  return `${key.name}:${signature.toString('base64')}`;
}

export function signNarInfo(key: NixSecretKey, info: NarInfo): string {
  return signFingerprint(key, fingerprintOfNarInfo(info));
}

/** Whether `signature` (`name:base64`) is `key`'s valid signature of `fingerprint` (false for another key's name). */
export function verifyFingerprintSignature(fingerprint: string, signature: string, key: NixPublicKey): boolean {
  let parsed: NixSignature;
  try {
    parsed = parseNixSignature(signature);
  } catch {
    return false;
  }
  if (parsed.keyName !== key.name) return false;
  return verify(null, Buffer.from(fingerprint), publicKeyObject(key.publicKey), parsed.signature);
}

/** Valid when any of the narinfo's signatures is a valid one by a trusted key, as Nix decides. */
export function verifyNarInfoSignature(info: NarInfo, trustedKeys: readonly NixPublicKey[]): { valid: boolean; keyName?: string } {
  const fingerprint = fingerprintOfNarInfo(info);
  for (const sig of info.sigs) {
    for (const key of trustedKeys) {
      if (verifyFingerprintSignature(fingerprint, sig, key)) return { valid: true, keyName: key.name };
    }
  }
  return { valid: false };
}
