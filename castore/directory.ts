/**
 * Directory objects and their canonical encoding (specified in
 * docs/castore.md). A directory is a list of entries sorted by the bytes of
 * their UTF-8 names; its id is the BLAKE3 hash of the encoding. Because the
 * encoding is canonical, equal trees have equal ids, and per-file dedup
 * across store paths and versions comes for free.
 *
 * Encoding (little-endian):
 *   u8  version = 1
 *   u32 entry count
 *   per entry, sorted strictly by name bytes:
 *     u8  kind: 0 file, 1 executable file, 2 directory, 3 symlink
 *     u16 name length, name bytes (UTF-8; not empty, '.', '..'; no '/' or NUL; <= 255 bytes)
 *     kind 0/1/2: 32-byte digest, u64 size
 *     kind 3:     u16 target length (1..4096), target bytes (no NUL)
 */
import { blake3 } from './blake3/index.js';
import { CastoreError } from './errors.js';
import { digestFromBytes, digestToBytes, type Digest, type Entry } from './node.js';

const VERSION = 1;
const KIND_FILE = 0;
const KIND_EXECUTABLE = 1;
const KIND_DIRECTORY = 2;
const KIND_SYMLINK = 3;
export const MAX_NAME_BYTES = 255;
export const MAX_TARGET_BYTES = 4096;
/** A directory with more entries than this is refused (a NAR allows more, no real store path has them). */
export const MAX_DIRECTORY_ENTRIES = 1_000_000;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Why `name` cannot be a directory entry name, or undefined when it can. */
export function invalidEntryNameReason(name: string): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name === '.' || name === '..') return `name '${name}' is reserved`;
  if (name.includes('/')) return `name '${name}' contains '/'`;
  if (name.includes('\0')) return 'name contains NUL';
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `name longer than ${MAX_NAME_BYTES} bytes`;
  return undefined;
}

function compareNames(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

/** Number of nodes below a directory, recursively: the `size` of a directory node pointing to it. */
export function directorySize(entries: readonly Entry[]): number {
  let size = 0;
  for (const entry of entries) size += 1 + (entry.type === 'directory' ? entry.size : 0);
  return size;
}

/**
 * Encodes a directory canonically. Entries may come in any order; they are
 * sorted here. Refuses invalid or duplicate names and invalid symlink
 * targets with DIRECTORY_NOT_CANONICAL.
 */
export function encodeDirectory(entries: readonly Entry[]): Uint8Array {
  if (entries.length > MAX_DIRECTORY_ENTRIES) {
    throw new CastoreError('DIRECTORY_NOT_CANONICAL', `directory has ${entries.length} entries (limit ${MAX_DIRECTORY_ENTRIES})`);
  }
  const named = entries.map((entry) => ({ entry, name: Buffer.from(entry.name, 'utf8') }));
  named.sort((a, b) => compareNames(a.name, b.name));
  let length = 5;
  for (let i = 0; i < named.length; i++) {
    const { entry, name } = named[i]!;
    const reason = invalidEntryNameReason(entry.name);
    if (reason) throw new CastoreError('DIRECTORY_NOT_CANONICAL', `invalid entry: ${reason}`);
    if (i > 0 && compareNames(named[i - 1]!.name, name) === 0) {
      throw new CastoreError('DIRECTORY_NOT_CANONICAL', `duplicate entry name '${entry.name}'`);
    }
    length += 3 + name.length;
    if (entry.type === 'symlink') {
      const target = Buffer.byteLength(entry.target);
      if (target === 0 || target > MAX_TARGET_BYTES || entry.target.includes('\0')) {
        throw new CastoreError('DIRECTORY_NOT_CANONICAL', `symlink '${entry.name}' has an invalid target`);
      }
      length += 2 + target;
    } else {
      length += 40;
    }
  }
  const out = Buffer.alloc(length);
  out.writeUInt8(VERSION, 0);
  out.writeUInt32LE(named.length, 1);
  let at = 5;
  for (const { entry, name } of named) {
    const kind =
      entry.type === 'file' ? (entry.executable ? KIND_EXECUTABLE : KIND_FILE) : entry.type === 'directory' ? KIND_DIRECTORY : KIND_SYMLINK;
    out.writeUInt8(kind, at);
    out.writeUInt16LE(name.length, at + 1);
    name.copy(out, at + 3);
    at += 3 + name.length;
    if (entry.type === 'symlink') {
      const written = out.write(entry.target, at + 2, 'utf8');
      out.writeUInt16LE(written, at);
      at += 2 + written;
    } else {
      out.set(digestToBytes(entry.digest), at);
      out.writeBigUInt64LE(BigInt(entry.size), at + 32);
      at += 40;
    }
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Decodes a directory encoding. Refuses anything that is not exactly the
 * canonical encoding of its entries (unsorted or duplicate names, invalid
 * names or targets, unknown kinds, sizes beyond 2^53, truncated input,
 * trailing bytes, invalid UTF-8) with DIRECTORY_NOT_CANONICAL naming the
 * byte offset, so a decoded directory always re-encodes to the same bytes.
 */
export function decodeDirectory(bytes: Uint8Array, id?: Digest): Entry[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (message: string, offset: number): never => {
    throw new CastoreError('DIRECTORY_NOT_CANONICAL', message, { offset, objectId: id });
  };
  const need = (at: number, n: number): void => {
    if (at + n > buf.length) fail(`truncated directory (needs ${n} more bytes)`, at);
  };
  need(0, 5);
  if (buf.readUInt8(0) !== VERSION) fail(`unknown directory encoding version ${buf.readUInt8(0)}`, 0);
  const count = buf.readUInt32LE(1);
  if (count > MAX_DIRECTORY_ENTRIES) fail(`directory claims ${count} entries (limit ${MAX_DIRECTORY_ENTRIES})`, 1);
  const entries: Entry[] = [];
  let at = 5;
  let previous: Buffer | undefined;
  for (let i = 0; i < count; i++) {
    const entryAt = at;
    need(at, 3);
    const kind = buf.readUInt8(at);
    const nameLength = buf.readUInt16LE(at + 1);
    at += 3;
    need(at, nameLength);
    const nameBytes = buf.subarray(at, at + nameLength);
    let name = '';
    try {
      name = utf8.decode(nameBytes);
    } catch {
      fail('entry name is not valid UTF-8', at);
    }
    const reason = invalidEntryNameReason(name);
    if (reason) fail(`invalid entry: ${reason}`, at);
    if (previous && compareNames(previous, nameBytes) >= 0) {
      fail(`entry '${name}' is not strictly after '${previous.toString('utf8')}' (unsorted or duplicate)`, entryAt);
    }
    previous = nameBytes;
    at += nameLength;
    if (kind === KIND_SYMLINK) {
      need(at, 2);
      const targetLength = buf.readUInt16LE(at);
      at += 2;
      if (targetLength === 0 || targetLength > MAX_TARGET_BYTES) fail(`symlink '${name}' has a target of ${targetLength} bytes`, at - 2);
      need(at, targetLength);
      let target = '';
      try {
        target = utf8.decode(buf.subarray(at, at + targetLength));
      } catch {
        fail(`symlink '${name}' target is not valid UTF-8`, at);
      }
      if (target.includes('\0')) fail(`symlink '${name}' target contains NUL`, at);
      entries.push({ type: 'symlink', name, target });
      at += targetLength;
    } else if (kind === KIND_FILE || kind === KIND_EXECUTABLE || kind === KIND_DIRECTORY) {
      need(at, 40);
      const digest = digestFromBytes(buf.subarray(at, at + 32));
      const size = buf.readBigUInt64LE(at + 32);
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) fail(`entry '${name}' size ${size} is beyond 2^53`, at + 32);
      at += 40;
      if (kind === KIND_DIRECTORY) entries.push({ type: 'directory', name, digest, size: Number(size) });
      else entries.push({ type: 'file', name, digest, size: Number(size), executable: kind === KIND_EXECUTABLE });
    } else {
      fail(`unknown entry kind ${kind}`, entryAt);
    }
  }
  if (at !== buf.length) fail(`${buf.length - at} trailing bytes after the last entry`, at);
  return entries;
}

/** The id of a directory encoding: BLAKE3-256 of its bytes. */
export function directoryId(encoding: Uint8Array): Digest {
  return digestFromBytes(blake3(encoding));
}
