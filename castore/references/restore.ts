/**
 * The inverse of normalization: a normalized file, its sites and the hash
 * parts of the store path it is restored into give the real file. The
 * sites are checked before any byte is written, and every site's bytes
 * must be the placeholder, so restoring can only put hash parts where the
 * normalization took them out. (It does not prove the result is the file
 * that was normalized: the caller verifies the real file's BLAKE3.)
 */
import { CastoreError } from '../errors.js';
import { HASH_PART_LENGTH, HashPartSet, hashPartBytes, REFERENCE_PLACEHOLDER } from './hash-parts.js';
import type { ReferenceSite } from './normalize.js';

function invalid(why: string, offset?: number): CastoreError {
  return new CastoreError('REFERENCES_INVALID', why, offset === undefined ? {} : { offset });
}

/**
 * Checks that `sites` can be sites of a file of `length` bytes with
 * `refCount` hash parts (either left out: not checked): at most
 * length / 32 of them, each an object with integer `offset` and `ref`,
 * sorted by offset, not overlapping, inside the file, and `ref` an index
 * below `refCount`. Refuses (REFERENCES_INVALID, naming the site and its
 * offset) the first that is not; the count is checked before any site is
 * read.
 */
export function checkReferenceSites(sites: readonly ReferenceSite[], length = Number.MAX_SAFE_INTEGER, refCount = Number.MAX_SAFE_INTEGER): void {
  if (!Array.isArray(sites)) throw invalid('the reference sites are not a list');
  const most = Math.floor(length / HASH_PART_LENGTH);
  if (sites.length > most) throw invalid(`${sites.length} reference sites cannot fit in ${length} bytes (at most ${most})`);
  let end = 0;
  for (let i = 0; i < sites.length; i++) {
    const site: unknown = sites[i];
    if (typeof site !== 'object' || site === null) throw invalid(`reference site ${i} is not an object`);
    const { offset, ref } = site as Partial<ReferenceSite>;
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      throw invalid(`reference site ${i} has offset ${String(offset)}, not a non-negative integer`);
    }
    if (offset < end) {
      throw invalid(`reference site ${i} at ${offset} is before the end of the previous one (${end}): sites must be sorted and not overlap`, offset);
    }
    if (offset > length - HASH_PART_LENGTH) throw invalid(`reference site ${i} at ${offset} does not fit in ${length} bytes`, offset);
    if (typeof ref !== 'number' || !Number.isSafeInteger(ref) || ref < 0 || ref >= refCount) {
      throw invalid(`reference site ${i} names reference ${String(ref)}, not one of the ${refCount} hash parts`, offset);
    }
    end = offset + HASH_PART_LENGTH;
  }
}

/**
 * Restoration of a normalized file fed in chunks of any size: `push`
 * returns the real bytes of each chunk (a new array; the chunk is not
 * changed), `end` checks the file had exactly its declared length. The
 * constructor checks everything about the sites that does not need the
 * bytes (checkReferenceSites, with the hash parts' count); `push` refuses
 * (REFERENCES_INVALID, with the file offset) a site whose bytes are not
 * the placeholder and bytes past the declared length; after a refusal the
 * restorer is unusable and what it returned before must be discarded.
 */
/**
 * The hash parts as bytes, checked: a restore only looks them up by index,
 * so it does not build a HashPartSet's scan buckets (reads of many small
 * templated files each restore once).
 */
function hashPartTable(hashParts: readonly string[] | HashPartSet): readonly Uint8Array[] {
  if (hashParts instanceof HashPartSet) return hashParts.bytes;
  if (!Array.isArray(hashParts)) throw invalid('the hash parts are not a list');
  return hashParts.map((hashPart: unknown, index) => hashPartBytes(hashPart, index));
}

export class ReferenceRestorer {
  private readonly parts: readonly Uint8Array[];
  private readonly sites: readonly ReferenceSite[];
  private readonly length: number;
  /** Bytes taken so far. */
  private position = 0;
  /** The first site not wholly restored yet. */
  private next = 0;
  private failed = false;

  /**
   * For a normalized file of `length` bytes. Refuses (REFERENCES_INVALID)
   * a hash part that is not 32 nix32 characters and sites that
   * checkReferenceSites refuses.
   */
  constructor(sites: readonly ReferenceSite[], hashParts: readonly string[] | HashPartSet, length: number) {
    if (!Number.isSafeInteger(length) || length < 0) throw invalid(`a file length of ${length} cannot be`);
    this.parts = hashPartTable(hashParts);
    // Checked as copied, so a site cannot change between its check and its use.
    if (Array.isArray(sites) && sites.length > Math.floor(length / HASH_PART_LENGTH)) checkReferenceSites(sites, length);
    const copy = Array.isArray(sites)
      ? sites.map((site: unknown) => (typeof site === 'object' && site !== null ? { ...(site as ReferenceSite) } : site) as ReferenceSite)
      : sites;
    checkReferenceSites(copy, length, this.parts.length);
    this.sites = copy;
    this.length = length;
  }

  push(chunk: Uint8Array): Uint8Array {
    return this.restore(chunk, false);
  }

  /** `push` into `chunk` itself (the caller's own bytes, real on return; after a refusal, neither). */
  pushInPlace(chunk: Uint8Array): Uint8Array {
    return this.restore(chunk, true);
  }

  private restore(chunk: Uint8Array, inPlace: boolean): Uint8Array {
    if (this.failed) throw invalid('reference restorer used after a refusal');
    const start = this.position;
    const stop = start + chunk.length;
    if (stop > this.length) return this.fail(`the normalized file is longer than its declared ${this.length} bytes`, this.length);
    const out = inPlace ? chunk : new Uint8Array(chunk); // a copy, also of a Buffer (whose slice() is a view)
    while (this.next < this.sites.length) {
      const site = this.sites[this.next]!;
      if (site.offset >= stop) break;
      const from = Math.max(site.offset, start);
      const to = Math.min(site.offset + HASH_PART_LENGTH, stop);
      const hashPart = this.parts[site.ref]!;
      for (let at = from; at < to; at++) {
        if (out[at - start] !== REFERENCE_PLACEHOLDER[at - site.offset]) {
          return this.fail(`reference site ${this.next} at ${site.offset}: the normalized bytes there are not the placeholder`, at);
        }
        out[at - start] = hashPart[at - site.offset]!;
      }
      if (to < site.offset + HASH_PART_LENGTH) break;
      this.next++;
    }
    this.position = stop;
    return out;
  }

  /** Refuses (REFERENCES_INVALID) a file shorter than its declared length. */
  end(): void {
    if (this.failed) throw invalid('reference restorer used after a refusal');
    if (this.position !== this.length) this.fail(`the normalized file ended at ${this.position} bytes, ${this.length} were declared`, this.position);
  }

  private fail(why: string, offset: number): never {
    this.failed = true;
    throw invalid(why, offset);
  }
}

/**
 * The real file from its normalized bytes, its sites and the hash parts of
 * the store path it belongs to (a new array). Refuses (REFERENCES_INVALID)
 * what ReferenceRestorer refuses: bad hash parts, sites out of range,
 * unsorted or overlapping, more than length / 32 of them, a ref index out
 * of range, a site whose bytes are not the placeholder.
 */
export function restoreReferences(normalized: Uint8Array, refs: readonly ReferenceSite[], hashParts: readonly string[] | HashPartSet): Uint8Array {
  const restorer = new ReferenceRestorer(refs, hashParts, normalized.length);
  const out = restorer.push(normalized);
  restorer.end();
  return out;
}

/**
 * restoreReferences written into `normalized` itself (the caller's own
 * buffer, which then holds the real file; after a refusal, neither): a
 * whole large file restored without a second copy of it.
 */
export function restoreReferencesInPlace(normalized: Uint8Array, refs: readonly ReferenceSite[], hashParts: readonly string[] | HashPartSet): Uint8Array {
  const restorer = new ReferenceRestorer(refs, hashParts, normalized.length);
  const out = restorer.pushInPlace(normalized);
  restorer.end();
  return out;
}
