/**
 * The local backend (`local:///path`): a castore on local disk — blobs,
 * directories and the store path registry in one data directory, indexed
 * by SQLite (database.ts). Readers only ever see committed objects; writers
 * go through a LocalIngest, whose objects become visible together in one
 * commit, or not at all.
 *
 * Generic code takes its services (`blobs`, `directories`, `pathInfo`);
 * the coordinator's data plane and the agent also use the synchronous
 * reads here, which serve a closure's many small files without a promise
 * each (bench/materialize.bench.ts).
 */
import { closeSync, createReadStream, openSync, readSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { BlobTemplate } from '../services/blob-templates.js';
import { CastoreError } from '../errors.js';
import { decodeDirectory } from '../directory.js';
import { digestFromBytes, digestToBytes, type Digest, type Entry } from '../node.js';
import { blake3, blake3Hasher, GROUP_SIZE, OutboardBuilder, verifyOutboard, type VerifiedOutboard } from '../blake3/index.js';
import { treeWithSitesRehashed, type RestoreSource } from '../services/template-writer.js';
import type { BlobStat } from '../services/blob-service.js';
import { walkClosure, withIngest, type CastoreServices, type Clock } from '../services/castore-services.js';
import { StorePathInfoSchema, type StorePathInfo } from '../store-path-info.js';
import { decodeTemplateRecord, HASH_PART_LENGTH, placeholdersAt, REFERENCE_PLACEHOLDER, restoreReferences, restoreTemplateRange, type TemplateRecord } from '../references/index.js';
import { blobDataPath } from './blob-files.js';
import { openCastoreDatabase, type CastoreDatabase } from './database.js';
import { cleanStaleIngests } from './ingest-registry.js';
import type { LocalContext } from './local-context.js';
import { LocalIngest } from './local-ingest.js';
import { LocalBlobService, LocalDirectoryService, LocalMaintenance, LocalPathInfoService, type LocalReads } from './local-services.js';
import { maintainPacks } from './pack-maintenance.js';
import { PACK_MAX, PackReader } from './pack-files.js';


/** No blob this small or smaller has a file of its own (packs took up to 256 KiB before PACK_MAX was raised). */
const OWN_FILE_MIN = 256 * 1024;
/** A restore reads its normalized blob whole up to this size (LocalCastore.restoreSource); a larger one is streamed. */
const RESTORE_WHOLE_MAX = 256 * 1024 * 1024;
/** File blobs up to this size are read in one synchronous call. */
const SYNC_READ_MAX = 4 * 1024 * 1024;

/**
 * `readBlobBatch` reads adjacent blobs together up to this many bytes:
 * larger fresh buffers cost more in page faults than the system calls they
 * save (reading a cached pack: 0.9–1.6 GB/s in new 4 MiB buffers, 5–6 GB/s
 * in new 256 KiB ones).
 */
const PACKED_RUN_MAX = 256 * 1024;

/** Where a blob's bytes are: a pack, a file of its own, an adopted store file, or (templated) its normalized blob and record. */
interface BlobLocation {
  size: number;
  pack: string | null;
  packOffset: number | null;
  storeFile: string | null;
  template: Digest | null;
  templateRecord: Buffer | null;
}

/**
 * When a blob's row can be read (SQL over `b`): its own bytes or adopted
 * file, or a template whose normalized blob has a row or can be derived
 * from an adopted file over it.
 */
const READABLE_ROW = `b.store_file IS NOT NULL OR b.template IS NULL
  OR EXISTS (SELECT 1 FROM blobs n WHERE n.id = b.template)
  OR EXISTS (SELECT 1 FROM blobs s WHERE s.template = b.template AND s.store_file IS NOT NULL)`;

/**
 * Whether `file` (`size` bytes) with the placeholder at `template`'s sites
 * hashes to its normalized blob. Read 4 MiB at a time (an agent checks its
 * large fetched files' claims here too, after the deployment is active).
 */
function fileNormalizesTo(file: string, size: number, template: BlobTemplate): boolean {
  let fd: number | undefined;
  try {
    const { sites } = decodeTemplateRecord(template.record, size);
    fd = openSync(file, 'r');
    if (size <= NORMALIZE_CHUNK) {
      const bytes = Buffer.allocUnsafe(size);
      if (readFully(fd, bytes, 0) !== size || readSync(fd, Buffer.allocUnsafe(1), 0, 1, size) !== 0) return false;
      return digestFromBytes(blake3(placeholdersAt(bytes, sites))) === template.normalized;
    }
    const hasher = blake3Hasher();
    const chunk = Buffer.allocUnsafe(NORMALIZE_CHUNK);
    let site = 0;
    for (let offset = 0; offset < size; offset += NORMALIZE_CHUNK) {
      const length = Math.min(NORMALIZE_CHUNK, size - offset);
      const bytes = chunk.subarray(0, length);
      if (readFully(fd, bytes, offset) !== length) return false;
      // Sites are sorted: those before this chunk's end, and the one it ends inside of, which the next chunk sees too.
      while (site < sites.length && sites[site]!.offset + HASH_PART_LENGTH <= offset) site++;
      let last = site;
      while (last < sites.length && sites[last]!.offset < offset + length) last++;
      hasher.update(placeholdersAt(bytes, sites.slice(site, last), offset));
    }
    if (readSync(fd, Buffer.allocUnsafe(1), 0, 1, size) !== 0) return false;
    return digestFromBytes(hasher.digest()) === template.normalized;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** fileNormalizesTo reads files this large or larger in pieces of this size. */
const NORMALIZE_CHUNK = 4 * 1024 * 1024;

/** Templates nest at most this deep (a normalized blob that is itself a template: only contrived files do that). */
const TEMPLATE_DEPTH_MAX = 4;

export interface LocalBlobStat extends BlobStat {
  /** In a pack file (small blobs) rather than a file of its own. */
  packed: boolean;
}

interface StorePathRow {
  path: string;
  nar_hash: string;
  nar_size: number;
  refs: string;
  deriver: string | null;
  ca: string | null;
  signatures: string;
  root: string;
}

export interface LocalCastoreOptions {
  /**
   * Leave what crashed ingests left for GC instead of removing it on open
   * (`gc --dry-run`, which must change nothing and report it).
   */
  keepStaleFiles?: boolean;
  /** The clock of `lastUsed` stamps and ingest starts (default Date.now): tests step it instead of sleeping. */
  clock?: Clock;
}

/** What `ferry castore stat` shows. */
export interface LocalCastoreStats {
  blobs: number;
  packedBlobs: number;
  /** Blobs read from materialized store files (adoptStoreFiles). */
  adoptedBlobs: number;
  /** The bytes blobs take: their own bytes, or for a templated blob its record (its normalized blob is a blob too). */
  blobBytes: number;
  packedBlobBytes: number;
  /** Blobs stored as a normalized blob plus a template (docs/castore.md, "Reference-aware blobs"), */
  templatedBlobs: number;
  /** and the bytes they restore to. */
  templatedBlobBytes: number;
  /** Pack files published (live or awaiting compaction). */
  packFiles: number;
  directories: number;
  /** The bytes of their canonical encodings. */
  directoryBytes: number;
  storePaths: number;
  registeredNarBytes: number;
  /** Ingests recorded as running, in any process (or crashed and not yet cleaned). */
  openIngests: number;
}

export class LocalCastore implements CastoreServices, LocalReads {
  private readonly db: CastoreDatabase;
  private readonly packs: PackReader;
  private readonly context: LocalContext;
  private readonly statements;
  readonly clock: Clock;
  readonly blobs: LocalBlobService;
  readonly directories: LocalDirectoryService;
  readonly pathInfo: LocalPathInfoService;
  readonly maintenance: LocalMaintenance;

  private constructor(
    readonly dataDir: string,
    clock: Clock,
  ) {
    this.db = openCastoreDatabase(dataDir);
    this.packs = new PackReader(dataDir);
    this.clock = clock;
    this.context = { dataDir, db: this.db, packs: this.packs, clock };
    this.blobs = new LocalBlobService(this.context, this);
    this.directories = new LocalDirectoryService(this.context, this);
    this.pathInfo = new LocalPathInfoService(this.context, this);
    this.maintenance = new LocalMaintenance(this.context);
    this.statements = {
      // A templated blob is there when it is adopted or its normalized blob is there; a normalized blob
      // without a row of its own is there when an adopted file is a template over it (readDerivedNormalized).
      presentBlobs: this.db
        .prepare<[string], string>(
          `SELECT j.value FROM json_each(?) j
           WHERE EXISTS (SELECT 1 FROM blobs b WHERE b.id = j.value AND (${READABLE_ROW}))
              OR EXISTS (SELECT 1 FROM blobs s WHERE s.template = j.value AND s.store_file IS NOT NULL)`,
        )
        .pluck(),
      derivationSource: this.db.prepare<[string], { id: Digest; size: number; storeFile: string; templateRecord: Buffer }>(
        'SELECT id, size, store_file AS storeFile, template_record AS templateRecord FROM blobs WHERE template = ? AND store_file IS NOT NULL LIMIT 1',
      ),
      batchLocations: this.db.prepare<[string], BlobLocation & { id: Digest; offset: number | null }>(
        'SELECT b.id, b.size, b.pack, b.pack_offset AS offset, b.pack_offset AS packOffset, b.store_file AS storeFile, b.template, b.template_record AS templateRecord FROM json_each(?) j JOIN blobs b ON b.id = j.value',
      ),
      blobStat: this.db.prepare<[string], { size: number; packed: number }>(`SELECT size, pack IS NOT NULL AS packed FROM blobs b WHERE id = ? AND (${READABLE_ROW})`),
      blobLocation: this.db.prepare<[string], BlobLocation>(
        'SELECT size, pack, pack_offset AS packOffset, store_file AS storeFile, template, template_record AS templateRecord FROM blobs WHERE id = ?',
      ),
      templateSizes: this.db.prepare<[], number>('SELECT DISTINCT size FROM blobs WHERE template IS NOT NULL').pluck(),
      forgetStoreFile: this.db.prepare<[string, string]>('DELETE FROM blobs WHERE id = ? AND store_file = ?'),
      outboard: this.db.prepare<[string], { outboard: Buffer | null; size: number }>('SELECT outboard, size FROM blobs WHERE id = ?'),
      directory: this.db.prepare<[string], { data: Buffer }>('SELECT data FROM directories WHERE id = ?'),
      storePath: this.db.prepare<[string], StorePathRow>('SELECT * FROM store_paths WHERE path = ?'),
      storePaths: this.db.prepare<[], StorePathRow>('SELECT * FROM store_paths ORDER BY path'),
      // Paths `<prefix>-<name>` sort strictly between `<prefix>-` and `<prefix>.` ('.' follows '-'): an index range scan.
      storePathByPrefix: this.db.prepare<[string, string], StorePathRow>('SELECT * FROM store_paths WHERE path > ? AND path < ? ORDER BY path LIMIT 1'),
    };
  }

  /**
   * Opens the castore in `dataDir`, creating it if needed. Unless
   * `keepStaleFiles`, first removes what ingests that crashed (killed, out
   * of power) left: their temp files and unpublished packs, which nothing
   * else would remove before the next GC (ingest-registry.ts; only files no
   * live ingest of any process owns). Best effort: a failure to remove them
   * (a read-only mount) does not refuse the open, and GC reports what is
   * left. Refuses a castore of another format (UNSUPPORTED_FORMAT).
   */
  static open(dataDir: string, options: LocalCastoreOptions = {}): LocalCastore {
    const store = new LocalCastore(dataDir, options.clock ?? Date.now);
    if (!options.keepStaleFiles) {
      try {
        cleanStaleIngests(store.context, { orphanPacks: false });
      } catch {
        // Left for GC (see above).
      }
    }
    return store;
  }

  close(): void {
    this.packs.close();
    this.db.close();
  }

  statBlob(id: Digest): LocalBlobStat | undefined {
    const row = this.statements.blobStat.get(id);
    if (row) return { size: row.size, packed: row.packed === 1 };
    const source = this.statements.derivationSource.get(id);
    return source && { size: source.size, packed: false };
  }

  /**
   * A normalized blob that no row holds, derived from an adopted file kept
   * as a template over it (adoptStoreFiles): the file's bytes, verified
   * against its own id, with the placeholder written at its template's
   * sites — exactly the normalized blob, since restoring it gave the file.
   * Undefined when no adopted file is a template over `id`.
   */
  private readDerivedNormalized(id: Digest): Uint8Array | undefined {
    const source = this.statements.derivationSource.get(id);
    if (!source) return undefined;
    const bytes = this.readStoreFile(source.id, source.size, source.storeFile);
    const record = this.derivationRecord(source, id);
    return placeholdersAt(bytes, record.sites);
  }

  /** The template record of the adopted file `source` that normalized blob `id` derives from; a damaged one is CORRUPT_TEMPLATE. */
  private derivationRecord(source: { id: Digest; size: number; templateRecord: Buffer }, id: Digest): TemplateRecord {
    try {
      return decodeTemplateRecord(new Uint8Array(source.templateRecord), source.size);
    } catch (error) {
      throw corruptTemplate(source.id, id, error);
    }
  }

  /**
   * Normalized blob `id`'s bytes, whole, for restoring a template over it
   * (LocalIngest.putTemplate, services/template-writer.ts verifyRestored):
   * verified now by one native hash of what was read — its own bytes
   * against `id`, or the adopted file it is derived from against that
   * file's id (a changed file is forgotten and refused, as on any read) —
   * with that file's or blob's stored tree when it has one. Undefined for
   * a blob not here, kept as a template itself, or over RESTORE_WHOLE_MAX
   * bytes: the caller streams those.
   */
  restoreSource(id: Digest): RestoreSource | undefined {
    const row = this.statements.blobLocation.get(id);
    if (row) {
      if ((row.template !== null && row.storeFile === null) || row.size > RESTORE_WHOLE_MAX) return undefined;
      if (row.storeFile !== null) return { bytes: this.readStoreFile(id, row.size, row.storeFile), tree: this.storedTree(id, row.size), changed: [] };
      const bytes = row.pack !== null ? this.packs.read(row.pack, row.packOffset!, row.size, id) : this.readFileBlob(id, 0, row.size);
      if (digestFromBytes(blake3(bytes)) !== id) throw new CastoreError('BLOB_CORRUPT', `blob ${id} does not hash to its id (run fsck)`, { objectId: id });
      return { bytes, tree: this.storedTree(id, row.size), changed: [] };
    }
    const source = this.statements.derivationSource.get(id);
    if (!source || source.size > RESTORE_WHOLE_MAX) return undefined;
    const bytes = this.readStoreFile(source.id, source.size, source.storeFile);
    const record = this.derivationRecord(source, id);
    // The buffer is this read's own: the placeholder is written into it.
    for (const { offset } of record.sites) bytes.set(REFERENCE_PLACEHOLDER, offset);
    return { bytes, tree: this.storedTree(source.id, source.size), changed: record.sites };
  }

  /** A blob's stored outboard as a tree checked against its id; undefined when none is stored (or it does not check). */
  private storedTree(id: Digest, size: number): VerifiedOutboard | undefined {
    if (size <= GROUP_SIZE) return undefined;
    const outboard = this.statements.outboard.get(id)?.outboard;
    if (!outboard) return undefined;
    try {
      return verifyOutboard(digestToBytes(id), size, outboard, id);
    } catch {
      return undefined;
    }
  }

  hasBlob(id: Digest): boolean {
    return this.statBlob(id) !== undefined;
  }

  /**
   * How blob `id` is kept when it is a template (docs/castore.md,
   * "Reference-aware blobs"): its normalized blob and its record as
   * stored; undefined for a blob kept whole or one the store lacks.
   */
  templateOf(id: Digest): BlobTemplate | undefined {
    const row = this.statements.blobLocation.get(id);
    return row?.template != null && row.templateRecord != null ? { normalized: row.template, record: new Uint8Array(row.templateRecord) } : undefined;
  }

  /**
   * The sizes of the normalized blobs the templates here are over (a
   * normalized blob has its file's size): a copy asks the source about the
   * templates of wanted blobs of these sizes only, the others cannot be
   * restored here. A normalized blob held only as an ordinary blob, with no
   * template over it, is not counted: such a blob is then copied, not
   * restored.
   */
  normalizedSizes(): ReadonlySet<number> {
    return new Set(this.statements.templateSizes.all());
  }

  /** The ids among `ids` that the store lacks, in their order (one query per 5,000: closures have many files). */
  missingBlobs(ids: readonly Digest[]): Digest[] {
    const present = new Set<string>();
    for (let start = 0; start < ids.length; start += 5000) {
      const rows = this.statements.presentBlobs.all(JSON.stringify(ids.slice(start, start + 5000)));
      for (const id of rows) present.add(id);
    }
    return ids.filter((id) => !present.has(id));
  }

  /**
   * Many blobs' bytes back to back, in the order asked for: their sizes at
   * once, then the bytes lazily. Blobs that lie next to each other in a
   * pack (a closure ingested in one go does) are read with one system call
   * per run of up to 256 KiB; a blob in a file of its own is read whole.
   * Refuses, before reading anything: unknown ids (BLOB_NOT_FOUND) and a
   * total over `maxBytes` (BATCH_TOO_LARGE).
   */
  readBlobBatch(ids: readonly Digest[], maxBytes = Number.MAX_SAFE_INTEGER): { sizes: number[]; bytes: Iterable<Uint8Array> } {
    const rows = new Map(this.statements.batchLocations.all(JSON.stringify(ids)).map((row) => [row.id, row]));
    let total = 0;
    const located = ids.map((id) => {
      const row = rows.get(id);
      if (!row) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not in the store`, { objectId: id });
      total += row.size;
      return row;
    });
    if (total > maxBytes) throw new CastoreError('BATCH_TOO_LARGE', `${ids.length} blobs of ${total} bytes exceed the limit of ${maxBytes}`);
    const store = this;
    function* runs(): Generator<Uint8Array> {
      for (let index = 0; index < located.length; ) {
        const first = located[index]!;
        if (first.storeFile !== null) {
          yield store.readStoreFile(first.id, first.size, first.storeFile);
          index++;
          continue;
        }
        if (first.template !== null) {
          yield store.readTemplateSync(first.id, first, 0);
          index++;
          continue;
        }
        if (first.pack === null || first.offset === null) {
          yield store.readFileBlob(first.id, 0, first.size);
          index++;
          continue;
        }
        let end = first.offset + first.size;
        let next = index + 1;
        for (; next < located.length; next++) {
          const blob = located[next]!;
          if (blob.pack !== first.pack || blob.offset !== end || end + blob.size - first.offset > PACKED_RUN_MAX) break;
          end += blob.size;
        }
        yield store.packs.read(first.pack, first.offset, end - first.offset, first.id);
        index = next;
      }
    }
    return { sizes: located.map((blob) => blob.size), bytes: runs() };
  }

  /** `length` bytes at `offset` of a blob stored as a file of its own, in one synchronous read. */
  private readFileBlob(id: Digest, offset: number, length: number): Buffer {
    const file = blobDataPath(this.dataDir, id);
    const bytes = Buffer.allocUnsafe(length);
    const fd = openSync(file, 'r');
    try {
      const done = readFully(fd, bytes, offset);
      if (done < length) throw new CastoreError('BLOB_CORRUPT', `blob file ${file} ends before byte ${offset + length}`, { objectId: id, offset: offset + done });
    } finally {
      closeSync(fd);
    }
    return bytes;
  }

  /**
   * The bytes of an adopted blob, from its store file, verified: the file
   * is outside the castore and anyone with root can change or delete it.
   * One that is gone or differs is forgotten (so the next fetch brings the
   * blob again) and refused with BLOB_NOT_FOUND or BLOB_CORRUPT.
   */
  private readStoreFile(id: Digest, size: number, file: string): Buffer {
    let bytes: Buffer | undefined;
    try {
      bytes = this.readWholeFile(file, size);
    } catch {
      bytes = undefined;
    }
    if (bytes && digestFromBytes(blake3(bytes)) === id) return bytes;
    this.statements.forgetStoreFile.run(id, file);
    throw bytes
      ? new CastoreError('BLOB_CORRUPT', `blob ${id} was adopted from ${file}, which has changed since: forgotten, fetch it again`, { objectId: id })
      : new CastoreError('BLOB_NOT_FOUND', `blob ${id} was adopted from ${file}, which is gone or shorter: forgotten, fetch it again`, { objectId: id });
  }

  /** Exactly `size` bytes of `file`; throws if it is shorter or longer. */
  private readWholeFile(file: string, size: number): Buffer {
    const bytes = Buffer.allocUnsafe(size);
    const fd = openSync(file, 'r');
    try {
      if (readFully(fd, bytes, 0) < size) throw new Error(`${file} is shorter than ${size} bytes`);
      if (readSync(fd, Buffer.allocUnsafe(1), 0, 1, size) !== 0) throw new Error(`${file} is longer than ${size} bytes`);
    } finally {
      closeSync(fd);
    }
    return bytes;
  }

  /**
   * The store file an adopted blob is read from, checked now to still hold
   * exactly the blob (an agent hard-links it into a new store path instead
   * of writing the bytes again). Undefined for a blob that is not adopted,
   * or whose file is gone or changed — that one is forgotten, as on a read.
   */
  verifiedStoreFile(id: Digest): string | undefined {
    const row = this.statements.blobLocation.get(id);
    if (!row || row.storeFile === null) return undefined;
    try {
      // Small ones whole through the native hash (a streaming hasher per file costs more than the hashing).
      if (row.size <= SYNC_READ_MAX) this.readStoreFile(id, row.size, row.storeFile);
      else if (!this.storeFileHolds(id, row.size, row.storeFile)) throw new Error(`${row.storeFile} changed`);
      return row.storeFile;
    } catch {
      this.statements.forgetStoreFile.run(id, row.storeFile);
      return undefined;
    }
  }

  /** Whether `file` is exactly `size` bytes hashing to `id`, read 1 MiB at a time. */
  private storeFileHolds(id: Digest, size: number, file: string): boolean {
    const hasher = blake3Hasher();
    const buffer = Buffer.allocUnsafe(1024 * 1024);
    const fd = openSync(file, 'r');
    let total = 0;
    try {
      for (let read; (read = readSync(fd, buffer, 0, buffer.length, total)) > 0; total += read) hasher.update(buffer.subarray(0, read));
    } finally {
      closeSync(fd);
    }
    return total === size && digestFromBytes(hasher.digest()) === id;
  }

  /** Streams an adopted blob from its store file, hashing as it goes; a mismatch at the end forgets it and throws (see readStoreFile). */
  private async *streamStoreFile(id: Digest, size: number, file: string): AsyncGenerator<Uint8Array> {
    const hasher = blake3Hasher();
    let seen = 0;
    try {
      for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        seen += chunk.length;
        if (seen > size) break;
        hasher.update(chunk);
        yield chunk;
      }
    } catch {
      seen = -1;
    }
    if (seen === size && digestFromBytes(hasher.digest()) === id) return;
    this.statements.forgetStoreFile.run(id, file);
    throw new CastoreError('BLOB_CORRUPT', `blob ${id} was adopted from ${file}, which is gone or has changed since: forgotten, fetch it again`, { objectId: id });
  }

  /**
   * Streams a blob's bytes, optionally a range of them. Refuses unknown ids
   * (BLOB_NOT_FOUND) and ranges beyond the end (BLAKE3_BAD_SIZE). Bytes are
   * what the store holds: `fsck` verifies them, receivers verify them again
   * (and an adopted blob's store file is verified here, see readStoreFile).
   */
  async *readBlob(id: Digest, range: { offset?: number; length?: number } = {}): AsyncGenerator<Uint8Array> {
    const row = this.statements.blobLocation.get(id);
    const derived = row ? undefined : this.readDerivedNormalized(id);
    if (!row && !derived) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not in the store`, { objectId: id });
    const size = row ? row.size : derived!.length;
    const offset = range.offset ?? 0;
    const length = range.length ?? size - offset;
    if (offset < 0 || length < 0 || offset + length > size) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `range ${offset}+${length} is outside blob ${id} of ${size} bytes`, { objectId: id });
    }
    if (length === 0) return;
    if (!row) {
      yield derived!.subarray(offset, offset + length);
      return;
    }
    if (row.storeFile !== null) {
      if (row.size <= SYNC_READ_MAX) yield this.readStoreFile(id, row.size, row.storeFile).subarray(offset, offset + length);
      else if (offset === 0 && length === row.size) yield* this.streamStoreFile(id, row.size, row.storeFile);
      else yield this.readStoreFile(id, row.size, row.storeFile).subarray(offset, offset + length);
      return;
    }
    if (row.template !== null) {
      yield* this.readTemplate(id, row, offset, length);
      return;
    }
    if (row.pack !== null) {
      yield this.packs.read(row.pack, row.packOffset! + offset, length, id);
      return;
    }
    if (length <= SYNC_READ_MAX) {
      // One synchronous read beats a stream's open/read/close round trips for the many mid-sized files of a closure.
      yield this.readFileBlob(id, offset, length);
      return;
    }
    const file = blobDataPath(this.dataDir, id);
    yield* createReadStream(file, { start: offset, end: offset + length - 1, highWaterMark: 1024 * 1024 });
  }

  /**
   * Bytes of a templated blob, restored from its normalized blob (read
   * through readBlob, so a nested template works and an adopted one is
   * verified) by range. Refuses (BLOB_CORRUPT, naming the blob) a record
   * that does not decode and normalized bytes that do not restore,
   * (BLOB_NOT_FOUND) a normalized blob that is gone.
   */
  private async *readTemplate(id: Digest, row: BlobLocation, offset: number, length: number, depth = 0): AsyncGenerator<Uint8Array> {
    const normalized = row.template!;
    const record = this.templateRecordOf(id, row, depth);
    const read = (from: number, count: number): AsyncIterable<Uint8Array> => {
      const under = this.statements.blobLocation.get(normalized);
      // No row: derived from an adopted file, if there is one (readBlob refuses otherwise).
      if (!under) return this.readBlob(normalized, { offset: from, length: count });
      if (under.size !== row.size) throw new CastoreError('BLOB_CORRUPT', `blob ${id} of ${row.size} bytes is a template over ${normalized} of ${under.size}`, { objectId: id });
      return under.template !== null && under.storeFile === null ? this.readTemplate(normalized, under, from, count, depth + 1) : this.readBlob(normalized, { offset: from, length: count });
    };
    try {
      yield* restoreTemplateRange(record, offset, length, read);
    } catch (error) {
      throw corruptTemplate(id, normalized, error);
    }
  }

  /** A templated blob's bytes, whole and synchronously (readBlobBatch). */
  private readTemplateSync(id: Digest, row: BlobLocation, depth: number): Uint8Array {
    const normalized = row.template!;
    const record = this.templateRecordOf(id, row, depth);
    const under = this.statements.blobLocation.get(normalized);
    const derived = under ? undefined : this.readDerivedNormalized(normalized);
    if (!under && !derived) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is a template over ${normalized}, which is not in the store`, { objectId: id });
    const underSize = under ? under.size : derived!.length;
    if (underSize !== row.size) throw new CastoreError('BLOB_CORRUPT', `blob ${id} of ${row.size} bytes is a template over ${normalized} of ${underSize}`, { objectId: id });
    let bytes: Uint8Array;
    if (!under) bytes = derived!;
    else if (under.storeFile !== null) bytes = this.readStoreFile(normalized, under.size, under.storeFile);
    else if (under.template !== null) bytes = this.readTemplateSync(normalized, under, depth + 1);
    else if (under.pack !== null) bytes = this.packs.read(under.pack, under.packOffset!, under.size, normalized);
    else bytes = this.readFileBlob(normalized, 0, under.size);
    try {
      return restoreReferences(bytes, record.sites, record.hashParts);
    } catch (error) {
      throw corruptTemplate(id, normalized, error);
    }
  }

  /** The decoded record of a template row; refuses (BLOB_CORRUPT) one that does not decode, or nests too deep. */
  private templateRecordOf(id: Digest, row: BlobLocation, depth: number): TemplateRecord {
    if (depth >= TEMPLATE_DEPTH_MAX) throw new CastoreError('BLOB_CORRUPT', `blob ${id}: templates nest more than ${TEMPLATE_DEPTH_MAX} deep`, { objectId: id });
    try {
      return decodeTemplateRecord(new Uint8Array(row.templateRecord ?? new Uint8Array(0)), row.size);
    } catch (error) {
      throw corruptTemplate(id, row.template!, error);
    }
  }

  /**
   * Bytes [offset, offset + length) of a blob, synchronously: a range of
   * its pack or its file (an adopted or templated blob is read whole, then
   * cut). Refuses what readBlob refuses.
   */
  readBlobRangeSync(id: Digest, offset: number, length: number): Uint8Array {
    const row = this.statements.blobLocation.get(id);
    const derived = row ? undefined : this.readDerivedNormalized(id);
    if (!row && !derived) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not in the store`, { objectId: id });
    const size = row ? row.size : derived!.length;
    if (offset < 0 || length < 0 || offset + length > size) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `range ${offset}+${length} is outside blob ${id} of ${size} bytes`, { objectId: id });
    }
    if (!row) return derived!.subarray(offset, offset + length);
    if (row.storeFile !== null) return this.readStoreFile(id, row.size, row.storeFile).subarray(offset, offset + length);
    if (row.template !== null) return this.readTemplateSync(id, row, 0).subarray(offset, offset + length);
    if (row.pack !== null) return this.packs.read(row.pack, row.packOffset! + offset, length, id);
    return this.readFileBlob(id, offset, length);
  }

  /** Bytes [offset, offset + length) of a blob in one buffer; refuses what readBlob refuses. */
  async readBlobRange(id: Digest, offset: number, length: number): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.readBlob(id, { offset, length })) chunks.push(chunk);
    return chunks.length === 1 ? chunks[0]! : new Uint8Array(Buffer.concat(chunks, length));
  }

  /** A whole blob in memory: for small blobs and tests, not for bulk data. */
  async readBlobBytes(id: Digest): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.readBlob(id)) chunks.push(chunk);
    return new Uint8Array(Buffer.concat(chunks));
  }

  /**
   * The BLAKE3 outboard of a blob (empty for blobs of one 16 KiB group or
   * less). Packed blobs keep none; theirs is computed from their bytes.
   */
  readOutboard(id: Digest): Uint8Array {
    const row = this.statements.outboard.get(id);
    if (row && row.outboard === null && row.size > GROUP_SIZE) {
      const builder = new OutboardBuilder();
      const location = this.statements.blobLocation.get(id)!;
      builder.update(
        location.storeFile !== null
          ? this.readStoreFile(id, location.size, location.storeFile)
          : location.template !== null
            ? this.readTemplateSync(id, location, 0)
            : this.packs.read(location.pack!, location.packOffset!, location.size, id),
      );
      return builder.finish().outboard;
    }
    if (!row) {
      // Derived from an adopted file (a group-delta basis on an agent): the file's stored tree with the groups its sites touch hashed again.
      const source = this.restoreSource(id);
      if (source && source.tree && source.bytes.length > GROUP_SIZE) return treeWithSitesRehashed(source.tree, source.bytes, [source.changed]).outboard;
      const derived = source?.bytes ?? this.readDerivedNormalized(id);
      if (!derived) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not in the store`, { objectId: id });
      if (derived.length <= GROUP_SIZE) return new Uint8Array(0);
      const builder = new OutboardBuilder();
      builder.update(derived);
      return builder.finish().outboard;
    }
    return row.outboard ? new Uint8Array(row.outboard) : new Uint8Array(0);
  }

  hasDirectory(id: Digest): boolean {
    return this.statements.directory.get(id) !== undefined;
  }

  /** The canonical encoding of a directory, as stored; refuses unknown ids with DIRECTORY_NOT_FOUND. */
  readDirectoryBytes(id: Digest): Uint8Array {
    const row = this.statements.directory.get(id);
    if (!row) throw new CastoreError('DIRECTORY_NOT_FOUND', `directory ${id} is not in the store`, { objectId: id });
    return new Uint8Array(row.data.buffer, row.data.byteOffset, row.data.byteLength);
  }

  readDirectory(id: Digest): Entry[] {
    return decodeDirectory(this.readDirectoryBytes(id), id);
  }

  getStorePath(storePath: string): StorePathInfo | undefined {
    const row = this.statements.storePath.get(storePath);
    return row ? storePathFromRow(row) : undefined;
  }

  /**
   * The registered store path whose hash part (the 32 nix32 characters of
   * `<storeDir>/<hash>-<name>`) is `hashPart`, as a binary cache looks paths
   * up; undefined when none is. One index range scan, whatever the store's size.
   */
  getStorePathByHashPart(hashPart: string, storeDir = '/nix/store'): StorePathInfo | undefined {
    if (!/^[0-9a-df-np-sv-z]{32}$/.test(hashPart)) return undefined;
    const row = this.statements.storePathByPrefix.get(`${storeDir}/${hashPart}-`, `${storeDir}/${hashPart}.`);
    return row ? storePathFromRow(row) : undefined;
  }

  listStorePaths(): StorePathInfo[] {
    return this.statements.storePaths.all().map(storePathFromRow);
  }

  /**
   * The store paths registered (or registered again: a push of a path
   * already here refreshes it) at or after `since` by the store's clock,
   * sorted: what a GC's grace period keeps though nothing names them yet.
   */
  storePathsRegisteredSince(since: number): string[] {
    return this.db
      .prepare<[number], { path: string }>('SELECT path FROM store_paths WHERE registered_at >= ? ORDER BY path')
      .all(since)
      .map((row) => row.path);
  }

  /**
   * The closure of `paths` over the registry's references, sorted. Refuses
   * (STORE_PATH_NOT_FOUND) a path, or a reference, the registry lacks: a
   * closure with holes is never returned.
   */
  closure(paths: readonly string[]): string[] {
    return walkClosure(paths, (storePath) => this.getStorePath(storePath), (storePath) => new CastoreError('STORE_PATH_NOT_FOUND', `store path ${storePath} is not registered`));
  }

  /** Starts a batch of writes that become visible together at `commit()`. */
  beginIngest(): LocalIngest {
    return new LocalIngest(this.context, this, randomBytes(8).toString('hex'));
  }

  /** Stores one blob given in memory and returns its id (committed on return). */
  async putBlob(bytes: Uint8Array): Promise<Digest> {
    return withIngest(this, (ingest) => ingest.putBlobBytes(bytes));
  }

  /**
   * Adopts materialized files: each blob's bytes are from now on read from
   * `file` (a read-only store file its owner keeps, e.g. an agent's store
   * path) and the castore drops its own copy — the blob's file of its own,
   * and packs no blob lives in any more (sparse ones are compacted). Blobs
   * the castore holds with another size are ignored, and so are those it
   * does not hold, unless `recordMissing` (for files the caller wrote from
   * verified bytes without storing them here; up to PACK_MAX bytes, which
   * need no stored outboard). Idempotent; a blob already adopted is moved
   * to the new file (an agent's GC moves blobs off store paths it is about
   * to delete). Returns how many blobs changed place and how many of their
   * bytes the castore held.
   */
  adoptStoreFiles(
    files: Iterable<{ id: Digest; size: number; file: string }>,
    options: { recordMissing?: boolean; templates?: ReadonlyMap<Digest, BlobTemplate> } = {},
  ): { adopted: number; releasedBytes: number } {
    const select = this.db.prepare<[string], { size: number; pack: string | null; storeFile: string | null; template: string | null }>(
      'SELECT size, pack, store_file AS storeFile, template FROM blobs WHERE id = ?',
    );
    // An adopted template keeps its template: its normalized blob is then derived from the file (readDerivedNormalized),
    // so the next rebuild restores from it while the disk holds the bytes once.
    const adopt = this.db.prepare<[string, string]>('UPDATE blobs SET store_file = ?, pack = NULL, pack_offset = NULL WHERE id = ?');
    const record = this.db.prepare<[string, number, number, string, string | null, Uint8Array | null]>(
      'INSERT INTO blobs (id, size, pack, pack_offset, outboard, last_used, store_file, template, template_record) VALUES (?, ?, NULL, NULL, NULL, ?, ?, ?, ?)',
    );
    const addTemplate = this.db.prepare<[string, Uint8Array, string]>('UPDATE blobs SET template = ?, template_record = ? WHERE id = ? AND template IS NULL');
    const normalizedRow = this.db.prepare<[string], { pack: string | null; storeFile: string | null; template: string | null }>(
      'SELECT pack, store_file AS storeFile, template FROM blobs WHERE id = ?',
    );
    const dropRow = this.db.prepare<[string]>('DELETE FROM blobs WHERE id = ?');
    const now = this.clock();
    const ownFiles: Digest[] = [];
    const templatedNormalized = new Set<Digest>();
    let adopted = 0;
    let releasedBytes = 0;
    this.db
      .transaction(() => {
        for (const { id, size, file } of files) {
          const row = select.get(id);
          // A template the copy was told of (a claim): kept only if the file, normalized at its sites, is that normalized blob.
          const claimed = options.templates?.get(id);
          const template = claimed && (row === undefined || row.template === null) && fileNormalizesTo(file, size, claimed) ? claimed : undefined;
          if (!row && options.recordMissing && size <= PACK_MAX) {
            record.run(id, size, now, file, template?.normalized ?? null, template?.record ?? null);
            if (template) templatedNormalized.add(template.normalized);
            adopted++;
            continue;
          }
          if (!row || row.size !== size) continue;
          if (template) addTemplate.run(template.normalized, template.record, id);
          const normalized = (row.template as Digest | null) ?? template?.normalized;
          if (normalized) templatedNormalized.add(normalized);
          // A blob's file of its own goes after the commit; one a crash left behind goes the next time.
          if (row.pack === null && row.template === null && size > OWN_FILE_MIN) ownFiles.push(id);
          if (row.storeFile === file) continue;
          if (row.storeFile === null && row.template === null) releasedBytes += size;
          adopt.run(file, id);
          adopted++;
        }
        // A normalized blob stored with its own bytes is now derived from an adopted file: drop the copy.
        for (const id of templatedNormalized) {
          const row = normalizedRow.get(id);
          if (!row || row.storeFile !== null || row.template !== null) continue;
          dropRow.run(id);
          if (row.pack === null) ownFiles.push(id);
        }
      })
      .immediate();
    for (const id of ownFiles) rmSync(blobDataPath(this.dataDir, id), { force: true });
    maintainPacks(this.context); // also what a crash right after an earlier commit left
    return { adopted, releasedBytes };
  }

  /**
   * The file holding a blob stored on its own (not packed, not adopted), for
   * a caller that hard-links it instead of copying its bytes (an agent
   * materializing a large file it just fetched: the castore then adopts the
   * store's name for it and drops its own). Undefined otherwise. The file
   * is the castore's: nothing may write to it.
   */
  ownBlobFile(id: Digest): string | undefined {
    const row = this.statements.blobLocation.get(id);
    if (!row || row.pack !== null || row.storeFile !== null || row.template !== null) return undefined;
    return blobDataPath(this.dataDir, id);
  }

  /** Counts and sizes of what the castore holds. */
  stats(): LocalCastoreStats {
    const row = this.db
      .prepare<
        [],
        {
          blobs: number;
          packedBlobs: number;
          adoptedBlobs: number;
          blobBytes: number | null;
          packedBytes: number | null;
          templatedBlobs: number;
          templatedBytes: number | null;
          packFiles: number;
          directories: number;
          directoryBytes: number | null;
          storePaths: number;
          narBytes: number | null;
          openIngests: number;
        }
      >(
        `SELECT (SELECT COUNT(*) FROM blobs) AS blobs,
                (SELECT COUNT(*) FROM blobs WHERE pack IS NOT NULL) AS packedBlobs,
                (SELECT COUNT(*) FROM blobs WHERE store_file IS NOT NULL) AS adoptedBlobs,
                (SELECT SUM(iif(template IS NULL, size, length(template_record))) FROM blobs) AS blobBytes,
                (SELECT COUNT(*) FROM blobs WHERE template IS NOT NULL) AS templatedBlobs,
                (SELECT SUM(size) FROM blobs WHERE template IS NOT NULL) AS templatedBytes,
                (SELECT SUM(size) FROM blobs WHERE pack IS NOT NULL) AS packedBytes,
                (SELECT COUNT(*) FROM packs) AS packFiles,
                (SELECT COUNT(*) FROM directories) AS directories,
                (SELECT SUM(length(data)) FROM directories) AS directoryBytes,
                (SELECT COUNT(*) FROM store_paths) AS storePaths,
                (SELECT SUM(nar_size) FROM store_paths) AS narBytes,
                (SELECT COUNT(*) FROM ingests) AS openIngests`,
      )
      .get()!;
    return {
      blobs: row.blobs,
      packedBlobs: row.packedBlobs,
      adoptedBlobs: row.adoptedBlobs,
      blobBytes: row.blobBytes ?? 0,
      packedBlobBytes: row.packedBytes ?? 0,
      templatedBlobs: row.templatedBlobs,
      templatedBlobBytes: row.templatedBytes ?? 0,
      packFiles: row.packFiles,
      directories: row.directories,
      directoryBytes: row.directoryBytes ?? 0,
      storePaths: row.storePaths,
      registeredNarBytes: row.narBytes ?? 0,
      openIngests: row.openIngests,
    };
  }
}

/** A template that does not restore, as the read refuses it: BLOB_CORRUPT naming the blob (other errors pass). */
function corruptTemplate(id: Digest, normalized: Digest, error: unknown): unknown {
  if (error instanceof CastoreError && error.code === 'REFERENCES_INVALID') {
    return new CastoreError('BLOB_CORRUPT', `blob ${id} does not restore from its normalized blob ${normalized}: ${error.message}`, { objectId: id, cause: error });
  }
  return error;
}

/** Reads `bytes.length` bytes of `fd` from `position`; returns how many there were (fewer at the end of the file). */
function readFully(fd: number, bytes: Buffer, position: number): number {
  let done = 0;
  while (done < bytes.length) {
    const read = readSync(fd, bytes, done, bytes.length - done, position + done);
    if (read === 0) break;
    done += read;
  }
  return done;
}

/**
 * A registry row as a StorePathInfo, re-validated: a row written by an
 * older Ferry (or by hand) with an invalid store path, reference or node is
 * refused (STORE_PATH_INVALID, naming it) rather than handed to code that
 * would turn it into a file path. fsck reports such rows.
 */
function storePathFromRow(row: StorePathRow): StorePathInfo {
  const invalid = (why: string) => new CastoreError('STORE_PATH_INVALID', `the registry row of ${JSON.stringify(row.path.slice(0, 300))} is invalid: ${why} (see ferry castore fsck)`);
  let refs: unknown, signatures: unknown, root: unknown;
  try {
    [refs, signatures, root] = [JSON.parse(row.refs), JSON.parse(row.signatures), JSON.parse(row.root)];
  } catch (error) {
    throw invalid(`not JSON: ${(error as Error).message}`);
  }
  const parsed = StorePathInfoSchema.safeParse({
    storePath: row.path,
    narHash: row.nar_hash,
    narSize: row.nar_size,
    references: refs,
    deriver: row.deriver ?? undefined,
    ca: row.ca ?? undefined,
    signatures,
    root,
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw invalid(`${issue.path.join('.') || 'row'}: ${issue.message}`);
  }
  return parsed.data;
}
