/**
 * File tree -> NAR events, as `nix-store --dump` serialises a path. It uses
 * synchronous file system calls on purpose: a closure is mostly thousands
 * of small files, and a thread-pool round trip per stat and read made the
 * asynchronous version many times slower than Nix (bench/README.md, "NAR
 * codec").
 */
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import path from 'node:path';
import { NixError } from '../errors.js';
import { encodeNar } from './encode.js';
import { joinEntryPath, type NarEvent } from './events.js';

const READ_CHUNK = 1024 * 1024;
const SMALL_FILE = 64 * 1024;

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

async function* fileEvents(fsPath: string, entryPath: string, size: number, executable: boolean): AsyncGenerator<NarEvent> {
  yield { type: 'file', path: entryPath, size, executable, offset: 0 };
  if (size <= SMALL_FILE) {
    const bytes = readFileSync(fsPath);
    if (bytes.length !== size) throw new NixError('NAR_TRUNCATED', `'${fsPath}' changed size while being read`, { path: entryPath });
    if (size > 0) yield { type: 'data', path: entryPath, chunk: bytes };
  } else {
    const fd = openSync(fsPath, 'r');
    try {
      let position = 0;
      while (position < size) {
        // A fresh buffer per chunk: the consumer may keep it (the encoder passes large chunks through).
        const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK, size - position));
        const bytesRead = readSync(fd, buffer, 0, buffer.length, position);
        if (bytesRead === 0) throw new NixError('NAR_TRUNCATED', `'${fsPath}' shrank while being read`, { path: entryPath });
        position += bytesRead;
        yield { type: 'data', path: entryPath, chunk: buffer.subarray(0, bytesRead) };
      }
    } finally {
      closeSync(fd);
    }
  }
  yield { type: 'file-end', path: entryPath };
}

async function* pathEvents(fsPath: string, entryPath: string): AsyncGenerator<NarEvent> {
  const stat = lstatSync(fsPath);
  if (stat.isSymbolicLink()) {
    yield { type: 'symlink', path: entryPath, target: readlinkSync(fsPath) };
  } else if (stat.isFile()) {
    yield* fileEvents(fsPath, entryPath, stat.size, (stat.mode & 0o100) !== 0);
  } else if (stat.isDirectory()) {
    yield { type: 'directory', path: entryPath };
    const names = readdirSync(fsPath).sort(byteOrder);
    for (const name of names) yield* pathEvents(path.join(fsPath, name), joinEntryPath(entryPath, name));
    yield { type: 'directory-end', path: entryPath };
  } else {
    throw new NixError('NAR_UNSUPPORTED_FILE', `'${fsPath}' is not a regular file, directory or symlink (NAR cannot hold it)`, { path: entryPath });
  }
}

/**
 * NAR events of the file tree at `fsPath` (not following a top-level
 * symlink, as Nix does). Executable = the owner's execute bit. Refuses
 * sockets, devices and FIFOs (NAR_UNSUPPORTED_FILE) and files that change
 * size while being read.
 */
export function dumpPathEvents(fsPath: string): AsyncGenerator<NarEvent> {
  return pathEvents(fsPath, '');
}

/** The NAR bytes of the file tree at `fsPath`, identical to `nix-store --dump`. */
export function dumpPath(fsPath: string): AsyncGenerator<Uint8Array> {
  return encodeNar(dumpPathEvents(fsPath));
}
