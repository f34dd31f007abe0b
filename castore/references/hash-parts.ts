/**
 * The hash parts a file may embed (its store path's references and the path
 * itself), checked once and compiled into what the scan needs: a table of
 * nix32 bytes and buckets keyed by a window's first three characters.
 */
import { NIX_BASE32_ALPHABET, STORE_PATH_HASH_LENGTH } from '../../nix/index.js';
import { CastoreError } from '../errors.js';

/** Length of a store path's hash part, and of every reference site. */
export const HASH_PART_LENGTH = STORE_PATH_HASH_LENGTH;

/**
 * What a normalized file holds where a hash part was: 32 × `e`.
 *
 * Why this one: `e` is not in the nix32 alphabet, so the placeholder can
 * never be a hash part — a normalized file never holds a reference to
 * anything, and a site's bytes cannot be taken for a real hash part. It has
 * the hash part's length, so the normalized file has the real file's size
 * and every byte outside the sites at its real offset: the 16 KiB groups and
 * NAR offsets that hold no reference are the same in both forms, which is
 * what lets group deltas combine with the normalization. And it is what
 * nixpkgs' `nuke-refs` and `remove-references-to` write over a hash part
 * (`/nix/store/eeee…-name`), so it reads as "a reference was here". It
 * therefore occurs naturally in some files: the site list, not the bytes,
 * says where references were, so such a file still restores exactly.
 */
export const REFERENCE_PLACEHOLDER: Uint8Array = new Uint8Array(HASH_PART_LENGTH).fill(0x65);

/** 1 for each byte that is a nix32 character. */
export const NIX32_BYTE: Uint8Array = (() => {
  const table = new Uint8Array(256);
  for (let i = 0; i < NIX_BASE32_ALPHABET.length; i++) table[NIX_BASE32_ALPHABET.charCodeAt(i)] = 1;
  return table;
})();

/** Each byte's nix32 digit value (0–31; 0 for other bytes, only read for nix32 bytes). */
const DIGIT: Uint8Array = (() => {
  const table = new Uint8Array(256);
  for (let i = 0; i < NIX_BASE32_ALPHABET.length; i++) table[NIX_BASE32_ALPHABET.charCodeAt(i)] = i;
  return table;
})();

/** The bucket of a window whose first three bytes are nix32: their 15 bits. */
export function bucketOf(bytes: Uint8Array, at: number): number {
  return DIGIT[bytes[at]!]! | (DIGIT[bytes[at + 1]!]! << 5) | (DIGIT[bytes[at + 2]!]! << 10);
}

function invalid(why: string): CastoreError {
  return new CastoreError('REFERENCES_INVALID', why);
}

/**
 * A file's possible references, ready to scan for: build it once per store
 * path and reuse it for each of its files. Index i is `hashParts[i]`; a hash
 * part listed twice is found as its lowest index (Nix lists a
 * self-reference among the references, and callers may add the path's own
 * hash part again).
 */
export class HashPartSet {
  readonly hashParts: readonly string[];
  /** Each index's hash part as bytes. */
  readonly bytes: readonly Uint8Array[];
  /** Per 15-bit bucket, the distinct hash parts' lowest indices; undefined where none starts so. */
  readonly buckets: (number[] | undefined)[];
  /** 1 where `buckets` has an entry: a dense array, so a window in a long nix32 run is mostly refused by one byte read. */
  readonly occupied: Uint8Array = new Uint8Array(1 << 15);

  /** Refuses (REFERENCES_INVALID, naming the index) a hash part that is not 32 nix32 characters. */
  constructor(hashParts: readonly string[]) {
    this.hashParts = [...hashParts];
    this.buckets = new Array<number[] | undefined>(1 << 15);
    const seen = new Map<string, number>();
    const bytes: Uint8Array[] = [];
    this.hashParts.forEach((hashPart, index) => {
      bytes.push(hashPartBytes(hashPart, index));
      if (seen.has(hashPart)) return;
      seen.set(hashPart, index);
      const bucket = bucketOf(bytes[index]!, 0);
      (this.buckets[bucket] ??= []).push(index);
      this.occupied[bucket] = 1;
    });
    this.bytes = bytes;
  }

  get size(): number {
    return this.hashParts.length;
  }
}

/** `hashPart` as its 32 ASCII bytes; refuses (REFERENCES_INVALID) anything but 32 nix32 characters. */
export function hashPartBytes(hashPart: unknown, index: number): Uint8Array {
  if (typeof hashPart !== 'string' || hashPart.length !== HASH_PART_LENGTH) {
    const shown = typeof hashPart === 'string' ? `${hashPart.length} characters` : typeof hashPart;
    throw invalid(`hash part ${index} is not ${HASH_PART_LENGTH} nix32 characters (${shown})`);
  }
  const out = new Uint8Array(HASH_PART_LENGTH);
  for (let i = 0; i < HASH_PART_LENGTH; i++) {
    const code = hashPart.charCodeAt(i);
    if (code > 0xff || NIX32_BYTE[code] !== 1) {
      throw invalid(`hash part ${index} ${JSON.stringify(hashPart)} has a character outside nix32 at ${i}`);
    }
    out[i] = code;
  }
  return out;
}

/** `hashParts` compiled, or the set as it is. */
export function hashPartSet(hashParts: readonly string[] | HashPartSet): HashPartSet {
  return hashParts instanceof HashPartSet ? hashParts : new HashPartSet(hashParts);
}
