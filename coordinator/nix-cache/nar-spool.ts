/**
 * Where uploaded NAR files wait for their narinfo. `nix copy --to` PUTs
 * `nar/<file hash>.nar[.zst|.xz]` first and `<hash>.narinfo` after it; only the
 * narinfo says which store path the NAR is and what NarHash it must have, so
 * the file is spooled to disk (never held in memory) under the coordinator's
 * data directory until then.
 *
 * A spooled file is named by its SHA-256 (Nix names the upload after it) and
 * is checked against that name when the upload ends: a file whose bytes do
 * not match is refused and deleted. Once a narinfo has been ingested from a
 * file, the file is kept for a short grace period (another path with an
 * identical NAR may still refer to it: Nix skips uploading a NAR the cache
 * already has), then deleted. Files not used within `staleAfterMs` (crashed
 * or abandoned uploads) are deleted too, by a sweep on each upload and on
 * an unref'd timer.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { encodeNixBase32 } from '../../nix/index.js';
import { FerryError } from '../../protocol/errors.js';

/**
 * Spooled NAR file names, as Nix names its uploads (`nar/<FileHash
 * nix32>.nar` plus the compression's extension): `<sha256 nix32>.nar`,
 * `.nar.zst` or `.nar.xz`. Group 2 is the extension (SPOOL_EXTENSIONS).
 */
export const SPOOL_NAME_PATTERN = /^([0-9a-df-np-sv-z]{52})\.nar(\.zst|\.xz)?$/;

/** The extension after `.nar` of a spooled file, by the narinfo `Compression:` it must have. */
export const SPOOL_EXTENSIONS = { none: '', zstd: '.zst', xz: '.xz' } as const;

/** What SPOOL_NAME_PATTERN accepts, for messages. */
export const SPOOL_NAME_DESCRIPTION = 'nar/<sha256 nix32>.nar, .nar.zst or .nar.xz';

export interface NarSpoolOptions {
  /** Largest NAR file accepted (bytes, as uploaded: compressed or not). */
  maxFileBytes: number;
  /** Largest total of spooled bytes (uploads in flight included). */
  maxSpoolBytes: number;
  /** Unused files (and stalled uploads) older than this are deleted. */
  staleAfterMs: number;
  /** How long a file stays after a narinfo was ingested from it. */
  consumedGraceMs: number;
}

export class NarSpool {
  private inFlightBytes = 0;
  private readonly consumed = new Map<string, number>();
  private lastSweep = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly dir: string,
    private readonly options: NarSpoolOptions,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.sweep();
    this.timer = setInterval(() => this.sweep(), Math.min(options.consumedGraceMs, 60_000));
    this.timer.unref();
  }

  /** Stops the sweep timer (files stay; the next spool on this directory sweeps them). */
  close(): void {
    clearInterval(this.timer);
  }

  private fileOf(name: string): string {
    if (!SPOOL_NAME_PATTERN.test(name)) throw new FerryError('BAD_NAR_NAME', `'${name}' is not ${SPOOL_NAME_DESCRIPTION}`);
    return path.join(this.dir, name);
  }

  /** Size of a completely uploaded file, or undefined. */
  stat(name: string): { bytes: number } | undefined {
    try {
      const stats = statSync(this.fileOf(name));
      return stats.isFile() ? { bytes: stats.size } : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Receives an upload into the spool. Refuses (FerryError) a body over the
   * per-file or total limit (413/507, checked against Content-Length first
   * when given, then as bytes arrive) and a body whose SHA-256 is not the one
   * its name claims (400). On refusal nothing of it stays on disk.
   */
  async receive(name: string, body: AsyncIterable<Uint8Array>, declaredLength?: number): Promise<{ bytes: number }> {
    const target = this.fileOf(name);
    const claimed = SPOOL_NAME_PATTERN.exec(name)![1]!;
    this.sweepIfDue();
    const limit = this.options.maxFileBytes;
    if (declaredLength !== undefined && declaredLength > limit) throw new FerryError('NAR_TOO_LARGE', `NAR of ${declaredLength} bytes exceeds the limit of ${limit}`);
    const spooled = this.spooledBytes();
    const full = (extra: number): boolean => spooled + this.inFlightBytes + extra > this.options.maxSpoolBytes;
    if (full(declaredLength ?? 0)) throw new FerryError('SPOOL_FULL', `the upload spool is full (${this.options.maxSpoolBytes} bytes); retry later`);
    const temp = path.join(this.dir, `upload-${randomBytes(8).toString('hex')}.part`);
    const out = createWriteStream(temp, { mode: 0o600 });
    const sha256 = createHash('sha256');
    let bytes = 0;
    try {
      for await (const chunk of body) {
        bytes += chunk.length;
        this.inFlightBytes += chunk.length;
        if (bytes > limit) throw new FerryError('NAR_TOO_LARGE', `NAR exceeds the limit of ${limit} bytes`);
        if (full(0)) {
          throw new FerryError('SPOOL_FULL', `the upload spool is full (${this.options.maxSpoolBytes} bytes); retry later`);
        }
        sha256.update(chunk);
        if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', resolve));
      }
      out.end();
      await finished(out);
      const actual = encodeNixBase32(new Uint8Array(sha256.digest()));
      if (actual !== claimed) throw new FerryError('NAR_HASH_MISMATCH', `uploaded file hashes to sha256:${actual}, not the sha256:${claimed} its name claims`);
      renameSync(temp, target);
      this.consumed.delete(name);
      return { bytes };
    } catch (error) {
      out.destroy();
      rmSync(temp, { force: true });
      throw error;
    } finally {
      this.inFlightBytes -= bytes;
    }
  }

  /** Streams a spooled file. */
  read(name: string): AsyncIterable<Uint8Array> {
    return createReadStream(this.fileOf(name), { highWaterMark: 1024 * 1024 });
  }

  /** Marks a file as ingested: it is deleted after the grace period. */
  consume(name: string): void {
    this.consumed.set(name, Date.now());
  }

  private spooledBytes(): number {
    let total = 0;
    for (const entry of readdirSync(this.dir)) {
      if (!SPOOL_NAME_PATTERN.test(entry)) continue;
      try {
        total += statSync(path.join(this.dir, entry)).size;
      } catch {
        // deleted meanwhile
      }
    }
    return total;
  }

  private sweepIfDue(): void {
    if (Date.now() - this.lastSweep >= Math.min(this.options.consumedGraceMs, 60_000)) this.sweep();
  }

  /** Deletes consumed files past their grace period and files (or stalled uploads) unused for staleAfterMs. */
  sweep(): void {
    const now = Date.now();
    this.lastSweep = now;
    for (const [name, at] of this.consumed) {
      if (now - at >= this.options.consumedGraceMs) {
        rmSync(path.join(this.dir, name), { force: true });
        this.consumed.delete(name);
      }
    }
    let entries: string[];
    try {
      entries = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const entry of entries) {
      const file = path.join(this.dir, entry);
      try {
        if (now - statSync(file).mtimeMs >= this.options.staleAfterMs) rmSync(file, { force: true });
      } catch {
        // deleted meanwhile
      }
    }
  }
}
