/**
 * Reading a templated blob: its real bytes, whole or a range, from its
 * normalized blob and its template record. A normalized file has the real
 * file's length and every byte outside the sites at its real offset, so a
 * range of the real file is the same range of the normalized one, widened
 * to whole sites at its two ends (a site is restored whole or not at all:
 * its bytes are checked against the placeholder).
 */
import { HASH_PART_LENGTH } from './hash-parts.js';
import type { ReferenceSite } from './normalize.js';
import { ReferenceRestorer } from './restore.js';
import type { TemplateRecord } from './template-record.js';

/** The normalized bytes to read for a range of the real file. */
export interface TemplateWindow {
  /** Where to read in the normalized blob, and how much. */
  offset: number;
  length: number;
  /** The sites inside the window, their offsets relative to it. */
  sites: ReferenceSite[];
  /** Restored bytes to drop before the range asked for begins. */
  skip: number;
}

/** The first site that ends after `offset` (sites are sorted and do not overlap). */
function firstEndingAfter(sites: readonly ReferenceSite[], offset: number): number {
  let low = 0;
  let high = sites.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (sites[middle]!.offset + HASH_PART_LENGTH > offset) high = middle;
    else low = middle + 1;
  }
  return low;
}

/** The window of the normalized blob that bytes [offset, offset + length) of the real one need (`sites` as decoded: sorted, inside the file). */
export function templateWindow(sites: readonly ReferenceSite[], offset: number, length: number): TemplateWindow {
  const end = offset + length;
  let index = firstEndingAfter(sites, offset);
  let start = offset;
  let stop = end;
  const inside: ReferenceSite[] = [];
  if (index < sites.length && sites[index]!.offset < offset) start = sites[index]!.offset;
  for (; index < sites.length && sites[index]!.offset < end; index++) {
    const site = sites[index]!;
    inside.push({ offset: site.offset - start, ref: site.ref });
    stop = Math.max(stop, site.offset + HASH_PART_LENGTH);
  }
  return { offset: start, length: stop - start, sites: inside, skip: offset - start };
}

/**
 * Bytes [offset, offset + length) of the real file, restored from the
 * normalized blob read by `read` (which must yield exactly the bytes of the
 * range it is asked for). Refuses (REFERENCES_INVALID, at the real file's
 * offset) normalized bytes that are not the placeholder at a site, and
 * what ReferenceRestorer refuses; the caller names the blob.
 */
export async function* restoreTemplateRange(
  record: TemplateRecord,
  offset: number,
  length: number,
  read: (offset: number, length: number) => AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  if (length === 0) return;
  const window = templateWindow(record.sites, offset, length);
  const restorer = new ReferenceRestorer(window.sites, record.hashParts, window.length);
  let position = 0;
  for await (const chunk of read(window.offset, window.length)) {
    const restored = restorer.push(chunk);
    const from = Math.max(window.skip - position, 0);
    const to = Math.min(window.skip + length - position, restored.length);
    position += chunk.length;
    if (from < to) yield from === 0 && to === restored.length ? restored : restored.subarray(from, to);
  }
  restorer.end();
}
