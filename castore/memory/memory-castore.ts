/**
 * The memory backend (`memory:`): blobs, directories and the registry in
 * maps, gone with the process. For tests, and for what needs a castore
 * without a disk (a relay's cache in front of a remote, later). It keeps
 * every contract of the services (the conformance suite runs on it); it
 * keeps no outboards (it derives one when asked) and writes nothing down.
 * Templated blobs (docs/castore.md) are kept as their normalized blob's id
 * and record, and restored on every read, as on disk.
 */
import { randomBytes } from 'node:crypto';
import { checkBlobStream, isBlob } from '../blob-check.js';
import { GROUP_SIZE, blake3, OutboardBuilder } from '../blake3/index.js';
import { decodeDirectory } from '../directory.js';
import { CastoreError } from '../errors.js';
import { digestFromBytes, type Digest, type DirectoryNode, type Entry } from '../node.js';
import type { BlobService, BlobStat, BlobWriter, ByteRange, StoredBlob } from '../services/blob-service.js';
import { type CastoreServices, type Clock, type Ingest, type StaleWrites, type StoreMaintenance } from '../services/castore-services.js';
import type { DirectoryService, StoredDirectory } from '../services/directory-service.js';
import type { PathInfoService } from '../services/path-info-service.js';
import { StagedRecords } from '../services/staged-records.js';
import type { StorePathInfo } from '../store-path-info.js';
import { decodeTemplateRecord, restoreReferences, restoreTemplateRange, type HashPartSet, type TemplateRecord } from '../references/index.js';
import type { BlobTemplate, BlobTemplateReader } from '../services/blob-templates.js';
import { templateWriter, verifyTemplate, type TemplateEntry } from '../services/template-writer.js';

interface Stored {
  bytes: Uint8Array;
  lastUsed: number;
}

/** A blob as the memory backend keeps it: its bytes, or (templated) its normalized blob and record. */
interface StoredBlobEntry {
  size: number;
  lastUsed: number;
  bytes?: Uint8Array;
  template?: { normalized: Digest; record: Uint8Array; decoded: TemplateRecord };
}

/** The maps every part of one memory castore shares. */
interface MemoryState {
  readonly blobs: Map<Digest, StoredBlobEntry>;
  readonly directories: Map<Digest, Stored>;
  readonly paths: Map<string, StorePathInfo>;
  /** Open ingests and when each began: GC keeps what they may reference. */
  readonly openIngests: Map<string, number>;
  readonly clock: Clock;
}

const notFound = (id: Digest) => new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not in the store`, { objectId: id });

/** Whether the state holds `id` readable: its bytes, or its template and the normalized blob under it. */
function holds(state: MemoryState, id: Digest): boolean {
  const blob = state.blobs.get(id);
  return blob !== undefined && (blob.template === undefined || holds(state, blob.template.normalized));
}

/** Bytes [offset, offset + length) of a held blob, restored when templated (range checked by the caller). */
async function* readRange(state: MemoryState, id: Digest, offset: number, length: number): AsyncGenerator<Uint8Array> {
  const blob = state.blobs.get(id);
  if (!blob) throw notFound(id);
  if (length === 0) return;
  if (blob.bytes) {
    yield blob.bytes.subarray(offset, offset + length);
    return;
  }
  const { normalized, decoded } = blob.template!;
  if (!state.blobs.has(normalized)) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is a template over ${normalized}, which is not in the store`, { objectId: id });
  try {
    yield* restoreTemplateRange(decoded, offset, length, (from, count) => readRange(state, normalized, from, count));
  } catch (error) {
    if (error instanceof CastoreError && error.code === 'REFERENCES_INVALID') throw new CastoreError('BLOB_CORRUPT', `blob ${id} does not restore from ${normalized}: ${error.message}`, { objectId: id, cause: error });
    throw error;
  }
}

/** A held blob's whole bytes, synchronously (a template restored). */
function bytesOf(state: MemoryState, id: Digest): Uint8Array {
  const blob = state.blobs.get(id);
  if (!blob) throw notFound(id);
  if (blob.bytes) return blob.bytes;
  const { normalized, decoded } = blob.template!;
  return restoreReferences(bytesOf(state, normalized), decoded.sites, decoded.hashParts);
}

class MemoryBlobService implements BlobService, BlobTemplateReader {
  constructor(private readonly state: MemoryState) {}

  async stat(id: Digest): Promise<BlobStat | undefined> {
    return holds(this.state, id) ? { size: this.state.blobs.get(id)!.size } : undefined;
  }

  async missing(ids: readonly Digest[]): Promise<Digest[]> {
    return ids.filter((id) => !holds(this.state, id));
  }

  async *read(id: Digest, range: ByteRange = {}): AsyncIterable<Uint8Array> {
    const blob = this.state.blobs.get(id);
    if (!blob) throw notFound(id);
    const size = blob.size;
    const offset = range.offset ?? 0;
    const length = range.length ?? size - offset;
    if (offset < 0 || length < 0 || offset + length > size) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `range ${offset}+${length} is outside blob ${id} of ${size} bytes`, { objectId: id });
    }
    yield* readRange(this.state, id, offset, length);
  }

  /** BlobTemplateReader: the templates among `ids`, as kept. */
  async templates(ids: readonly Digest[]): Promise<Map<Digest, BlobTemplate>> {
    const found = new Map<Digest, BlobTemplate>();
    for (const id of ids) {
      const template = this.state.blobs.get(id)?.template;
      if (template) found.set(id, { normalized: template.normalized, record: template.record });
    }
    return found;
  }

  async readOutboard(id: Digest): Promise<Uint8Array> {
    const blob = this.state.blobs.get(id);
    if (!blob) throw notFound(id);
    if (blob.size <= GROUP_SIZE) return new Uint8Array(0);
    const builder = new OutboardBuilder();
    for await (const chunk of readRange(this.state, id, 0, blob.size)) builder.update(chunk);
    return builder.finish().outboard;
  }

  async *list(): AsyncIterable<StoredBlob> {
    for (const [id, blob] of [...this.state.blobs]) {
      yield blob.template ? { id, size: blob.size, lastUsed: blob.lastUsed, template: blob.template.normalized } : { id, size: blob.size, lastUsed: blob.lastUsed };
    }
  }

  async deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<StoredBlob[]> {
    const deleted: StoredBlob[] = [];
    // Templates first: a normalized blob named only by templates deleted here goes in the same call.
    const order = [...ids.filter((id) => this.state.blobs.get(id)?.template), ...ids.filter((id) => !this.state.blobs.get(id)?.template)];
    const named = new Map<Digest, number>();
    for (const blob of this.state.blobs.values()) if (blob.template) named.set(blob.template.normalized, (named.get(blob.template.normalized) ?? 0) + 1);
    for (const id of order) {
      const blob = this.state.blobs.get(id);
      if (!blob || blob.lastUsed >= usedBefore || (named.get(id) ?? 0) > 0) continue;
      this.state.blobs.delete(id);
      if (blob.template) named.set(blob.template.normalized, named.get(blob.template.normalized)! - 1);
      deleted.push({ id, size: blob.size, lastUsed: blob.lastUsed });
    }
    return deleted;
  }

  async scrub(id: Digest): Promise<string | undefined> {
    const blob = this.state.blobs.get(id);
    if (!blob) return 'it is not in the store';
    if (blob.template) {
      const { normalized } = blob.template;
      if (!this.state.blobs.has(normalized)) return `it is a template over ${normalized}, which is missing`;
      try {
        const chunks: Uint8Array[] = [];
        for await (const chunk of readRange(this.state, id, 0, blob.size)) chunks.push(chunk);
        return isBlob(id, blob.size, Buffer.concat(chunks)) ? undefined : `restored from ${normalized}, it does not hash to its id`;
      } catch (error) {
        return `restoring it from ${normalized} failed: ${(error as Error).message}`;
      }
    }
    // The outboard is derived from the bytes themselves, so it cannot locate a bad group: the root check names the blob.
    return checkBlobStream(id, blob.size, await this.readOutboard(id), [blob.bytes!]);
  }
}

class MemoryDirectoryService implements DirectoryService {
  constructor(private readonly state: MemoryState) {}

  async has(id: Digest): Promise<boolean> {
    return this.state.directories.has(id);
  }

  async get(id: Digest): Promise<readonly Entry[] | undefined> {
    const directory = this.state.directories.get(id);
    return directory && decodeDirectory(directory.bytes, id);
  }

  async getEncoded(id: Digest): Promise<Uint8Array | undefined> {
    return this.state.directories.get(id)?.bytes;
  }

  async *list(): AsyncIterable<StoredDirectory> {
    for (const [id, directory] of [...this.state.directories]) yield { id, lastUsed: directory.lastUsed };
  }

  async deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<Digest[]> {
    return ids.filter((id) => {
      const directory = this.state.directories.get(id);
      return directory !== undefined && directory.lastUsed < usedBefore && this.state.directories.delete(id);
    });
  }
}

class MemoryPathInfoService implements PathInfoService {
  constructor(private readonly state: MemoryState) {}

  async get(storePath: string): Promise<StorePathInfo | undefined> {
    return this.state.paths.get(storePath);
  }

  async getByHashPart(hashPart: string, storeDir = '/nix/store'): Promise<StorePathInfo | undefined> {
    if (!/^[0-9a-df-np-sv-z]{32}$/.test(hashPart)) return undefined;
    const prefix = `${storeDir}/${hashPart}-`;
    for (const [storePath, info] of this.state.paths) if (storePath.startsWith(prefix)) return info;
    return undefined;
  }

  async *listPaths(): AsyncIterable<string> {
    yield* [...this.state.paths.keys()].sort();
  }

  async unregister(storePaths: readonly string[]): Promise<void> {
    for (const storePath of storePaths) this.state.paths.delete(storePath);
  }
}

class MemoryIngest implements Ingest {
  readonly id = randomBytes(8).toString('hex');
  private readonly blobs = new Map<Digest, Uint8Array>();
  private readonly templates = new Map<Digest, TemplateEntry>();
  private readonly touched = new Set<Digest>();
  private readonly records = new StagedRecords();
  private status: 'open' | 'committed' | 'aborted' = 'open';

  constructor(private readonly state: MemoryState) {
    state.openIngests.set(this.id, state.clock());
  }

  private assertOpen(): void {
    if (this.status !== 'open') throw new CastoreError('INGEST_ABORTED', `ingest ${this.id} is already ${this.status}`);
  }

  blobWriter(expectedSize: number, expectedId?: Digest): BlobWriter {
    this.assertOpen();
    const hint = expectedId === undefined ? undefined : this.templateHints.get(expectedId);
    if (hint) return this.templateWriter(expectedSize, hint, expectedId);
    const chunks: Uint8Array[] = [];
    let size = 0;
    return {
      write: (chunk) => {
        size += chunk.length;
        if (size > expectedSize) throw new CastoreError('BLOB_CORRUPT', `blob is longer than its declared ${expectedSize} bytes`, expectedId ? { objectId: expectedId } : {});
        chunks.push(chunk.slice());
      },
      finish: () => {
        this.assertOpen();
        if (size !== expectedSize) throw new CastoreError('BLOB_CORRUPT', `blob has ${size} bytes, ${expectedSize} were declared`, expectedId ? { objectId: expectedId } : {});
        const bytes = new Uint8Array(Buffer.concat(chunks, size));
        const id = digestFromBytes(blake3(bytes));
        if (expectedId !== undefined && id !== expectedId) throw new CastoreError('BLOB_CORRUPT', `blob bytes hash to ${id}, not ${expectedId}`, { objectId: expectedId });
        if (holds(this.state, id)) this.touched.add(id);
        else this.blobs.set(id, bytes);
        return id;
      },
      discard: () => {
        chunks.length = 0;
      },
    };
  }

  async putBlobBytes(bytes: Uint8Array, expectedId?: Digest): Promise<Digest> {
    const writer = this.blobWriter(bytes.length, expectedId);
    writer.write(bytes);
    return writer.finish();
  }

  templateWriter(expectedSize: number, hashParts: HashPartSet, expectedId?: Digest): BlobWriter {
    this.assertOpen();
    return templateWriter(
      {
        blobWriter: (size) => this.blobWriter(size),
        stageVerifiedTemplate: (entry) => this.stageTemplate(entry),
        heldBlob: (id) => {
          const bytes = this.blobs.get(id) ?? bytesOf(this.state, id);
          const builder = new OutboardBuilder();
          builder.update(bytes);
          return { outboard: builder.finish().outboard, read: (offset, length) => bytes.subarray(offset, offset + length) };
        },
      },
      expectedSize,
      hashParts,
      expectedId,
    );
  }

  private templateHints: ReadonlyMap<Digest, HashPartSet> = new Map();

  expectTemplates(hints: ReadonlyMap<Digest, HashPartSet>): void {
    this.templateHints = hints;
  }

  async putTemplate(id: Digest, size: number, normalized: Digest, record: Uint8Array, onRestored?: (chunk: Uint8Array) => void): Promise<void> {
    this.assertOpen();
    if (holds(this.state, id) || this.blobs.has(id) || this.templates.has(id)) {
      if (holds(this.state, id)) this.touched.add(id);
      return;
    }
    const staged = this.blobs.get(normalized);
    if (!staged && !holds(this.state, normalized)) throw new CastoreError('BLOB_NOT_FOUND', `template ${id}: its normalized blob ${normalized} is neither in the store nor in this ingest`, { objectId: normalized });
    const read = staged
      ? async function* (offset: number, length: number): AsyncGenerator<Uint8Array> {
          yield staged.subarray(offset, offset + length);
        }
      : (offset: number, length: number) => readRange(this.state, normalized, offset, length);
    const entry = await verifyTemplate(id, size, { id: normalized, size: staged ? staged.length : this.state.blobs.get(normalized)!.size }, record, read, onRestored);
    this.assertOpen();
    if (!staged) this.touched.add(normalized);
    this.stageTemplate(entry);
  }

  private stageTemplate(entry: TemplateEntry): void {
    if (holds(this.state, entry.id)) this.touched.add(entry.id);
    else if (!this.blobs.has(entry.id)) this.templates.set(entry.id, entry);
  }

  putDirectory(entries: readonly Entry[]): DirectoryNode {
    this.assertOpen();
    return this.records.putDirectory(entries);
  }

  registerStorePath(info: StorePathInfo): void {
    this.assertOpen();
    this.records.registerStorePath(info);
  }

  commit(): void {
    this.assertOpen();
    for (const id of [...this.touched, ...[...this.templates.values()].map((entry) => entry.normalized)]) {
      if (!holds(this.state, id) && !this.blobs.has(id)) {
        this.abort();
        throw new CastoreError('GC_CONFLICT', `blob ${id} was collected while ingest ${this.id} used it; retry the ingest`, { objectId: id });
      }
    }
    const now = this.state.clock();
    // A plain copy replaces a template (it needs nothing else to be read).
    for (const [id, bytes] of this.blobs) this.state.blobs.set(id, { size: bytes.length, bytes: this.state.blobs.get(id)?.bytes ?? bytes, lastUsed: now });
    for (const [id, entry] of this.templates) {
      if (this.state.blobs.get(id)?.bytes) continue;
      const decoded = decodeTemplateRecord(entry.record, entry.size);
      this.state.blobs.set(id, { size: entry.size, lastUsed: now, template: { normalized: entry.normalized, record: entry.record, decoded } });
    }
    for (const id of this.touched) this.state.blobs.get(id)!.lastUsed = now;
    for (const [id, bytes] of this.records.directories) this.state.directories.set(id, { bytes, lastUsed: now });
    for (const info of this.records.storePaths) this.state.paths.set(info.storePath, info);
    this.status = 'committed';
    this.state.openIngests.delete(this.id);
  }

  abort(): void {
    if (this.status !== 'open') return;
    this.status = 'aborted';
    this.state.openIngests.delete(this.id);
  }
}

export interface MemoryCastoreOptions {
  /** The clock of `lastUsed` stamps (default Date.now). */
  clock?: Clock;
}

export class MemoryCastore implements CastoreServices {
  readonly clock: Clock;
  readonly blobs: MemoryBlobService;
  readonly directories: MemoryDirectoryService;
  readonly pathInfo: MemoryPathInfoService;
  readonly maintenance: StoreMaintenance;
  private readonly state: MemoryState;

  constructor(options: MemoryCastoreOptions = {}) {
    this.clock = options.clock ?? Date.now;
    this.state = { blobs: new Map(), directories: new Map(), paths: new Map(), openIngests: new Map(), clock: this.clock };
    this.blobs = new MemoryBlobService(this.state);
    this.directories = new MemoryDirectoryService(this.state);
    this.pathInfo = new MemoryPathInfoService(this.state);
    const openIngests = this.state.openIngests;
    this.maintenance = {
      oldestOpenIngest: () => (openIngests.size > 0 ? Math.min(...openIngests.values()) : undefined),
      // Nothing outlives a crash here, and nothing is kept in containers.
      cleanStaleWrites: (): StaleWrites => ({ writers: 0, tempFiles: 0, containerFiles: 0, bytes: 0 }),
      compact: () => ({ removed: 0, compacted: 0 }),
    };
  }

  beginIngest(): Ingest {
    return new MemoryIngest(this.state);
  }

  close(): void {
    for (const map of [this.state.blobs, this.state.directories, this.state.paths, this.state.openIngests]) map.clear();
  }
}
