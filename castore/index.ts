/**
 * castore: a BLAKE3 content-addressed store for Nix store path contents —
 * blobs with outboards for verified streaming, canonical directory objects,
 * NAR <-> castore conversion, a store path registry, fsck and GC. Three
 * services (blobs, directories, path info) with backends chosen by address
 * (`local:///path`, `memory:`); the coordinator's data plane is a read-only
 * one, and `copyClosure` copies a closure from any of them into a writable
 * one, verified. Used by both the coordinator and the agent. Format
 * specification and design: docs/castore.md.
 */
export * from './blake3/index.js';
export { CastoreError, type CastoreErrorCode } from './errors.js';
export * from './node.js';
export { decodeDirectory, encodeDirectory, directoryId, directorySize, invalidEntryNameReason } from './directory.js';
export * from './services/index.js';
export { LocalCastore, type LocalBlobStat, type LocalCastoreOptions, type LocalCastoreStats } from './local/local-castore.js';
export { LocalIngest } from './local/local-ingest.js';
export { MemoryCastore, type MemoryCastoreOptions } from './memory/memory-castore.js';
export { openCastore, type OpenCastoreOptions } from './open-castore.js';
export { RemoteCastore, openVouchedClosure, type VouchedClosure } from './remote/remote-castore.js';
export { PACK_MAX } from './local/pack-files.js';
export { processAlive } from './local/process-alive.js';
export { StorePathInfoSchema, type StorePathInfo } from './store-path-info.js';
export { ingestNar, type NarIngestOptions, type NarIngestResult } from './nar-ingest.js';
export { ingestStorePath, storePathHashParts, type IngestStorePathOptions, type StorePathMetadata } from './ingest-store-path.js';
export {
  decodeTemplateRecord,
  encodeTemplateRecord,
  HashPartSet,
  MAX_TEMPLATE_SITES,
  REFERENCE_PLACEHOLDER,
  TEMPLATE_RECORD_FORMAT,
  type TemplateRecord,
} from './references/index.js';
export { exportNar, type NarByteRange } from './nar-export.js';
export { collectGarbage, type GcOptions, type GcReport } from './gc.js';
export { fsck, type FsckOptions, type FsckProblem, type FsckReport } from './fsck.js';
export {
  copyClosure,
  SharedIngest,
  SMALL_BLOB_BYTES,
  copyWantedBlobs,
  type CopyOptions,
  type CopyReport,
  type SmallBlobSink,
  type TransferProgress,
  type WantedBlobsCopy,
  type WantedBlobsReport,
} from './transfer/copy-closure.js';
export { DataPlaneBulkCopy, LARGE_BLOB_SEGMENT_BYTES, type DataPlaneBulkCopyOptions, type StreamTap, type StreamTapRecording } from './transfer/data-plane-copy.js';
export { TRANSFER_PARALLEL } from './transfer/batches.js';
export { differingRuns, findDeltaBases, type DeltaBasisStore, type DeltaPair } from './transfer/group-delta.js';
export { closureObjects, estimateFetch, type ClosureFiles, type ClosureObjects, type FetchEstimate } from './transfer/fetch-estimate.js';
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

