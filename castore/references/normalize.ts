/**
 * Reference normalization: every occurrence of a reference's hash part in a
 * file is replaced by REFERENCE_PLACEHOLDER, and where it was (offset, which
 * reference) is kept beside the normalized bytes. After a mass rebuild the
 * same binary in its new store path differs only in those hash parts, so
 * its normalized bytes are the same and dedup.
 *
 * The scan. A hash part is 32 nix32 characters, and only 32 of the 256 byte
 * values are nix32, so the scan looks at the last byte of each 32-byte
 * window first and, finding a byte that is not nix32, skips past it: on
 * binary data most windows cost one byte read (a Boyer–Moore skip over a
 * byte class). A window of 32 nix32 bytes is looked up by its first three
 * characters (15 bits) among the hash parts, then compared whole. Inside a
 * long nix32 run (a list of hashes) the window moves one byte at a time
 * but keeps what it knows, so each byte is classified once.
 *
 * Matches do not overlap: the scan takes the leftmost window that is a hash
 * part and continues after it. Two hash parts overlapping in a file would
 * need one's suffix to be the other's prefix; then the leftmost wins, and
 * the site list still restores the bytes exactly.
 */
import { CastoreError } from '../errors.js';
import { bucketOf, HASH_PART_LENGTH, HashPartSet, hashPartSet, NIX32_BYTE, REFERENCE_PLACEHOLDER } from './hash-parts.js';

/** Where a reference's hash part was: its byte offset in the file, and its index among the hash parts. */
export interface ReferenceSite {
  offset: number;
  ref: number;
}

export interface NormalizedFile {
  /** The file with each site's 32 bytes replaced by REFERENCE_PLACEHOLDER; same length. */
  normalized: Uint8Array;
  /** Sorted by offset, non-overlapping. */
  refs: ReferenceSite[];
}

function equalsAt(bytes: Uint8Array, at: number, hashPart: Uint8Array): boolean {
  for (let i = 0; i < HASH_PART_LENGTH; i++) if (bytes[at + i] !== hashPart[i]) return false;
  return true;
}

/**
 * Normalizes `buf` in place, appending its sites (offsets plus `base`) to
 * `sites`. Returns where it stopped: the first window start it did not
 * examine, always within 31 bytes of the end, so bytes from there on may
 * begin a hash part that continues in the next chunk.
 */
function scan(buf: Uint8Array, set: HashPartSet, base: number, sites: ReferenceSite[], maxSites = Infinity): number {
  const n = buf.length;
  // At the cap, nothing more is replaced: every byte is final as it is.
  if (sites.length >= maxSites) return n;
  const { buckets, occupied, bytes: parts } = set;
  let p = 0;
  // buf[p .. known) are known to be nix32 bytes (known <= p + 32).
  let known = 0;
  while (p + HASH_PART_LENGTH <= n) {
    let k = p + HASH_PART_LENGTH - 1;
    while (k >= known && NIX32_BYTE[buf[k]!] === 1) k--;
    if (k >= known) {
      // No window that contains byte k can be a hash part.
      p = k + 1;
      known = p;
      continue;
    }
    known = p + HASH_PART_LENGTH;
    const key = bucketOf(buf, p);
    let matched = -1;
    if (occupied[key] === 1) {
      for (const index of buckets[key]!) {
        if (equalsAt(buf, p, parts[index]!)) {
          matched = index;
          break;
        }
      }
    }
    if (matched < 0) {
      p++;
      continue;
    }
    sites.push({ offset: base + p, ref: matched });
    buf.set(REFERENCE_PLACEHOLDER, p);
    p += HASH_PART_LENGTH;
    if (sites.length >= maxSites) return n;
  }
  return p;
}

export interface NormalizeOptions {
  /**
   * Replace at most this many sites; hash parts after them stay in the
   * normalized bytes (the file still restores exactly, it dedups less).
   * Bounds the memory of a hostile file that is all hash parts.
   */
  maxSites?: number;
}

/**
 * `bytes` normalized against `hashParts` (32-character nix32 hash parts;
 * site.ref indexes them): a new array, `bytes` is not changed. Refuses
 * (REFERENCES_INVALID) a hash part that is not 32 nix32 characters, before
 * reading `bytes`. For many files of one store path, pass one HashPartSet.
 * The whole file is in memory; ReferenceNormalizer takes it in chunks.
 */
export function normalizeReferences(bytes: Uint8Array, hashParts: readonly string[] | HashPartSet, options: NormalizeOptions = {}): NormalizedFile {
  const set = hashPartSet(hashParts);
  // A copy (a Buffer's slice() would be a view, and normalizing would change the caller's bytes).
  const normalized = new Uint8Array(bytes);
  const refs: ReferenceSite[] = [];
  scan(normalized, set, 0, refs, options.maxSites);
  return { normalized, refs };
}

/**
 * Normalization of a file fed in chunks of any size: `push` returns the
 * normalized bytes that are final so far (all but at most the last 31 bytes
 * seen, which may begin a hash part that the next chunk completes), `end`
 * the rest. The output is the same as normalizeReferences's on the whole
 * file, whatever the chunking. Memory: one chunk plus 31 bytes, plus the
 * sites. The chunks passed in are not changed; returned chunks are views of
 * new arrays the caller may keep.
 */
export class ReferenceNormalizer {
  private readonly set: HashPartSet;
  private carry: Uint8Array = new Uint8Array(0);
  /** Bytes returned so far: the offset of carry[0] in the file. */
  private emitted = 0;
  private ended = false;
  /** The sites found so far, sorted, with offsets in the whole file. Complete after `end`. */
  readonly refs: ReferenceSite[] = [];

  /** Refuses (REFERENCES_INVALID) a hash part that is not 32 nix32 characters. */
  constructor(
    hashParts: readonly string[] | HashPartSet,
    private readonly options: NormalizeOptions = {},
  ) {
    this.set = hashPartSet(hashParts);
  }

  /** The normalized bytes that `chunk` makes final (possibly none). Refuses (INGEST_ABORTED) a push after `end`. */
  push(chunk: Uint8Array): Uint8Array {
    if (this.ended) throw new CastoreError('INGEST_ABORTED', 'reference normalizer: push after end');
    const work = new Uint8Array(this.carry.length + chunk.length);
    work.set(this.carry);
    work.set(chunk, this.carry.length);
    const stop = scan(work, this.set, this.emitted, this.refs, this.options.maxSites);
    this.carry = work.slice(stop);
    this.emitted += stop;
    return work.subarray(0, stop);
  }

  /** The last normalized bytes (under 32). After it, `refs` is complete and `push` refuses. */
  end(): Uint8Array {
    if (this.ended) throw new CastoreError('INGEST_ABORTED', 'reference normalizer: ended twice');
    this.ended = true;
    const rest = this.carry;
    this.emitted += rest.length;
    this.carry = new Uint8Array(0);
    return rest;
  }

  /** Bytes returned so far (the file's length, after `end`). */
  get length(): number {
    return this.emitted;
  }
}

/**
 * The normalized form of a file whose sites are already known (a template
 * record's): a copy of `bytes` with REFERENCE_PLACEHOLDER written at each
 * site, whatever is there. `base` is the offset of `bytes` in the file, so
 * a range of it can be normalized alone; sites outside it are skipped.
 */
export function placeholdersAt(bytes: Uint8Array, sites: readonly ReferenceSite[], base = 0): Uint8Array {
  const out = new Uint8Array(bytes);
  for (const { offset } of sites) {
    const from = offset - base;
    if (from + HASH_PART_LENGTH <= 0 || from >= out.length) continue;
    const skip = Math.max(0, -from);
    out.set(REFERENCE_PLACEHOLDER.subarray(skip, Math.min(HASH_PART_LENGTH, out.length - from)), from + skip);
  }
  return out;
}
