/**
 * The NAR encoder: events in, NAR bytes out. Small pieces (tokens, names,
 * small files) are coalesced into 64 KiB output chunks; large file chunks
 * pass through without a copy. The encoder checks the event sequence as it
 * goes, so it can never emit an invalid NAR.
 */
import { NixError } from '../errors.js';
import { entryBaseName, invalidNarNameReason, type NarEvent } from './events.js';
import { encodeNarString, paddingOf, T } from './tokens.js';

const OUTPUT_CHUNK = 64 * 1024;
/** Data chunks at least this big are passed through rather than copied. */
const PASS_THROUGH = 16 * 1024;
const ZEROS = new Uint8Array(8);

class OutputBuffer {
  private buffer = new Uint8Array(OUTPUT_CHUNK);
  private length = 0;
  readonly ready: Uint8Array[] = [];

  write(bytes: Uint8Array): void {
    if (bytes.length >= PASS_THROUGH) {
      this.flush();
      this.ready.push(bytes);
      return;
    }
    if (this.length + bytes.length > this.buffer.length) this.flush();
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }

  writeLength(value: number): void {
    if (this.length + 8 > this.buffer.length) this.flush();
    const b = this.buffer;
    const at = this.length;
    const high = Math.floor(value / 2 ** 32);
    b[at] = value & 0xff;
    b[at + 1] = (value >>> 8) & 0xff;
    b[at + 2] = (value >>> 16) & 0xff;
    b[at + 3] = (value >>> 24) & 0xff;
    b[at + 4] = high & 0xff;
    b[at + 5] = (high >>> 8) & 0xff;
    b[at + 6] = (high >>> 16) & 0xff;
    b[at + 7] = (high >>> 24) & 0xff;
    this.length += 8;
  }

  flush(): void {
    if (this.length === 0) return;
    this.ready.push(this.buffer.subarray(0, this.length));
    this.buffer = new Uint8Array(OUTPUT_CHUNK);
    this.length = 0;
  }
}

interface OpenDirectory {
  path: string;
  lastName: Buffer | undefined;
}

/**
 * Encodes NAR events into NAR bytes. Refuses (NixError) a sequence that is
 * not a well-formed NAR: entries outside their directory or out of order,
 * invalid names, data that disagrees with the declared file size, events
 * after the root ends or a missing end. Output chunks are never reused, so
 * consumers may keep them.
 */
export async function* encodeNar(events: AsyncIterable<NarEvent> | Iterable<NarEvent>): AsyncGenerator<Uint8Array> {
  const out = new OutputBuffer();
  const directories: OpenDirectory[] = [];
  let file: { path: string; remaining: number; size: number } | undefined;
  let rootDone = false;
  const refuse: (message: string, path: string) => never = (message, path) => {
    throw new NixError('NAR_UNEXPECTED_TOKEN', `cannot encode NAR: ${message}`, { path });
  };

  /** Writes what precedes a node: the magic for the root, the entry header inside a directory. */
  const beginNode = (path: string): void => {
    if (rootDone) refuse('event after the end of the root', path);
    if (file) refuse(`entry begins inside file '${file.path}'`, path);
    const parent = directories[directories.length - 1];
    if (!parent) {
      if (path !== '') refuse('the root entry must have the path ""', path);
      out.write(T.magic);
      return;
    }
    const name = entryBaseName(path);
    const expectedPath = parent.path === '' ? name : `${parent.path}/${name}`;
    if (path !== expectedPath) refuse(`entry is not a child of the open directory '${parent.path}'`, path);
    const invalid = invalidNarNameReason(name);
    if (invalid) refuse(invalid, path);
    const nameBytes = Buffer.from(name);
    if (parent.lastName && Buffer.compare(parent.lastName, nameBytes) >= 0) refuse('entries are not in sorted order', path);
    parent.lastName = nameBytes;
    out.write(T.entryName);
    out.write(encodeNarString(nameBytes));
    out.write(T.node);
  };
  /** Writes what follows a node: the entry's closing parenthesis inside a directory. */
  const endNode = (): void => {
    if (directories.length === 0) rootDone = true;
    else out.write(T.close);
  };

  for await (const event of events) {
    switch (event.type) {
      case 'directory':
        beginNode(event.path);
        out.write(T.directory);
        directories.push({ path: event.path, lastName: undefined });
        break;
      case 'directory-end': {
        const open = directories.pop();
        if (!open || open.path !== event.path || file) refuse('directory-end does not match an open directory', event.path);
        out.write(T.close);
        endNode();
        break;
      }
      case 'file':
        beginNode(event.path);
        if (!Number.isSafeInteger(event.size) || event.size < 0) refuse(`invalid file size ${event.size}`, event.path);
        out.write(T.regular);
        if (event.executable) out.write(T.executable);
        out.write(T.contents);
        out.writeLength(event.size);
        file = { path: event.path, remaining: event.size, size: event.size };
        break;
      case 'data':
        if (!file || file.path !== event.path) refuse('data outside its file', event.path);
        if (event.chunk.length > file.remaining) refuse(`more data than the declared ${file.size} bytes`, event.path);
        file.remaining -= event.chunk.length;
        out.write(event.chunk);
        break;
      case 'file-end':
        if (!file || file.path !== event.path) refuse('file-end without its file', event.path);
        if (file.remaining !== 0) refuse(`file ended ${file.remaining} bytes short of its declared ${file.size}`, event.path);
        out.write(ZEROS.subarray(0, paddingOf(file.size)));
        out.write(T.close);
        file = undefined;
        endNode();
        break;
      case 'symlink': {
        beginNode(event.path);
        const target = Buffer.from(event.target);
        if (target.length === 0 || target.includes(0)) refuse('symlink target is empty or contains NUL', event.path);
        out.write(T.symlink);
        out.write(encodeNarString(target));
        out.write(T.close);
        endNode();
        break;
      }
    }
    if (out.ready.length > 0) yield* out.ready.splice(0);
  }
  if (!rootDone) refuse('events ended before the root entry was complete', '');
  out.flush();
  yield* out.ready.splice(0);
}
