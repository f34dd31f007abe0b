/**
 * The NAR as a stream of events: what the decoder produces, the encoder
 * consumes, and castore, `nar ls` and `nar restore` walk. Entry paths are
 * relative to the NAR's root ('' is the root itself), components joined by
 * '/'. Events arrive in NAR order: a directory's entries sorted by name,
 * each file's `data` chunks between its `file` and `file-end`.
 */
export type NarEvent =
  | { type: 'directory'; path: string }
  | { type: 'directory-end'; path: string }
  /** `offset` is the byte offset of the file's contents in the NAR (0 when unknown, e.g. while encoding). */
  | { type: 'file'; path: string; size: number; executable: boolean; offset: number }
  | { type: 'data'; path: string; chunk: Uint8Array }
  | { type: 'file-end'; path: string }
  | { type: 'symlink'; path: string; target: string };

/** Bounds that keep a hostile NAR from exhausting memory, disk or the stack. */
export interface NarLimits {
  /** Total NAR bytes. */
  maxNarSize: number;
  /** Bytes of one regular file. */
  maxFileSize: number;
  /** Total entries (files, directories and symlinks). */
  maxEntries: number;
  /** Directory nesting. */
  maxDepth: number;
  /** Bytes of one entry name (Linux NAME_MAX is 255). */
  maxNameLength: number;
  /** Bytes of one symlink target (Linux PATH_MAX is 4096 including the NUL). */
  maxTargetLength: number;
}

export const DEFAULT_NAR_LIMITS: Readonly<NarLimits> = Object.freeze({
  maxNarSize: Number.MAX_SAFE_INTEGER,
  maxFileSize: 64 * 1024 ** 3,
  maxEntries: 10_000_000,
  maxDepth: 256,
  maxNameLength: 255,
  maxTargetLength: 4095,
});

export function joinEntryPath(parent: string, name: string): string {
  return parent === '' ? name : `${parent}/${name}`;
}

export function entryBaseName(entryPath: string): string {
  return entryPath.slice(entryPath.lastIndexOf('/') + 1);
}

/**
 * Why `name` may not be a NAR entry name, or undefined if it may. Nix
 * refuses the same names: they would escape or alias the directory when
 * unpacked.
 */
export function invalidNarNameReason(name: string): string | undefined {
  if (name === '') return 'entry name is empty';
  if (name === '.' || name === '..') return `entry name '${name}' is not allowed`;
  if (name.includes('/')) return `entry name '${name}' contains '/'`;
  if (name.includes('\0')) return `entry name ${JSON.stringify(name)} contains a NUL byte`;
  return undefined;
}
