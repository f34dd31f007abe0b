/**
 * Nix's hash notations: `<algo>:<nix32|base16|base64>` (told apart by
 * length, as Nix does) and SRI `<algo>-<base64>`.
 */
import { createHash } from 'node:crypto';
import { decodeNixBase32, encodeNixBase32, nixBase32Length } from './base32.js';
import { NixError } from './errors.js';

export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512';
export type HashFormat = 'nix32' | 'base16' | 'base64' | 'sri';

export interface NixHash {
  algorithm: HashAlgorithm;
  digest: Uint8Array;
}

export const HASH_SIZES: Readonly<Record<HashAlgorithm, number>> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

function isAlgorithm(name: string): name is HashAlgorithm {
  return Object.hasOwn(HASH_SIZES, name);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE16 = /^[0-9a-fA-F]*$/;

function decodeDigest(text: string, algorithm: HashAlgorithm, input: string): Uint8Array {
  const size = HASH_SIZES[algorithm];
  if (text.length === size * 2 && BASE16.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (text.length === nixBase32Length(size)) {
    try {
      return decodeNixBase32(text, size);
    } catch (error) {
      throw new NixError('BAD_HASH', `hash '${input}' is not valid nix32: ${(error as Error).message}`, { cause: error });
    }
  }
  if (text.length === Math.ceil(size / 3) * 4 && BASE64.test(text)) {
    const digest = Buffer.from(text, 'base64');
    if (digest.length === size) return new Uint8Array(digest);
  }
  throw new NixError('BAD_HASH', `hash '${input}' has the wrong length or characters for ${algorithm}`);
}

/**
 * Parses a hash in any of Nix's notations. With `expected`, refuses another
 * algorithm and also accepts a bare digest. Refuses (BAD_HASH, quoting the
 * input) unknown algorithms and digests of the wrong length or alphabet.
 */
export function parseNixHash(text: string, expected?: HashAlgorithm): NixHash {
  const sri = /^([a-z0-9]+)-(.*)$/.exec(text);
  const prefixed = /^([a-z0-9]+):(.*)$/.exec(text);
  const match = sri ?? prefixed;
  let algorithm: string | undefined = match?.[1];
  let digestText = match?.[2] ?? text;
  if (!match) {
    if (!expected) throw new NixError('BAD_HASH', `hash '${text}' does not name its algorithm (expected e.g. 'sha256:…' or 'sha256-…')`);
    algorithm = expected;
    digestText = text;
  }
  if (!algorithm || !isAlgorithm(algorithm)) throw new NixError('BAD_HASH', `hash '${text}' uses an unknown algorithm '${algorithm}'`);
  if (expected && algorithm !== expected) throw new NixError('BAD_HASH', `hash '${text}' is ${algorithm}, expected ${expected}`);
  if (sri) {
    const digest = Buffer.from(digestText, 'base64');
    if (!BASE64.test(digestText) || digest.length !== HASH_SIZES[algorithm]) {
      throw new NixError('BAD_HASH', `SRI hash '${text}' is not ${HASH_SIZES[algorithm]} bytes of base64`);
    }
    return { algorithm, digest: new Uint8Array(digest) };
  }
  return { algorithm, digest: decodeDigest(digestText, algorithm, text) };
}

/** Formats a hash; nix32, base16 and base64 get the `algo:` prefix, SRI is `algo-<base64>`. */
export function formatNixHash(hash: NixHash, format: HashFormat): string {
  const digest = Buffer.from(hash.digest);
  switch (format) {
    case 'nix32':
      return `${hash.algorithm}:${encodeNixBase32(hash.digest)}`;
    case 'base16':
      return `${hash.algorithm}:${digest.toString('hex')}`;
    case 'base64':
      return `${hash.algorithm}:${digest.toString('base64')}`;
    case 'sri':
      return `${hash.algorithm}-${digest.toString('base64')}`;
  }
}

/** `sha256:<nix32>` of a SHA-256 digest: the form of NarHash in narinfo files. */
export function sha256NarHash(digest: Uint8Array): string {
  return formatNixHash({ algorithm: 'sha256', digest }, 'nix32');
}

/** Normalises any notation of a sha256 NarHash to `sha256:<nix32>`; refuses other algorithms. */
export function normalizeNarHash(text: string): string {
  return sha256NarHash(parseNixHash(text, 'sha256').digest);
}

export function hashBytes(algorithm: HashAlgorithm, bytes: Uint8Array | string): NixHash {
  return { algorithm, digest: new Uint8Array(createHash(algorithm).update(bytes).digest()) };
}
