/**
 * castore: a BLAKE3 content-addressed store for Nix store path contents —
 * blobs with outboards for verified streaming, canonical directory objects,
 * NAR <-> castore conversion, a store path registry, fsck and GC. Used by
 * both the coordinator and the agent. Format specification: docs/castore.md.
 */
export * from './blake3/index.js';
export { CastoreError, type CastoreErrorCode } from './errors.js';
export * from './node.js';
export { decodeDirectory, encodeDirectory, directoryId, directorySize, invalidEntryNameReason } from './directory.js';
export { Castore, PACK_MAX, type BlobStat } from './store/castore.js';
export { IngestSession, type BlobWriter } from './store/ingest-session.js';
export { StorePathInfoSchema, type StorePathInfo } from './store/store-path-info.js';
export { ingestNar, type NarIngestOptions, type NarIngestResult } from './nar-ingest.js';
export { ingestStorePath, type IngestStorePathOptions, type StorePathMetadata } from './ingest-store-path.js';
export { exportNar, type NarByteRange } from './nar-export.js';
export { collectGarbage, cleanStaleIngests, findStaleIngestFiles, type GcOptions, type GcReport, type StaleIngestFiles } from './store/gc.js';
export { fsck, type FsckOptions, type FsckProblem, type FsckReport } from './store/fsck.js';
export { fetchClosure, LARGE_BLOB_SEGMENT_BYTES, type FetchOptions, type FetchReport, type TransferProgress } from './transfer/fetch-closure.js';
export { uploadStorePaths, type UploadOptions, type UploadReport } from './transfer/upload-store-paths.js';
export { splitBlobs } from './transfer/batches.js';
export { streamOrder } from './transfer/stream-order.js';
export {
  writeBundle,
  readBundle,
  BundleError,
  BundleManifestSchema,
  BundleConfigSchema,
  BundleAudienceSchema,
  BUNDLE_FORMAT,
  DEFAULT_BUNDLE_TTL_MS,
  MAX_BUNDLE_TTL_MS,
  type BundleManifest,
  type BundleConfig,
  type BundleAudience,
  type BundleErrorCode,
  type BundleOptions,
  type ReadBundleOptions,
} from './bundle.js';
export { referencesFirst } from './references-first.js';
export { processAlive } from './store/process-alive.js';
