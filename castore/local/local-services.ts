/**
 * The local backend seen through the service interfaces: thin async
 * adapters over LocalCastore's synchronous reads, plus what GC and fsck
 * need (listing, conditional deletion, scrubbing), which only this backend
 * runs SQL for.
 */
import { createReadStream, existsSync, readFileSync, rmSync } from 'node:fs';
import { checkBlobStream, isBlob } from '../blob-check.js';
import { GROUP_SIZE } from '../blake3/index.js';
import type { Digest, Entry } from '../node.js';
import type { BlobService, BlobStat, ByteRange, StoredBlob } from '../services/blob-service.js';
import type { BlobTemplate, BlobTemplateReader } from '../services/blob-templates.js';
import type { StoreMaintenance, StaleWrites } from '../services/castore-services.js';
import type { DirectoryService, StoredDirectory } from '../services/directory-service.js';
import type { PathInfoService } from '../services/path-info-service.js';
import type { StorePathInfo } from '../store-path-info.js';
import { blobDataPath } from './blob-files.js';
import { cleanStaleIngests, findStaleIngestFiles, oldestIngestStart } from './ingest-registry.js';
import type { LocalContext } from './local-context.js';
import { maintainPacks } from './pack-maintenance.js';

/** The synchronous reads of a LocalCastore that the adapters wrap. */
export interface LocalReads {
  statBlob(id: Digest): BlobStat | undefined;
  missingBlobs(ids: readonly Digest[]): Digest[];
  readBlob(id: Digest, range?: ByteRange): AsyncGenerator<Uint8Array>;
  readOutboard(id: Digest): Uint8Array;
  hasDirectory(id: Digest): boolean;
  readDirectory(id: Digest): Entry[];
  templateOf(id: Digest): BlobTemplate | undefined;
  readDirectoryBytes(id: Digest): Uint8Array;
  getStorePath(storePath: string): StorePathInfo | undefined;
  getStorePathByHashPart(hashPart: string, storeDir?: string): StorePathInfo | undefined;
}

/** Rows are read this many at a time by `list` (a closure has tens of thousands of blobs). */
const LIST_PAGE = 10_000;

export class LocalBlobService implements BlobService, BlobTemplateReader {
  constructor(
    private readonly context: LocalContext,
    private readonly reads: LocalReads,
  ) {}

  async stat(id: Digest): Promise<BlobStat | undefined> {
    const stat = this.reads.statBlob(id);
    return stat && { size: stat.size };
  }

  async missing(ids: readonly Digest[]): Promise<Digest[]> {
    return this.reads.missingBlobs(ids);
  }

  read(id: Digest, range?: ByteRange): AsyncIterable<Uint8Array> {
    return this.reads.readBlob(id, range);
  }

  async readOutboard(id: Digest): Promise<Uint8Array> {
    return this.reads.readOutboard(id);
  }

  /** BlobTemplateReader: the templates among `ids` as stored. */
  async templates(ids: readonly Digest[]): Promise<Map<Digest, BlobTemplate>> {
    const found = new Map<Digest, BlobTemplate>();
    for (const id of ids) {
      const template = this.reads.templateOf(id);
      if (template) found.set(id, template);
    }
    return found;
  }

  async *list(): AsyncIterable<StoredBlob> {
    const page = this.context.db.prepare<[string, number], StoredBlob & { template: Digest | null }>(
      'SELECT id, size, last_used AS lastUsed, template FROM blobs WHERE id > ? ORDER BY id LIMIT ?',
    );
    for (let after = ''; ; ) {
      const rows = page.all(after, LIST_PAGE);
      for (const { template, ...blob } of rows) yield template === null ? blob : { ...blob, template };
      if (rows.length < LIST_PAGE) return;
      after = rows[rows.length - 1]!.id;
    }
  }

  /**
   * In one write transaction, like every ingest commit. A blob's file of its
   * own is removed inside it: a commit renames a new copy into place in its
   * own transaction, so it never lands between our check and our removal.
   * An adopted blob's store file belongs to its owner: only the row goes.
   */
  async deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<StoredBlob[]> {
    const { db, dataDir } = this.context;
    // A blob that a template row names as its normalized blob stays (re-checked in the transaction, like last use).
    const select = db.prepare<[string, number], { size: number; lastUsed: number; pack: string | null; storeFile: string | null; template: Digest | null }>(
      `SELECT size, last_used AS lastUsed, pack, store_file AS storeFile, template FROM blobs b
       WHERE id = ? AND last_used < ? AND NOT EXISTS (SELECT 1 FROM blobs t WHERE t.template = b.id)`,
    );
    const isTemplate = db.prepare<[string], number>('SELECT 1 FROM blobs WHERE id = ? AND template IS NOT NULL').pluck();
    const remove = db.prepare<[string]>('DELETE FROM blobs WHERE id = ?');
    const deleted: StoredBlob[] = [];
    db.transaction(() => {
      // Templates first: a normalized blob only they named goes in the same call.
      const templates = new Set(ids.filter((id) => isTemplate.get(id) !== undefined));
      const others = ids.filter((id) => !templates.has(id));
      for (const id of [...templates, ...others]) {
        const row = select.get(id, usedBefore);
        if (!row) continue;
        remove.run(id);
        if (row.pack === null && row.storeFile === null && row.template === null) rmSync(blobDataPath(dataDir, id), { force: true });
        deleted.push({ id, size: row.size, lastUsed: row.lastUsed });
      }
    }).immediate();
    return deleted;
  }

  /**
   * Checks the bytes where they are — a pack, a file of its own, an adopted
   * store file (left alone), or, for a templated blob, restored from its
   * normalized blob — without forgetting anything.
   */
  async scrub(id: Digest): Promise<string | undefined> {
    const row = this.context.db
      .prepare<[string], { size: number; pack: string | null; packOffset: number | null; outboard: Buffer | null; storeFile: string | null; template: Digest | null }>(
        'SELECT size, pack, pack_offset AS packOffset, outboard, store_file AS storeFile, template FROM blobs WHERE id = ?',
      )
      .get(id);
    if (!row) return 'it is not in the store';
    const outboard = row.outboard ? new Uint8Array(row.outboard) : new Uint8Array(0);
    if (row.template !== null) {
      if (this.reads.statBlob(row.template) === undefined) return `it is a template over ${row.template}, which is missing`;
      try {
        // One restored whole (up to BUFFERED_MAX bytes) keeps no outboard: hashed whole, as a packed blob is.
        if (!row.outboard && row.size > GROUP_SIZE) {
          const chunks: Uint8Array[] = [];
          for await (const chunk of this.reads.readBlob(id)) chunks.push(chunk);
          return isBlob(id, row.size, Buffer.concat(chunks)) ? undefined : `restored from ${row.template}, it does not hash to its id`;
        }
        // Its outboard was computed from the real bytes at ingest: a bad restore is located by group.
        const problem = await checkBlobStream(id, row.size, outboard, this.reads.readBlob(id));
        return problem && `restored from ${row.template}: ${problem}`;
      } catch (error) {
        return `restoring it from ${row.template} failed: ${(error as Error).message}`;
      }
    }
    if (row.storeFile !== null) {
      // (A blob that was packed has no outboard: at most PACK_MAX bytes, hashed whole.)
      if (!existsSync(row.storeFile)) return `its store file ${row.storeFile} is missing`;
      if (row.outboard) return checkBlobStream(id, row.size, outboard, createReadStream(row.storeFile, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>);
      return isBlob(id, row.size, readFileSync(row.storeFile)) ? undefined : `its store file ${row.storeFile} does not hash to its id`;
    }
    if (row.pack !== null) {
      let data: Buffer;
      try {
        data = this.context.packs.read(row.pack, row.packOffset!, row.size, id);
      } catch (error) {
        return (error as Error).message;
      }
      return isBlob(id, row.size, data) ? undefined : `its bytes in pack ${row.pack} do not hash to its id`;
    }
    const dataPath = blobDataPath(this.context.dataDir, id);
    if (!existsSync(dataPath)) return `data file ${dataPath} is missing`;
    return checkBlobStream(id, row.size, outboard, createReadStream(dataPath, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>);
  }
}

export class LocalDirectoryService implements DirectoryService {
  constructor(
    private readonly context: LocalContext,
    private readonly reads: LocalReads,
  ) {}

  async has(id: Digest): Promise<boolean> {
    return this.reads.hasDirectory(id);
  }

  async get(id: Digest): Promise<readonly Entry[] | undefined> {
    return this.reads.hasDirectory(id) ? this.reads.readDirectory(id) : undefined;
  }

  async getEncoded(id: Digest): Promise<Uint8Array | undefined> {
    return this.reads.hasDirectory(id) ? this.reads.readDirectoryBytes(id) : undefined;
  }

  async *list(): AsyncIterable<StoredDirectory> {
    const page = this.context.db.prepare<[string, number], StoredDirectory>('SELECT id, last_used AS lastUsed FROM directories WHERE id > ? ORDER BY id LIMIT ?');
    for (let after = ''; ; ) {
      const rows = page.all(after, LIST_PAGE);
      yield* rows;
      if (rows.length < LIST_PAGE) return;
      after = rows[rows.length - 1]!.id;
    }
  }

  async deleteUnused(ids: readonly Digest[], usedBefore: number): Promise<Digest[]> {
    const { db } = this.context;
    const remove = db.prepare<[string, number]>('DELETE FROM directories WHERE id = ? AND last_used < ?');
    const deleted: Digest[] = [];
    db.transaction(() => {
      for (const id of ids) if (remove.run(id, usedBefore).changes > 0) deleted.push(id);
    }).immediate();
    return deleted;
  }
}

export class LocalPathInfoService implements PathInfoService {
  constructor(
    private readonly context: LocalContext,
    private readonly reads: LocalReads,
  ) {}

  async get(storePath: string): Promise<StorePathInfo | undefined> {
    return this.reads.getStorePath(storePath);
  }

  async getByHashPart(hashPart: string, storeDir?: string): Promise<StorePathInfo | undefined> {
    return this.reads.getStorePathByHashPart(hashPart, storeDir);
  }

  async *listPaths(): AsyncIterable<string> {
    yield* this.context.db.prepare<[], string>('SELECT path FROM store_paths ORDER BY path').pluck().all();
  }

  async unregister(storePaths: readonly string[]): Promise<void> {
    const { db } = this.context;
    const remove = db.prepare<[string]>('DELETE FROM store_paths WHERE path = ?');
    db.transaction(() => {
      for (const storePath of storePaths) remove.run(storePath);
    }).immediate();
  }
}

export class LocalMaintenance implements StoreMaintenance {
  constructor(private readonly context: LocalContext) {}

  oldestOpenIngest(): number | undefined {
    return oldestIngestStart(this.context);
  }

  cleanStaleWrites(dryRun: boolean): StaleWrites {
    const stale = dryRun ? findStaleIngestFiles(this.context) : cleanStaleIngests(this.context);
    return { writers: stale.ingests.length, tempFiles: stale.tempFiles.length, containerFiles: stale.packFiles.length, bytes: stale.bytes };
  }

  compact(): { removed: number; compacted: number } {
    return maintainPacks(this.context);
  }
}
