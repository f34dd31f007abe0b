/**
 * Store paths: `<storeDir>/<32 nix32 chars>-<name>`, validated as Nix does,
 * and computed from their inputs where Ferry needs to (content-addressed
 * paths).
 */
import { createHash } from 'node:crypto';
import nodePath from 'node:path';
import { encodeNixBase32 } from './base32.js';
import { NixError } from './errors.js';
import { formatNixHash, type NixHash } from './hash.js';

export const DEFAULT_STORE_DIR = '/nix/store';
export const STORE_PATH_HASH_LENGTH = 32;
const MAX_NAME_LENGTH = 211;
const HASH_PART = /^[0-9abcdfghijklmnpqrsvwxyz]{32}$/;
const NAME = /^[A-Za-z0-9+\-._?=]+$/;

declare const storePathBrand: unique symbol;
/**
 * A store path `<storeDir>/<32 nix32 chars>-<name>` that Nix itself would
 * accept. Only `parseStorePath` and `asStorePath` make one: the wire
 * schemas, the narinfo parser, the castore registry, bundles and the
 * agent's state all build it through them, so an unchecked string (`..`,
 * an empty name, a subpath) cannot reach code that turns it into a file.
 */
export type StorePath = string & { readonly [storePathBrand]: true };

export interface ParsedStorePath {
  storeDir: string;
  hashPart: string;
  name: string;
  /** The full path. */
  path: StorePath;
}

/** Why `name` is not a valid store path name, or undefined if it is. */
export function invalidStorePathNameReason(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the name is longer than ${MAX_NAME_LENGTH} characters`;
  if (name.startsWith('.')) return "the name starts with '.'";
  if (!NAME.test(name)) return 'the name has characters outside [A-Za-z0-9+-._?=]';
  return undefined;
}

/**
 * Parses a store path directly under `storeDir`. Refuses (BAD_STORE_PATH,
 * quoting the input and saying what is wrong) anything else: subpaths,
 * other directories, a hash part that is not 32 nix32 characters, or a name
 * Nix would refuse.
 */
export function parseStorePath(path: string, storeDir = DEFAULT_STORE_DIR): ParsedStorePath {
  const fail = (why: string): never => {
    const shown = typeof path === 'string' ? JSON.stringify(path.length > 256 ? `${path.slice(0, 256)}…` : path) : typeof path;
    throw new NixError('BAD_STORE_PATH', `${shown} is not a store path: ${why}`);
  };
  if (typeof path !== 'string') fail('not a string');
  if (!path.startsWith(`${storeDir}/`)) fail(`it is not in ${storeDir}`);
  const base = path.slice(storeDir.length + 1);
  if (base.includes('/')) fail('it is a path inside a store path, not a store path');
  const hashPart = base.slice(0, STORE_PATH_HASH_LENGTH);
  if (!HASH_PART.test(hashPart) || base[STORE_PATH_HASH_LENGTH] !== '-') fail('it does not start with a 32-character nix32 hash and a dash');
  const name = base.slice(STORE_PATH_HASH_LENGTH + 1);
  const invalid = invalidStorePathNameReason(name);
  if (invalid) fail(invalid);
  return { storeDir, hashPart, name, path: path as StorePath };
}

/** `value` as a StorePath in `storeDir`; refuses (BAD_STORE_PATH, saying why) anything parseStorePath refuses. */
export function asStorePath(value: string, storeDir = DEFAULT_STORE_DIR): StorePath {
  return parseStorePath(value, storeDir).path;
}

/**
 * Where the store path `storePath` (in Nix's `/nix/store`, as store paths
 * travel) lives in the local directory `localStoreDir` (an agent's store
 * dir, which tests and unprivileged agents put elsewhere). The one place a
 * store path becomes a file system path: it refuses (BAD_STORE_PATH)
 * anything that is not exactly `/nix/store/<hash>-<valid name>`, so the
 * result is always a direct child of `localStoreDir` — never the store dir
 * itself, its parent or a path inside another store path.
 */
export function storePathLocation(localStoreDir: string, storePath: string): string {
  const { hashPart, name } = parseStorePath(storePath, DEFAULT_STORE_DIR);
  return nodePath.join(localStoreDir, `${hashPart}-${name}`);
}

export function isStorePath(path: string, storeDir = DEFAULT_STORE_DIR): boolean {
  try {
    parseStorePath(path, storeDir);
    return true;
  } catch {
    return false;
  }
}

/** The store path basename (`<hash>-<name>`), as narinfo References list them. */
export function storePathBaseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * Splits a file system path inside the store into the store path and the
 * rest (`/nix/store/abc…-x/bin/y` -> `/nix/store/abc…-x`, `bin/y`), or
 * undefined when it is not inside a valid store path.
 */
export function splitStorePathPrefix(fsPath: string, storeDir = DEFAULT_STORE_DIR): { storePath: string; rest: string } | undefined {
  if (!fsPath.startsWith(`${storeDir}/`)) return undefined;
  const relative = fsPath.slice(storeDir.length + 1);
  const slash = relative.indexOf('/');
  const storePath = `${storeDir}/${slash === -1 ? relative : relative.slice(0, slash)}`;
  if (!isStorePath(storePath, storeDir)) return undefined;
  return { storePath, rest: slash === -1 ? '' : relative.slice(slash + 1).replace(/\/+$/, '') };
}

/** Nix's truncation of a SHA-256 to 160 bits: XOR-folding the 32 bytes into 20. */
function compressHash(digest: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < digest.length; i++) out[i % size]! ^= digest[i]!;
  return out;
}

/**
 * Nix's `makeStorePath`: the path of type `type` (e.g. `source`,
 * `output:out`, `text:<refs>`) whose inner hash is `innerSha256`.
 */
export function makeStorePath(type: string, innerSha256: Uint8Array, name: string, storeDir = DEFAULT_STORE_DIR): string {
  const invalid = invalidStorePathNameReason(name);
  if (invalid) throw new NixError('BAD_STORE_PATH', `cannot make a store path named '${name}': ${invalid}`);
  const fingerprint = `${type}:sha256:${Buffer.from(innerSha256).toString('hex')}:${storeDir}:${name}`;
  const digest = createHash('sha256').update(fingerprint).digest();
  return `${storeDir}/${encodeNixBase32(compressHash(digest, 20))}-${name}`;
}

function typeWithReferences(type: string, references: readonly string[]): string {
  return [type, ...[...references].sort()].join(':');
}

/**
 * The path of a fixed-output / content-addressed store object, as
 * `nix-store --add`, `--add-fixed` and `builtins.path` compute it:
 * recursive sha256 is a `source` path (references allowed), anything else
 * `output:out` over `fixed:out:[r:]<algo>:<base16>:`.
 */
export function makeFixedOutputPath(
  method: 'flat' | 'recursive',
  hash: NixHash,
  name: string,
  references: readonly string[] = [],
  storeDir = DEFAULT_STORE_DIR,
): string {
  if (method === 'recursive' && hash.algorithm === 'sha256') {
    return makeStorePath(typeWithReferences('source', references), hash.digest, name, storeDir);
  }
  if (references.length > 0) throw new NixError('BAD_STORE_PATH', 'only recursive sha256 content-addressed paths may have references');
  const inner = `fixed:out:${method === 'recursive' ? 'r:' : ''}${formatNixHash(hash, 'base16')}:`;
  return makeStorePath('output:out', createHash('sha256').update(inner).digest(), name, storeDir);
}

/** The path of a text file added with `builtins.toFile` / `nix-store --add` of text with references. */
export function makeTextPath(name: string, contentSha256: Uint8Array, references: readonly string[] = [], storeDir = DEFAULT_STORE_DIR): string {
  return makeStorePath(typeWithReferences('text', references), contentSha256, name, storeDir);
}
