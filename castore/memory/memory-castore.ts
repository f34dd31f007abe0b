/**
 * The memory backend (`memory:`): blobs, directories and the registry in
 * maps, gone with the process. For tests, and for what needs a castore
 * without a disk (a relay's cache in front of a remote, later). It keeps
 * every contract of the services (the conformance suite runs on it); it
 * keeps no outboards (it derives one when asked) and writes nothing down.
 */
import { randomBytes } from 'node:crypto';
import { checkBlobStream } from '../blob-check.js';
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

interface Stored {
  bytes: Uint8Array;
  lastUsed: number;
}

/** The maps every part of one memory castore shares. */
interface MemoryState {
  readonly blobs: Map<Digest, Stored>;
  readonly directories: Map<Digest, Stored>;
  readonly paths: Map<string, StorePathInfo>;
  /** Open ingests and when each began: GC keeps what they may reference. */
  readonly openIngests: Map<string, number>;
  readonly clock: Clock;
}

const notFound = (id: Digest) => new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not in the store`, { objectId: id });

class MemoryBlobService implements BlobService {
  constructor(private readonly state: MemoryState) {}

  async stat(id: Digest): Promise<BlobStat | undefined> {
    const blob = this.state.blobs.get(id);
    return blob && { size: blob.bytes.length };
  }

  async missing(ids: readonly Digest[]): Promise<Digest[]> {
    return ids.filter((id) => !this.state.blobs.has(id));
  }

  async *read(id: Digest, range: ByteRange = {}): AsyncIterable<Uint8Array> {
    const blob = this.state.blobs.get(id);
    if (!blob) throw notFound(id);
    const size = blob.bytes.length;
    const offset = range.offset ?? 0;
    const length = range.length ?? size - offset;
    if (offset < 0 || length < 0 || offset + length > size) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `range ${offset}+${length} is outside blob ${id} of ${size} bytes`, { objectId: id });
    }
    if (length > 0) yield blob.bytes.subarray(offset, offset + length);
  }

  async readOutboard(id: Digest): Promise<Uint8Array> {
    const blob = this.state.blobs.get(id);
    if (!blob) throw notFound(id);
    if (blob.bytes.length <= GROUP_SIZE) return new Uint8Array(0);
    const builder = new OutboardBuilder();
    builder.update(blob.bytes);
    return builder.finish().outboard;
  }

  async *list(): AsyncIterable<StoredBlob> {
    for (const [id, blob] of [...this.state.blobs]) yield { id, size: blob.bytes.length, lastUsed: blob.lastUsed };
  }

  async deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<StoredBlob[]> {
    const deleted: StoredBlob[] = [];
    for (const id of ids) {
      const blob = this.state.blobs.get(id);
      if (!blob || blob.lastUsed >= usedBefore) continue;
      this.state.blobs.delete(id);
      deleted.push({ id, size: blob.bytes.length, lastUsed: blob.lastUsed });
    }
    return deleted;
  }

  async scrub(id: Digest): Promise<string | undefined> {
    const blob = this.state.blobs.get(id);
    if (!blob) return 'it is not in the store';
    // The outboard is derived from the bytes themselves, so it cannot locate a bad group: the root check names the blob.
    return checkBlobStream(id, blob.bytes.length, await this.readOutboard(id), [blob.bytes]);
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
        if (this.state.blobs.has(id)) this.touched.add(id);
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
    for (const id of this.touched) {
      if (!this.state.blobs.has(id) && !this.blobs.has(id)) {
        this.abort();
        throw new CastoreError('GC_CONFLICT', `blob ${id} was collected while ingest ${this.id} used it; retry the ingest`, { objectId: id });
      }
    }
    const now = this.state.clock();
    for (const [id, bytes] of this.blobs) this.state.blobs.set(id, { bytes: this.state.blobs.get(id)?.bytes ?? bytes, lastUsed: now });
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
