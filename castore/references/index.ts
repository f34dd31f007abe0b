/**
 * Reference normalization of store path files (issue 20): the hash parts
 * of a path's references and of itself replaced by a fixed placeholder,
 * with a per-file list of where they were, so a file that a rebuild only
 * moved to new store paths keeps the same normalized bytes. The inverse,
 * and the stored form of the sites list. Both directions also take chunks.
 * A templated blob's record (sites + the hash parts they use) and its
 * restore by range.
 */
export { HASH_PART_LENGTH, HashPartSet, REFERENCE_PLACEHOLDER } from './hash-parts.js';
export { normalizeReferences, placeholdersAt, ReferenceNormalizer, type NormalizedFile, type NormalizeOptions, type ReferenceSite } from './normalize.js';
export { checkReferenceSites, ReferenceRestorer, restoreReferences, restoreReferencesInPlace } from './restore.js';
export { decodeReferenceSites, encodeReferenceSites, REFERENCE_SITES_FORMAT, type DecodeReferenceSitesOptions } from './sites-encoding.js';
export { decodeTemplateRecord, encodeTemplateRecord, MAX_TEMPLATE_SITES, TEMPLATE_RECORD_FORMAT, templateOf, type TemplateRecord } from './template-record.js';
export { restoreTemplateRange, templateWindow, type TemplateWindow } from './template-restore.js';
