/** The castore service interfaces (blobs, directories, path info) and the ingest that writes to them. */
export type { BlobReader, BlobService, BlobStat, BlobWriter, ByteRange, StoredBlob } from './blob-service.js';
export { offersTemplates, type BlobTemplate, type BlobTemplateReader } from './blob-templates.js';
export type { DirectoryReader, DirectoryService, StoredDirectory } from './directory-service.js';
export type { PathInfoReader, PathInfoService } from './path-info-service.js';
export { withIngest, walkClosure, type CastoreReader, type CastoreServices, type Clock, type Ingest, type StaleWrites, type StoreMaintenance } from './castore-services.js';
