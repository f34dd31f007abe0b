/**
 * The stored form of a file's reference sites (format 1):
 *
 *   u8      format = 1
 *   varint  count
 *   count × (varint gap, varint ref)
 *
 * varint: unsigned LEB128, minimal (no byte of value 0x80 at its end and
 * no trailing 0x00 group), at most 8 bytes, at most 2^53 − 1. `gap` is the
 * site's offset minus the end of the previous site (offset + 32; 0 before
 * the first), so sorted, non-overlapping sites are all a decoder can
 * produce; `ref` indexes the store path's hash parts.
 *
 * Why binary and not canonical JSON: the list is per file and travels and
 * is stored beside each normalized blob (and will be hashed into directory
 * objects), so size counts — a site is typically 2–4 bytes here against
 * ~25 as `{"offset":…,"ref":…}` — and there is exactly one encoding of each
 * list (minimal varints, relative offsets), so equal lists are equal bytes
 * without a canonicalization step. The format byte leaves room for another
 * layout (e.g. sites grouped by ref) without guessing.
 */
import { CastoreError } from '../errors.js';
import type { ReferenceSite } from './normalize.js';
import { HASH_PART_LENGTH } from './hash-parts.js';
import { checkReferenceSites } from './restore.js';

export const REFERENCE_SITES_FORMAT = 1;
const MAX_VARINT_BYTES = 8;

function varintLength(value: number): number {
  let n = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    n++;
  }
  return n;
}

function writeVarint(out: Uint8Array, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  out[at++] = value;
  return at;
}

/**
 * The format-1 encoding of `sites`. Refuses (REFERENCES_INVALID) sites
 * checkReferenceSites refuses (unsorted, overlapping, not integers).
 */
export function encodeReferenceSites(sites: readonly ReferenceSite[]): Uint8Array {
  checkReferenceSites(sites);
  let size = 1 + varintLength(sites.length);
  let end = 0;
  for (const { offset, ref } of sites) {
    size += varintLength(offset - end) + varintLength(ref);
    end = offset + HASH_PART_LENGTH;
  }
  const out = new Uint8Array(size);
  out[0] = REFERENCE_SITES_FORMAT;
  let at = writeVarint(out, 1, sites.length);
  end = 0;
  for (const { offset, ref } of sites) {
    at = writeVarint(out, at, offset - end);
    at = writeVarint(out, at, ref);
    end = offset + HASH_PART_LENGTH;
  }
  return out;
}

export interface DecodeReferenceSitesOptions {
  /** The normalized file's length: sites must fit in it (and number at most length / 32). */
  length?: number;
  /** How many hash parts the store path has: refs must be below it. */
  refCount?: number;
}

/**
 * Decodes format 1, strictly: refuses (REFERENCES_INVALID, with the byte
 * offset in `bytes`) another format, a truncated list, a varint that is not
 * minimal or exceeds 2^53 − 1, a count larger than the bytes left could
 * hold (before allocating anything for it), trailing bytes, and, when
 * `options` give them, sites that do not fit the file or name a ref out of
 * range. What it returns, encodeReferenceSites encodes back to `bytes`.
 */
export function decodeReferenceSites(bytes: Uint8Array, options: DecodeReferenceSitesOptions = {}): ReferenceSite[] {
  const fail = (why: string, offset: number): never => {
    throw new CastoreError('REFERENCES_INVALID', `reference sites: ${why}`, { offset });
  };
  let at = 0;
  const varint = (what: string): number => {
    const start = at;
    let value = 0;
    let scale = 1;
    for (let i = 0; ; i++) {
      if (at >= bytes.length) return fail(`truncated inside ${what}`, start);
      if (i >= MAX_VARINT_BYTES) return fail(`${what} is longer than ${MAX_VARINT_BYTES} bytes`, start);
      const byte = bytes[at++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (byte === 0 && i > 0) return fail(`${what} is not minimally encoded`, start);
        if (!Number.isSafeInteger(value)) return fail(`${what} is above 2^53 - 1`, start);
        return value;
      }
      scale *= 0x80;
    }
  };
  if (bytes.length === 0) fail('empty', 0);
  if (bytes[0] !== REFERENCE_SITES_FORMAT) fail(`format ${bytes[0]} is not ${REFERENCE_SITES_FORMAT}`, 0);
  at = 1;
  const count = varint('the count');
  // Each site takes at least two bytes: a count beyond that is a lie, refused before it sizes anything.
  if (count > (bytes.length - at) / 2) fail(`a count of ${count} sites does not fit in the ${bytes.length - at} bytes left`, 1);
  if (options.length !== undefined && count > Math.floor(options.length / HASH_PART_LENGTH)) {
    fail(`${count} sites cannot fit in a file of ${options.length} bytes`, 1);
  }
  const sites: ReferenceSite[] = [];
  let end = 0;
  for (let i = 0; i < count; i++) {
    const siteAt = at;
    const offset = end + varint(`site ${i}'s gap`);
    const ref = varint(`site ${i}'s ref`);
    if (!Number.isSafeInteger(offset + HASH_PART_LENGTH)) fail(`site ${i}'s offset is above 2^53 - 1`, siteAt);
    sites.push({ offset, ref });
    end = offset + HASH_PART_LENGTH;
  }
  if (at !== bytes.length) fail(`${bytes.length - at} bytes after the last site`, at);
  checkReferenceSites(sites, options.length, options.refCount);
  return sites;
}
