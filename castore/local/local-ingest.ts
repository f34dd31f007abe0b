/**
 * A batch of castore writes that becomes visible all at once. Small blobs
 * are appended to the session's pack file (their rows wait in memory: id,
 * offset, outboard), large blobs go to fsynced temp files, directories and
 * store path records wait in memory (they are small). `commit()` fsyncs the
 * pack and publishes everything in one SQLite transaction; `abort()` — or a
 * crash, cleaned up at the next GC — leaves nothing visible.
 *
 * The session is registered in `ingests` while it runs, so a concurrent GC
 * keeps every object it could be about to reference (see ingest-registry.ts).
 */
import { blake3 } from '../blake3/index.js';
import { closeSync, createReadStream, mkdirSync, openSync, readSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { CastoreError } from '../errors.js';
import { digestFromBytes, type Digest, type DirectoryNode, type Entry } from '../node.js';
import type { BlobWriter } from '../services/blob-service.js';
import type { Ingest } from '../services/castore-services.js';
import { StagedRecords } from '../services/staged-records.js';
import { templateWriter, verifyRestored, verifyTemplate, type RestoreSource, type TemplateEntry } from '../services/template-writer.js';
import type { HashPartSet } from '../references/index.js';
import type { StorePathInfo } from '../store-path-info.js';
import { blobDataPath, makeDurable, TempBlobWriter, type TempBlob } from './blob-files.js';
import { endIngest, forgetIngest, registerIngest } from './ingest-registry.js';
import type { LocalContext } from './local-context.js';
import { PACK_MAX, packPath, PackWriter } from './pack-files.js';

/** What an ingest asks the store it writes to (a LocalCastore): which blobs it already holds, and (to verify a template over one) their bytes. */
export interface BlobPresence {
  hasBlob(id: Digest): boolean;
  missingBlobs(ids: readonly Digest[]): Digest[];
  statBlob(id: Digest): { size: number } | undefined;
  readBlob(id: Digest, range?: { offset?: number; length?: number }): AsyncIterable<Uint8Array>;
  readBlobRangeSync(id: Digest, offset: number, length: number): Uint8Array;
  readOutboard(id: Digest): Uint8Array;
  restoreSource(id: Digest): RestoreSource | undefined;
}

/**
 * A plain copy of a blob that is a template row supersedes it (it needs no
 * other blob to be read: a template whose normalized blob went missing is
 * repaired by fetching the blob again); a plain row stays as it is.
 */
const SUPERSEDE_TEMPLATE = `ON CONFLICT (id) DO UPDATE SET last_used = excluded.last_used,
  pack = iif(blobs.template IS NULL, blobs.pack, excluded.pack),
  pack_offset = iif(blobs.template IS NULL, blobs.pack_offset, excluded.pack_offset),
  outboard = iif(blobs.template IS NULL, blobs.outboard, excluded.outboard),
  template_record = NULL, template = NULL`;

/** Small blobs are compared with the store and appended to the pack this many at a time… */
const UNCHECKED_MAX = 512;
/** …or when this much of their bytes is waiting (at least PACK_MAX, so every small blob fits). */
const ARENA_BYTES = 2 * 1024 * 1024;

/** The local backend's Ingest (its contract: services/castore-services.ts). */
export class LocalIngest implements Ingest {
  private readonly packed: { id: string; size: number; offset: number; outboard: Uint8Array | null }[] = [];
  private readonly pack: PackWriter;
  private readonly stagedIds = new Set<string>();
  private readonly tempBlobs = new Map<Digest, TempBlob>();
  private readonly records = new StagedRecords();
  /** Template rows to insert at commit (their normalized blobs staged or touched like any blob). */
  private readonly templates = new Map<Digest, TemplateEntry>();
  private tempCounter = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    private readonly context: LocalContext,
    private readonly store: BlobPresence,
    readonly id: string,
  ) {
    registerIngest(context, id);
    this.pack = new PackWriter(context.dataDir, id);
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new CastoreError('INGEST_ABORTED', `ingest ${this.id} is already ${this.state}`);
  }

  /**
   * A writer for a blob of `expectedSize` bytes. Small blobs are buffered
   * (at most PACK_MAX bytes), large ones streamed to a temp file while
   * their outboard is computed. `finish()` refuses (BLOB_CORRUPT) a blob
   * whose length differs from `expectedSize`, or whose bytes do not hash
   * to `expectedId` when given.
   *
   * `verifiedOutboard`: the caller has already checked every byte it will
   * write against `expectedId` and this outboard (a BlobVerifier did), so a
   * large blob is not hashed a second time. Only for bytes so verified.
   */
  blobWriter(expectedSize: number, expectedId?: Digest, verifiedOutboard?: Uint8Array): BlobWriter {
    this.assertOpen();
    const hint = expectedId === undefined ? undefined : this.templateHints.get(expectedId);
    if (hint && !this.holdsOrStaged(expectedId!)) return this.templateWriter(expectedSize, hint, expectedId);
    if (expectedSize <= PACK_MAX) {
      const chunks: Uint8Array[] = [];
      let size = 0;
      return {
        write: (chunk) => {
          size += chunk.length;
          if (size > PACK_MAX) throw new CastoreError('BLOB_CORRUPT', `blob is longer than its declared ${expectedSize} bytes`);
          chunks.push(chunk);
        },
        finish: () => {
          if (size !== expectedSize) throw new CastoreError('BLOB_CORRUPT', `blob has ${size} bytes, ${expectedSize} were declared`);
          return this.stageSmallBlob(chunks.length === 1 ? chunks[0]! : new Uint8Array(Buffer.concat(chunks, size)), expectedId);
        },
        discard: () => undefined,
      };
    }
    const writer = new TempBlobWriter(
      this.context.dataDir,
      `${this.id}-${this.tempCounter++}`,
      expectedId !== undefined && verifiedOutboard ? { id: expectedId, outboard: verifiedOutboard } : undefined,
    );
    return {
      write: (chunk) => writer.write(chunk),
      finish: () => {
        if (writer.size !== expectedSize) {
          writer.discard();
          throw new CastoreError('BLOB_CORRUPT', `blob has ${writer.size} bytes, ${expectedSize} were declared`);
        }
        const temp = writer.finish();
        if (expectedId !== undefined && temp.id !== expectedId) {
          rmSync(temp.dataPath, { force: true });
          throw new CastoreError('BLOB_CORRUPT', `blob bytes hash to ${temp.id}, not ${expectedId}`, { objectId: expectedId });
        }
        if (this.tempBlobs.has(temp.id) || this.store.hasBlob(temp.id)) {
          rmSync(temp.dataPath, { force: true });
          // Keep the existing blob alive through a concurrent GC: touched at commit.
          if (!this.tempBlobs.has(temp.id)) this.touchedExisting.add(temp.id);
        } else {
          this.tempBlobs.set(temp.id, temp);
        }
        return temp.id;
      },
      discard: () => writer.discard(),
    };
  }

  private readonly touchedExisting = new Set<Digest>();

  /** Stages a blob held in memory; returns its id. With `expectedId`, refuses (BLOB_CORRUPT) bytes that are not that blob. */
  async putBlobBytes(bytes: Uint8Array, expectedId?: Digest): Promise<Digest> {
    const writer = this.blobWriter(bytes.length, expectedId);
    writer.write(bytes);
    return writer.finish();
  }

  private stageSmallBlob(data: Uint8Array, expectedId?: Digest): Digest {
    // Packed blobs travel and are verified whole (they are small): no outboard is kept, and the
    // whole-input hash is faster than the tree hashing an outboard needs (readOutboard derives one on demand).
    const id = digestFromBytes(blake3(data));
    // Checked before anything is written: bytes that do not match never reach the pack.
    if (expectedId !== undefined && id !== expectedId) throw new CastoreError('BLOB_CORRUPT', `blob bytes hash to ${id}, not ${expectedId}`, { objectId: expectedId });
    if (this.stagedIds.has(id)) return id;
    this.stagedIds.add(id);
    // Copied (the caller's chunk may be a view into a buffer it reuses) into the batch's arena: one allocation per batch.
    if (this.arena.length - this.arenaUsed < data.length) this.packUnchecked();
    const copy = this.arena.subarray(this.arenaUsed, this.arenaUsed + data.length);
    copy.set(data);
    this.arenaUsed += data.length;
    this.unchecked.push({ id, data: copy });
    if (this.unchecked.length >= UNCHECKED_MAX) this.packUnchecked();
    return id;
  }

  /** Small blobs staged but not yet compared with the store (one query for many: ingests are mostly small files). */
  private unchecked: { id: Digest; data: Uint8Array }[] = [];
  private arena: Buffer = Buffer.alloc(0);
  private arenaUsed = 0;

  /** Appends the unchecked blobs the store lacks to the pack; the others are only kept alive (touched at commit). */
  private packUnchecked(): void {
    if (this.unchecked.length > 0) {
      const missing = new Set(this.store.missingBlobs(this.unchecked.map((blob) => blob.id)));
      const lacking = this.unchecked.filter((blob) => missing.has(blob.id));
      for (const blob of this.unchecked) if (!missing.has(blob.id)) this.touchedExisting.add(blob.id);
      const offsets = this.pack.append(lacking.map((blob) => blob.data));
      lacking.forEach((blob, index) => this.packed.push({ id: blob.id, size: blob.data.length, offset: offsets[index]!, outboard: null }));
      this.unchecked = [];
    }
    // The pack writes synchronously, so nothing refers to the arena's bytes any more: reuse it.
    if (this.arena.length === 0) this.arena = Buffer.allocUnsafeSlow(ARENA_BYTES);
    this.arenaUsed = 0;
  }

  /** A reference-aware writer for one file of a store path (its contract: Ingest.templateWriter). */
  templateWriter(expectedSize: number, hashParts: HashPartSet, expectedId?: Digest): BlobWriter {
    this.assertOpen();
    return templateWriter(
      { blobWriter: (size) => this.blobWriter(size), stageVerifiedTemplate: (entry) => this.stageTemplate(entry), heldBlob: (id) => this.heldBlob(id) },
      expectedSize,
      hashParts,
      expectedId,
    );
  }

  private templateHints: ReadonlyMap<Digest, HashPartSet> = new Map();

  expectTemplates(hints: ReadonlyMap<Digest, HashPartSet>): void {
    this.templateHints = hints;
  }

  /** A large blob just written: staged in a temp file here, or deduplicated against the store's copy. */
  private heldBlob(id: Digest): { outboard: Uint8Array; read(offset: number, length: number): Uint8Array } {
    const temp = this.tempBlobs.get(id);
    if (!temp) return { outboard: this.store.readOutboard(id), read: (offset, length) => this.store.readBlobRangeSync(id, offset, length) };
    return {
      outboard: temp.outboard,
      read: (offset, length) => {
        const bytes = Buffer.allocUnsafe(length);
        const fd = openSync(temp.dataPath, 'r');
        try {
          for (let done = 0; done < length; ) {
            const read = readSync(fd, bytes, done, length - done, offset + done);
            if (read === 0) throw new CastoreError('BLOB_CORRUPT', `staged blob ${id} ends early in ${temp.dataPath}`, { objectId: id });
            done += read;
          }
        } finally {
          closeSync(fd);
        }
        return bytes;
      },
    };
  }

  /**
   * Stages a template from an untrusted source, verified by restoring its
   * normalized blob — staged in this ingest or already stored — and hashing
   * (its contract: Ingest.putTemplate).
   */
  async putTemplate(id: Digest, size: number, normalized: Digest, record: Uint8Array, onRestored?: (chunk: Uint8Array) => void): Promise<void> {
    this.assertOpen();
    if (this.holdsOrStaged(id)) return;
    const staged = this.stagedReader(normalized);
    const whole = staged ? undefined : this.store.restoreSource(normalized);
    if (whole) {
      const { entry, bytes } = verifyRestored(id, size, normalized, record, whole);
      this.assertOpen();
      this.touchedExisting.add(normalized);
      this.stageTemplate(entry);
      onRestored?.(bytes);
      return;
    }
    const normalizedSize = staged?.size ?? this.store.statBlob(normalized)?.size;
    if (normalizedSize === undefined) {
      throw new CastoreError('BLOB_NOT_FOUND', `template ${id}: its normalized blob ${normalized} is neither in the store nor in this ingest`, { objectId: normalized });
    }
    const read = staged?.read ?? ((offset: number, length: number) => this.store.readBlob(normalized, { offset, length }));
    const entry = await verifyTemplate(id, size, { id: normalized, size: normalizedSize }, record, read, onRestored);
    this.assertOpen();
    // Kept alive through a concurrent GC like any blob deduplicated against (the commit fails with GC_CONFLICT if it went).
    if (!staged) this.touchedExisting.add(normalized);
    this.stageTemplate(entry);
  }

  /** Whether `id` is staged in this ingest, or held by the store (then touched at commit). */
  private holdsOrStaged(id: Digest): boolean {
    if (this.templates.has(id) || this.tempBlobs.has(id) || this.stagedIds.has(id)) return true;
    if (!this.store.hasBlob(id)) return false;
    this.touchedExisting.add(id);
    return true;
  }

  private stageTemplate(entry: TemplateEntry): void {
    if (!this.holdsOrStaged(entry.id)) this.templates.set(entry.id, entry);
  }

  /** A reader of a blob this ingest staged itself (a small one in its pack, a large one in its temp file), or undefined. */
  private stagedReader(id: Digest): { size: number; read(offset: number, length: number): AsyncIterable<Uint8Array> } | undefined {
    const temp = this.tempBlobs.get(id);
    if (temp) {
      return {
        size: temp.size,
        read: async function* (offset, length) {
          if (length > 0) yield* createReadStream(temp.dataPath, { start: offset, end: offset + length - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Uint8Array>;
        },
      };
    }
    if (!this.stagedIds.has(id)) return undefined;
    this.packUnchecked(); // so its bytes are in the pack file, or it was found in the store
    const packed = this.packed.find((blob) => blob.id === id);
    if (!packed) return undefined;
    const file = packPath(this.context.dataDir, this.id);
    const read = async function* (offset: number, length: number): AsyncGenerator<Uint8Array> {
      const bytes = Buffer.alloc(length);
      const fd = openSync(file, 'r');
      try {
        for (let done = 0; done < length; ) {
          const count = readSync(fd, bytes, done, length - done, packed.offset + offset + done);
          if (count === 0) throw new CastoreError('BLOB_CORRUPT', `staged blob ${id} ends early in pack ${file}`, { objectId: id });
          done += count;
        }
      } finally {
        closeSync(fd);
      }
      yield bytes;
    };
    return { size: packed.size, read };
  }

  /** Stages a directory and returns the node that points to it. Refuses invalid entries (DIRECTORY_NOT_CANONICAL). */
  putDirectory(entries: readonly Entry[]): DirectoryNode {
    this.assertOpen();
    return this.records.putDirectory(entries);
  }

  /** Records a store path, published at commit together with its objects. */
  registerStorePath(info: StorePathInfo): void {
    this.assertOpen();
    this.records.registerStorePath(info);
  }

  /**
   * Publishes every object of the session in one transaction. Large blobs
   * are renamed into place inside it, so GC (which sweeps in a transaction
   * too) can never delete a file this commit just published.
   */
  commit(): void {
    this.assertOpen();
    this.packUnchecked();
    this.pack.finish();
    for (const temp of this.tempBlobs.values()) makeDurable(temp);
    const db = this.context.db;
    const now = this.context.clock();
    const dataDir = this.context.dataDir;
    db.transaction(() => {
      // A pack of only empty blobs has no bytes, but its blobs must still be recorded.
      if (this.packed.length > 0) {
        db.prepare('INSERT INTO packs (id, size, created_at) VALUES (?, ?, ?)').run(this.id, this.pack.size, now);
        // A concurrent ingest may have committed the same blob meanwhile: its row stays, our copy is dead space for GC.
        const insertPacked = db.prepare(`INSERT INTO blobs (id, size, pack, pack_offset, outboard, last_used) VALUES (?, ?, ?, ?, ?, ?) ${SUPERSEDE_TEMPLATE}`);
        for (const blob of this.packed) insertPacked.run(blob.id, blob.size, this.id, blob.offset, blob.outboard, now);
      }
      const insertFileBlob = db.prepare(`INSERT INTO blobs (id, size, pack, pack_offset, outboard, last_used) VALUES (?, ?, NULL, NULL, ?, ?) ${SUPERSEDE_TEMPLATE}`);
      for (const temp of this.tempBlobs.values()) {
        const target = blobDataPath(dataDir, temp.id);
        mkdirSync(path.dirname(target), { recursive: true });
        renameSync(temp.dataPath, target);
        insertFileBlob.run(temp.id, temp.size, temp.outboard.length > 0 ? temp.outboard : null, now);
      }
      // After the blobs they are over: a normalized blob is inserted (or touched, below) in this transaction.
      const insertTemplate = db.prepare(
        'INSERT INTO blobs (id, size, pack, pack_offset, outboard, last_used, template, template_record) VALUES (?, ?, NULL, NULL, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET last_used = excluded.last_used',
      );
      for (const entry of this.templates.values()) {
        insertTemplate.run(entry.id, entry.size, entry.outboard.length > 0 ? entry.outboard : null, now, entry.normalized, entry.record);
      }
      const touch = db.prepare('UPDATE blobs SET last_used = ? WHERE id = ?');
      // A normalized blob without a row of its own is derived from the adopted files over it: those are touched.
      const touchDerivationSources = db.prepare('UPDATE blobs SET last_used = ? WHERE template = ? AND store_file IS NOT NULL');
      for (const id of this.touchedExisting) {
        if (touch.run(now, id).changes === 0 && touchDerivationSources.run(now, id).changes === 0) {
          throw new CastoreError('GC_CONFLICT', `blob ${id} was collected while ingest ${this.id} used it; retry the ingest`, { objectId: id });
        }
      }
      const insertDirectory = db.prepare(
        'INSERT INTO directories (id, data, last_used) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET last_used = excluded.last_used',
      );
      for (const [id, data] of this.records.directories) insertDirectory.run(id, data, now);
      const insertPath = db.prepare(
        `INSERT INTO store_paths (path, nar_hash, nar_size, refs, deriver, ca, signatures, root, registered_at)
         VALUES (@path, @narHash, @narSize, @refs, @deriver, @ca, @signatures, @root, @now)
         ON CONFLICT (path) DO UPDATE SET signatures = excluded.signatures, registered_at = excluded.registered_at`,
      );
      for (const info of this.records.storePaths) {
        insertPath.run({
          path: info.storePath,
          narHash: info.narHash,
          narSize: info.narSize,
          refs: JSON.stringify(info.references),
          deriver: info.deriver ?? null,
          ca: info.ca ?? null,
          signatures: JSON.stringify(info.signatures),
          root: JSON.stringify(info.root),
          now,
        });
      }
      forgetIngest(this.context, this.id);
    }).immediate();
    if (this.packed.length === 0) this.pack.discard();
    this.state = 'committed';
    endIngest(this.id);
  }

  /** Drops everything staged; nothing of the session was ever visible. Safe to call more than once. */
  abort(): void {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    for (const temp of this.tempBlobs.values()) rmSync(temp.dataPath, { force: true });
    this.pack.discard();
    forgetIngest(this.context, this.id);
    endIngest(this.id);
  }
}
