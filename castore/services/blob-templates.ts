/**
 * Reference-aware blobs as a reader can offer them (docs/castore.md,
 * "Reference-aware blobs"): which blobs a backend keeps as a template over
 * a normalized blob. A copy that finds this capability fetches the
 * normalized blob (once for every rebuilt file that shares it) and has the
 * target restore the real one, which the target verifies against its id
 * (Ingest.putTemplate) before anything names it.
 */
import type { Digest } from '../node.js';

/** A templated blob's normalized blob and its template record (castore/references/template-record.ts). */
export interface BlobTemplate {
  normalized: Digest;
  record: Uint8Array;
}

/**
 * A reader that tells which blobs it keeps as templates. Contract: the
 * answer holds only ids among those asked; an id it lacks, or keeps whole,
 * is left out. What it answers is a claim, not a proof: whoever stores a
 * blob from a template verifies it.
 */
export interface BlobTemplateReader {
  templates(ids: readonly Digest[]): Promise<Map<Digest, BlobTemplate>>;
}

/** Whether `reader` offers templates (feature-detected, as the bulk capability is). */
export function offersTemplates(reader: object): reader is BlobTemplateReader {
  return 'templates' in reader && typeof (reader as { templates: unknown }).templates === 'function';
}
