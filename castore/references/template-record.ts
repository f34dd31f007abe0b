/**
 * The template record of a reference-aware blob (format 1): what turns a
 * normalized blob N back into the real file X, self-contained — the sites
 * and the hash parts they index, not indices into a store path's reference
 * list (two store paths may share a directory, and with it X):
 *
 *   u8      format = 1
 *   u32 LE  hash part count h (1 ≤ h ≤ sites)
 *   h × 32  hash parts, ASCII nix32, distinct, in the order sites first use them
 *   …       the sites, in their own format-1 encoding (sites-encoding.ts), to the end:
 *           at least one site, at most MAX_TEMPLATE_SITES, each ref below h
 *
 * Canonical: every hash part is used by a site and they are listed in
 * order of first use, so equal templates are equal bytes (decoding refuses
 * anything else). Bounded: a hostile record cannot make a reader allocate
 * more than its own size suggests, nor more than MAX_TEMPLATE_SITES sites.
 *
 * Why a fixed u32 for the count rather than a varint: the table is 32
 * bytes per entry, so the 3 bytes saved are noise, and a fixed field makes
 * the "count × 32 must fit in what is left" check one line.
 */
import { CastoreError } from '../errors.js';
import { HASH_PART_LENGTH, hashPartBytes } from './hash-parts.js';
import type { ReferenceSite } from './normalize.js';
import { decodeReferenceSites, encodeReferenceSites } from './sites-encoding.js';

export const TEMPLATE_RECORD_FORMAT = 1;

/**
 * At most this many sites in one template. A file with more keeps the rest
 * of its hash parts in its normalized bytes (the normalizer stops at this
 * many): it still restores exactly, it only dedups less. 65,536 sites is
 * at most a few hundred KiB of record, and far beyond any real file's
 * references (a linker's RPATH, a wrapper, a closure list: tens to
 * thousands).
 */
export const MAX_TEMPLATE_SITES = 65_536;

/** What restores a normalized blob: its sites, and the hash parts their `ref`s index. */
export interface TemplateRecord {
  hashParts: string[];
  sites: ReferenceSite[];
}

const HEADER = 5;

function invalid(why: string, offset: number): CastoreError {
  return new CastoreError('REFERENCES_INVALID', `template record: ${why}`, { offset });
}

/**
 * The sites of a normalization (refs indexing `hashParts`, e.g. a store
 * path's) as a canonical template: only the hash parts used, in order of
 * first use, the refs renumbered. Refuses (REFERENCES_INVALID) a ref that
 * `hashParts` lacks and more than MAX_TEMPLATE_SITES sites.
 */
export function templateOf(sites: readonly ReferenceSite[], hashParts: readonly string[]): TemplateRecord {
  if (sites.length > MAX_TEMPLATE_SITES) throw invalid(`${sites.length} sites, at most ${MAX_TEMPLATE_SITES}`, 0);
  const index = new Map<string, number>();
  const used: string[] = [];
  const renumbered = sites.map(({ offset, ref }) => {
    const hashPart = hashParts[ref];
    if (hashPart === undefined) throw invalid(`site at ${offset} names hash part ${ref}, not one of ${hashParts.length}`, 0);
    let at = index.get(hashPart);
    if (at === undefined) {
      at = used.length;
      index.set(hashPart, at);
      used.push(hashPart);
    }
    return { offset, ref: at };
  });
  return { hashParts: used, sites: renumbered };
}

/**
 * The format-1 bytes of `record`. Refuses (REFERENCES_INVALID) what the
 * decoder would: no site, too many, hash parts that are not 32 nix32
 * characters, repeated, unused or not in order of first use.
 */
export function encodeTemplateRecord(record: TemplateRecord): Uint8Array {
  checkCanonical(record, 0);
  const table = record.hashParts.map((hashPart, index) => hashPartBytes(hashPart, index));
  const sites = encodeReferenceSites(record.sites);
  const out = new Uint8Array(HEADER + table.length * HASH_PART_LENGTH + sites.length);
  out[0] = TEMPLATE_RECORD_FORMAT;
  new DataView(out.buffer).setUint32(1, table.length, true);
  table.forEach((bytes, index) => out.set(bytes, HEADER + index * HASH_PART_LENGTH));
  out.set(sites, HEADER + table.length * HASH_PART_LENGTH);
  return out;
}

/**
 * Decodes format 1 strictly for a file of `length` bytes: refuses
 * (REFERENCES_INVALID, with the byte offset in `bytes`) another format, a
 * truncated record, a count that the bytes left cannot hold (before
 * allocating for it), a hash part outside nix32, repeated, unused or out
 * of first-use order, sites the sites decoder refuses or that do not fit
 * `length` bytes, no site, more than MAX_TEMPLATE_SITES. What it returns,
 * encodeTemplateRecord encodes back to `bytes`.
 */
export function decodeTemplateRecord(bytes: Uint8Array, length: number): TemplateRecord {
  if (!(bytes instanceof Uint8Array)) throw invalid('not bytes', 0);
  if (bytes.length < HEADER) throw invalid(`${bytes.length} bytes, shorter than its header`, 0);
  if (bytes[0] !== TEMPLATE_RECORD_FORMAT) throw invalid(`format ${bytes[0]} is not ${TEMPLATE_RECORD_FORMAT}`, 0);
  const count = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1, true);
  // Every hash part is used by a site, and a site takes at least 2 bytes: the rest must hold both.
  if (count === 0 || count > MAX_TEMPLATE_SITES || count * (HASH_PART_LENGTH + 2) > bytes.length - HEADER) {
    throw invalid(`a count of ${count} hash parts does not fit in ${bytes.length - HEADER} bytes (or is 0, or above ${MAX_TEMPLATE_SITES})`, 1);
  }
  const hashParts: string[] = [];
  for (let index = 0; index < count; index++) {
    const at = HEADER + index * HASH_PART_LENGTH;
    const text = Buffer.from(bytes.buffer, bytes.byteOffset + at, HASH_PART_LENGTH).toString('latin1');
    try {
      hashPartBytes(text, index);
    } catch (error) {
      throw invalid((error as Error).message, at);
    }
    hashParts.push(text);
  }
  const sitesAt = HEADER + count * HASH_PART_LENGTH;
  let sites: ReferenceSite[];
  try {
    sites = decodeReferenceSites(bytes.subarray(sitesAt), { length, refCount: count });
  } catch (error) {
    const offset = error instanceof CastoreError && error.offset !== undefined ? sitesAt + error.offset : sitesAt;
    throw invalid((error as Error).message, offset);
  }
  const record = { hashParts, sites };
  checkCanonical(record, sitesAt);
  return record;
}

/** Refuses (REFERENCES_INVALID) a record that is not the one canonical form of its sites and hash parts. */
function checkCanonical({ hashParts, sites }: TemplateRecord, offset: number): void {
  if (!Array.isArray(hashParts) || !Array.isArray(sites)) throw invalid('hash parts and sites must be lists', offset);
  if (sites.length === 0) throw invalid('no site: a file without one is stored as it is, not as a template', offset);
  if (sites.length > MAX_TEMPLATE_SITES) throw invalid(`${sites.length} sites, at most ${MAX_TEMPLATE_SITES}`, offset);
  if (new Set(hashParts).size !== hashParts.length) throw invalid('a hash part is listed twice', HEADER);
  // First use in order: site refs introduce 0, 1, 2, … and never skip one.
  let next = 0;
  for (const site of sites) {
    const ref = (site as Partial<ReferenceSite> | null)?.ref;
    if (typeof ref !== 'number' || !Number.isSafeInteger(ref) || ref < 0 || ref > next || ref >= hashParts.length) {
      throw invalid(`site ref ${String(ref)} is not a hash part already used or the next one (${next})`, offset);
    }
    if (ref === next) next++;
  }
  if (next !== hashParts.length) throw invalid(`${hashParts.length - next} hash parts are listed but no site uses them`, HEADER);
}
