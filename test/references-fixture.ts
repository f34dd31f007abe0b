/** Seeded hash parts and files with hash parts planted in them, for the references tests. */
import { NIX_BASE32_ALPHABET } from '../nix/index.js';
import { seededBytes, seededRandom } from './seeded-random.js';
import { HASH_PART_LENGTH, type ReferenceSite } from '../castore/references/index.js';

export const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);

/** `count` distinct hash parts from `seed`. */
export function seededHashParts(seed: number, count: number): string[] {
  const random = seededRandom(seed);
  const out = new Set<string>();
  while (out.size < count) {
    let part = '';
    for (let i = 0; i < HASH_PART_LENGTH; i++) part += NIX_BASE32_ALPHABET[random(32)];
    out.add(part);
  }
  return [...out];
}

/**
 * A file of `length` seeded random bytes with `sites` random sites (sorted,
 * apart by at least `minGap` bytes) whose bytes are hash parts of `hashParts`.
 * `template` is the same file with the sites left as they were; filling it
 * with another list of hash parts gives the "same binary" rebuilt.
 */
export function plantedFile(seed: number, length: number, siteCount: number, refCount: number, minGap = 0): { template: Uint8Array; sites: ReferenceSite[] } {
  const random = seededRandom(seed ^ 0x5eed);
  const template = seededBytes(seed, length);
  const offsets = new Set<number>();
  for (let i = 0; i < siteCount * 4 && offsets.size < siteCount; i++) offsets.add(random(length - HASH_PART_LENGTH + 1));
  const sites: ReferenceSite[] = [];
  let end = 0;
  for (const offset of [...offsets].sort((a, b) => a - b)) {
    if (offset < end + minGap && sites.length > 0) continue;
    if (offset < end) continue;
    sites.push({ offset, ref: random(refCount) });
    end = offset + HASH_PART_LENGTH;
  }
  return { template, sites };
}

/** `template` with each site's bytes set to its hash part. */
export function fill(template: Uint8Array, sites: readonly ReferenceSite[], hashParts: readonly string[]): Uint8Array {
  const out = template.slice();
  for (const { offset, ref } of sites) out.set(ascii(hashParts[ref]!), offset);
  return out;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Whether `a` and `b` hold the same bytes (vitest's toEqual walks typed arrays element by element: slow for large ones). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
