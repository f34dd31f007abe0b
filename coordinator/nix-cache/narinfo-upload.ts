/**
 * Accepting a narinfo PUT: the step of `nix copy --to` that turns a
 * spooled NAR into a registered store path.
 *
 * The narinfo is untrusted input. It is parsed strictly (nix/narinfo.ts),
 * must be for the path its URL names, must point at a NAR this cache holds
 * in its spool (`nar/<sha256>.nar`, `.nar.zst` or `.nar.xz`, the
 * compression matching: none, zstd or xz, Nix's default; anything else is
 * 415 UNSUPPORTED_COMPRESSION),
 * and every reference must already be registered (Nix uploads in
 * dependency order, and checks the same before uploading). The NAR is then
 * ingested with ingestStorePath against the narinfo's NarHash and NarSize:
 * a mismatch, or a malformed NAR, is refused and nothing of it is visible.
 * An uncompressed NAR must be exactly NarSize bytes before it is read; a
 * zstd or xz NAR is decompressed on the fly with NarSize as its output bound
 * (decompress.ts), so a small upload cannot expand past what its narinfo
 * claimed, and never more than a decompression step or two sits in memory.
 * The NAR is stored in castore form whatever its upload compression.
 *
 * Each registered path records one `store.push` audit event (an upload
 * batch is one narinfo: Nix sends no end-of-batch signal). Its byte count
 * is the NAR file's size; blobsSent and directoriesSent are 0, since a NAR
 * upload transfers no castore objects as such.
 */
import { CastoreError, ingestStorePath } from '../../castore/index.js';
import { formatNixHash, NixError, parseNarInfo, parseNixHash, storePathBaseName, DEFAULT_STORE_DIR, type NarInfo } from '../../nix/index.js';
import { FerryError } from '../../protocol/errors.js';
import { MAX_SIGNATURES } from '../../protocol/store-path-info.js';
import type { Coordinator } from '../coordinator.js';
import type { Actor } from '../domain/commands.js';
import { decompress, DecompressError, isCompression } from './decompress.js';
import { SPOOL_EXTENSIONS, SPOOL_NAME_DESCRIPTION, SPOOL_NAME_PATTERN, type NarSpool } from './nar-spool.js';

export interface NarInfoUploadResult {
  storePath: string;
  /** False when the path was already registered with the same NarHash (nothing changed, no event). */
  registered: boolean;
  /** The audit event's sequence number, when one was recorded. */
  seq?: number;
}

/**
 * NARs ingested at once; more narinfo PUTs wait for a slot. Each zstd
 * decompression may hold a window of up to 128 MiB (ZSTD_WINDOW_LOG_MAX),
 * so this bounds that memory to 4 x 128 MiB whatever the number of
 * uploaders (`nix copy` uploads a few paths at a time). xz decompressions
 * run one at a time within these slots (XZ_MAX_CONCURRENT_DECOMPRESSIONS),
 * with one dictionary of at most 64 MiB (XZ_DICT_MAX_BYTES).
 */
export const MAX_CONCURRENT_NAR_INGESTS = 4;
const SIGNATURE = /^[A-Za-z0-9._+-]{1,128}:[A-Za-z0-9+/]{1,200}={0,2}$/;

export class NarInfoUploads {
  /** Ingests in progress, by store path: a second PUT of the same path waits for the first. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** Ingests running now, and those waiting for a slot (MAX_CONCURRENT_NAR_INGESTS). */
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly coordinator: Coordinator,
    private readonly spool: NarSpool,
    private readonly maxNarBytes: number,
  ) {}

  /**
   * Registers the store path `<hashPart>.narinfo` describes, from its
   * spooled NAR, and records it. Throws FerryError (4xx) for anything
   * that does not verify; nothing is registered then.
   */
  async accept(actor: Actor, hashPart: string, text: string): Promise<NarInfoUploadResult> {
    const info = this.parse(hashPart, text);
    for (;;) {
      const running = this.inFlight.get(info.storePath);
      if (!running) break;
      await running.catch(() => undefined);
    }
    const work = this.register(actor, info);
    this.inFlight.set(info.storePath, work);
    try {
      return await work;
    } finally {
      this.inFlight.delete(info.storePath);
    }
  }

  private parse(hashPart: string, text: string): NarInfo {
    let info: NarInfo;
    try {
      info = parseNarInfo(text, DEFAULT_STORE_DIR);
    } catch (error) {
      if (error instanceof NixError) throw new FerryError('BAD_NARINFO', error.message);
      throw error;
    }
    if (storePathBaseName(info.storePath).slice(0, 32) !== hashPart) {
      throw new FerryError('BAD_NARINFO', `${hashPart}.narinfo describes ${info.storePath}, whose hash part differs`);
    }
    if (info.compression !== 'none' && !isCompression(info.compression)) {
      throw new FerryError('UNSUPPORTED_COMPRESSION', `compression '${info.compression}' is not accepted: upload with Nix's default (xz), ?compression=zstd or ?compression=none`);
    }
    if (info.narSize > this.maxNarBytes) throw new FerryError('NAR_TOO_LARGE', `NarSize ${info.narSize} exceeds the limit of ${this.maxNarBytes} bytes`);
    if (info.sigs.length > MAX_SIGNATURES) throw new FerryError('BAD_NARINFO', `more than ${MAX_SIGNATURES} signatures`);
    if (info.sigs.some((sig) => !SIGNATURE.test(sig))) throw new FerryError('BAD_NARINFO', 'a Sig is not name:base64');
    return info;
  }

  private spoolNameOf(info: NarInfo): string {
    const name = info.url.startsWith('nar/') ? info.url.slice('nar/'.length) : '';
    const match = SPOOL_NAME_PATTERN.exec(name);
    if (!match) throw new FerryError('BAD_NARINFO', `URL '${info.url}' is not ${SPOOL_NAME_DESCRIPTION}`);
    const extension = info.compression === 'none' ? SPOOL_EXTENSIONS.none : isCompression(info.compression) ? SPOOL_EXTENSIONS[info.compression] : undefined;
    if ((match[2] ?? '') !== extension) {
      throw new FerryError('BAD_NARINFO', `URL '${info.url}' does not match Compression: ${info.compression}`);
    }
    const fileHash = `sha256:${match[1]}`;
    if (info.fileHash !== undefined) {
      let claimed: string;
      try {
        claimed = formatNixHash(parseNixHash(info.fileHash), 'nix32');
      } catch {
        throw new FerryError('BAD_NARINFO', `FileHash '${info.fileHash}' is not a hash`);
      }
      if (claimed !== fileHash) throw new FerryError('BAD_NARINFO', `FileHash ${info.fileHash} differs from the NAR's name ${info.url}`);
    }
    if (info.compression === 'none' && fileHash !== info.narHash) {
      throw new FerryError('NAR_MISMATCH', `the uncompressed NAR ${info.url} hashes to ${fileHash}, but NarHash is ${info.narHash}`);
    }
    return name;
  }

  private async register(actor: Actor, info: NarInfo): Promise<NarInfoUploadResult> {
    const store = this.coordinator.castore;
    const existing = store.getStorePath(info.storePath);
    const spoolName = this.spoolNameOf(info);
    if (existing) {
      if (existing.narHash !== info.narHash || existing.narSize !== info.narSize) {
        throw new FerryError('CONFLICT', `${info.storePath} is registered with NarHash ${existing.narHash}, not ${info.narHash}`);
      }
      this.spool.consume(spoolName);
      return { storePath: info.storePath, registered: false };
    }
    const references = info.references.map((ref) => `${DEFAULT_STORE_DIR}/${ref}`);
    const missing = references.filter((ref) => ref !== info.storePath && !store.getStorePath(ref));
    if (missing.length > 0) {
      throw new FerryError('MISSING_REFERENCES', `${info.storePath} references ${missing.length} path(s) this cache lacks, e.g. ${missing.slice(0, 3).join(', ')}: upload them first`);
    }
    const spooled = this.spool.stat(spoolName);
    if (!spooled) throw new FerryError('NAR_NOT_UPLOADED', `${info.url} was not uploaded (or expired): upload the NAR before its narinfo`);
    if (info.fileSize !== undefined && info.fileSize !== spooled.bytes) {
      throw new FerryError('BAD_NARINFO', `FileSize ${info.fileSize} differs from the ${spooled.bytes} bytes uploaded as ${info.url}`);
    }
    // The spooled file is the NAR itself: its size is known before anything is read.
    if (info.compression === 'none' && spooled.bytes !== info.narSize) {
      throw new FerryError('NAR_MISMATCH', `the uncompressed NAR ${info.url} has ${spooled.bytes} bytes, but NarSize is ${info.narSize}`);
    }
    const raw = this.spool.read(spoolName);
    const nar = isCompression(info.compression) ? decompress(raw, info.compression, { maxOutputBytes: info.narSize, what: `NAR ${info.url}` }) : raw;
    // The store path becomes visible in the transaction of its audit event (Coordinator.execute's publish).
    let seq: number | undefined;
    const publish = (commit: () => void): void => {
      seq = this.coordinator.execute(actor, () => ({
        draft: {
          action: 'store.push',
          subject: info.storePath,
          payload: {
            roots: [info.storePath],
            registered: [info.storePath],
            registeredCount: 1,
            alreadyPresent: 0,
            bytesSent: spooled.bytes,
            blobsSent: 0,
            directoriesSent: 0,
          },
        },
        result: undefined,
        publish: commit,
      }))?.event.seq;
    };
    if (this.running >= MAX_CONCURRENT_NAR_INGESTS) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    try {
      await ingestStorePath(
        store,
        nar,
        {
          storePath: info.storePath,
          narHash: info.narHash,
          narSize: info.narSize,
          references,
          ...(info.deriver ? { deriver: `${DEFAULT_STORE_DIR}/${info.deriver}` } : {}),
          ...(info.ca ? { ca: info.ca } : {}),
          signatures: info.sigs,
        },
        { publish },
      );
    } catch (error) {
      if (error instanceof CastoreError && error.code === 'BLOB_CORRUPT') throw new FerryError('NAR_MISMATCH', error.message);
      if (error instanceof NixError) throw new FerryError('BAD_NAR', `${info.url} is not a valid NAR: ${error.message}`);
      // Expanding past NarSize is the narinfo lying about its NAR, like a wrong NarHash: the same
      // code (NAR_TOO_LARGE, 413, is the cache's own limit on NarSize, a different refusal).
      if (error instanceof DecompressError && error.code === 'DECOMPRESS_OUTPUT_LIMIT') {
        throw new FerryError('NAR_MISMATCH', `the ${error.compression} NAR ${info.url} decompresses to more than its claimed NarSize of ${info.narSize} bytes`);
      }
      if (error instanceof DecompressError) throw new FerryError('BAD_NAR', error.message);
      throw error;
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
    this.spool.consume(spoolName);
    return { storePath: info.storePath, registered: true, ...(seq !== undefined ? { seq } : {}) };
  }
}
