/**
 * The strict streaming NAR decoder. It accepts exactly what Nix's own
 * serialiser produces and nothing else: a hostile NAR cannot escape the
 * directory it is unpacked into, alias an entry, exhaust memory, or smuggle
 * bytes past a hash check through an alternative encoding of the same tree.
 *
 * It is a synchronous push parser (chunks in, events out) wrapped in an
 * async generator: parsing tokens without an await per token is what keeps
 * it near `nix-store --dump` speed (bench/nar.bench.ts).
 */
import { NixError, type NixErrorCode } from '../errors.js';
import { DEFAULT_NAR_LIMITS, invalidNarNameReason, joinEntryPath, type NarEvent, type NarLimits } from './events.js';
import { NAR_MAGIC, paddingOf } from './tokens.js';

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** Fixed tokens are at most 13 bytes ('nix-archive-1'); anything longer is refused unread. */
const MAX_TOKEN_LENGTH = 16;

/** Thrown (and caught) when a header is not yet complete in the buffer: parsing restarts there with more bytes. */
const NEED_MORE = Symbol('need more bytes');

type ParserState =
  | { at: 'magic' }
  | { at: 'node'; path: string }
  | { at: 'contents'; path: string; remaining: number; size: number }
  | { at: 'file-tail'; path: string; size: number }
  | { at: 'entry' }
  | { at: 'node-end' }
  | { at: 'done' };

interface OpenDirectory {
  path: string;
  previousName: Uint8Array | undefined;
}

const STATE_DESCRIPTION: Record<ParserState['at'], string> = {
  magic: 'the NAR header',
  node: 'an entry header',
  contents: 'file contents',
  'file-tail': 'the end of a file',
  entry: 'a directory listing',
  'node-end': 'the end of an entry',
  done: '',
};

class NarParser {
  private buffer: Uint8Array = EMPTY;
  private position = 0;
  /** NAR offset of buffer[0]. */
  private base = 0;
  private state: ParserState = { at: 'magic' };
  private readonly directories: OpenDirectory[] = [];
  private entries = 0;
  private out: NarEvent[] = [];

  constructor(private readonly limits: NarLimits) {}

  private get offset(): number {
    return this.base + this.position;
  }

  private get currentPath(): string | undefined {
    const state = this.state;
    if ('path' in state) return state.path;
    return this.directories[this.directories.length - 1]?.path;
  }

  private fail(code: NixErrorCode, message: string, offset = this.offset, path = this.currentPath): never {
    throw new NixError(code, message, { offset, path });
  }

  // --- primitive reads: throw NEED_MORE when the buffer is short ---

  private readLength(what: string): number {
    const b = this.buffer;
    const p = this.position;
    if (p + 8 > b.length) throw NEED_MORE;
    const high = (b[p + 4]! | (b[p + 5]! << 8) | (b[p + 6]! << 16) | (b[p + 7]! << 24)) >>> 0;
    if (high > 0x1fffff) this.fail('NAR_LIMIT', `length of ${what} does not fit in 2^53`);
    const low = (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
    this.position = p + 8;
    return high * 2 ** 32 + low;
  }

  private checkPadding(from: number, length: number): void {
    const end = from + paddingOf(length);
    if (end > this.buffer.length) throw NEED_MORE;
    for (let i = from; i < end; i++) {
      if (this.buffer[i] !== 0) this.fail('NAR_BAD_PADDING', 'padding bytes are not zero', this.base + from);
    }
  }

  /** A string of at most `maxLength` bytes, as a view; a longer one is refused before its bytes arrive. */
  private readString(maxLength: number, what: string, code: NixErrorCode = 'NAR_LIMIT'): Uint8Array {
    const start = this.position;
    const length = this.readLength(what);
    if (length > maxLength) this.fail(code, `${what} is ${length} bytes, more than the limit of ${maxLength}`, this.base + start);
    const from = this.position;
    if (from + length > this.buffer.length) throw NEED_MORE;
    this.checkPadding(from + length, length);
    this.position = from + length + paddingOf(length);
    return this.buffer.subarray(from, from + length);
  }

  private readToken(): { token: string; offset: number } {
    const offset = this.offset;
    const bytes = this.readString(MAX_TOKEN_LENGTH, 'a token', 'NAR_UNEXPECTED_TOKEN');
    let token = '';
    for (const byte of bytes) token += String.fromCharCode(byte);
    return { token, offset };
  }

  private expect(expected: string): void {
    const { token, offset } = this.readToken();
    if (token !== expected) this.fail('NAR_UNEXPECTED_TOKEN', `expected '${expected}', found ${JSON.stringify(token)}`, offset);
  }

  private decodeText(bytes: Uint8Array, what: string, offset: number): string {
    try {
      return utf8.decode(bytes);
    } catch {
      return this.fail('NAR_BAD_NAME', `${what} is not valid UTF-8 (Ferry refuses non-UTF-8 names and targets)`, offset);
    }
  }

  // --- one step per state; each consumes a whole header or nothing ---

  private step(): void {
    const state = this.state;
    switch (state.at) {
      case 'magic': {
        const length = this.readLength('the NAR magic');
        if (length !== NAR_MAGIC.length) this.fail('NAR_BAD_MAGIC', `input is not a NAR (no '${NAR_MAGIC}' header)`, 0);
        this.position -= 8;
        const { token } = this.readToken();
        if (token !== NAR_MAGIC) this.fail('NAR_BAD_MAGIC', `input is not a NAR (no '${NAR_MAGIC}' header)`, 0);
        this.state = { at: 'node', path: '' };
        return;
      }
      case 'node':
        return this.nodeHeader(state.path);
      case 'contents': {
        const available = this.buffer.length - this.position;
        if (available === 0) throw NEED_MORE;
        const take = Math.min(available, state.remaining);
        this.out.push({ type: 'data', path: state.path, chunk: this.buffer.subarray(this.position, this.position + take) });
        this.position += take;
        state.remaining -= take;
        if (state.remaining === 0) this.state = { at: 'file-tail', path: state.path, size: state.size };
        return;
      }
      case 'file-tail':
        this.checkPadding(this.position, state.size);
        this.position += paddingOf(state.size);
        this.expect(')');
        this.out.push({ type: 'file-end', path: state.path });
        this.state = { at: 'node-end' };
        return;
      case 'entry':
        return this.directoryEntry();
      case 'node-end':
        if (this.directories.length === 0) {
          this.state = { at: 'done' };
          return;
        }
        this.expect(')');
        this.state = { at: 'entry' };
        return;
      case 'done':
        if (this.position < this.buffer.length) this.fail('NAR_TRAILING_DATA', 'unexpected bytes after the end of the NAR');
        throw NEED_MORE;
    }
  }

  private nodeHeader(path: string): void {
    const limits = this.limits;
    if (this.entries + 1 > limits.maxEntries) this.fail('NAR_LIMIT', `NAR has more than ${limits.maxEntries} entries`);
    this.expect('(');
    this.expect('type');
    const { token: type, offset: typeOffset } = this.readToken();
    if (type === 'regular') {
      let { token, offset } = this.readToken();
      let executable = false;
      if (token === 'executable') {
        executable = true;
        this.expect('');
        ({ token, offset } = this.readToken());
      }
      if (token !== 'contents') {
        this.fail('NAR_UNEXPECTED_TOKEN', `expected 'contents'${executable ? '' : " or 'executable'"}, found ${JSON.stringify(token)}`, offset);
      }
      const sizeOffset = this.offset;
      const size = this.readLength('file size');
      if (size > limits.maxFileSize) this.fail('NAR_LIMIT', `file is ${size} bytes, more than the limit of ${limits.maxFileSize}`, sizeOffset);
      this.entries++;
      this.out.push({ type: 'file', path, size, executable, offset: this.offset });
      this.state = size > 0 ? { at: 'contents', path, remaining: size, size } : { at: 'file-tail', path, size };
    } else if (type === 'symlink') {
      this.expect('target');
      const targetOffset = this.offset;
      const bytes = this.readString(limits.maxTargetLength, 'symlink target');
      if (bytes.length === 0) this.fail('NAR_BAD_SYMLINK', 'symlink target is empty', targetOffset);
      if (bytes.includes(0)) this.fail('NAR_BAD_SYMLINK', 'symlink target contains a NUL byte', targetOffset);
      const target = this.decodeText(bytes, 'symlink target', targetOffset);
      this.expect(')');
      this.entries++;
      this.out.push({ type: 'symlink', path, target });
      this.state = { at: 'node-end' };
    } else if (type === 'directory') {
      if (this.directories.length >= limits.maxDepth) this.fail('NAR_LIMIT', `directories are nested deeper than ${limits.maxDepth}`);
      this.entries++;
      this.out.push({ type: 'directory', path });
      this.directories.push({ path, previousName: undefined });
      this.state = { at: 'entry' };
    } else {
      this.fail('NAR_UNEXPECTED_TOKEN', `expected 'regular', 'symlink' or 'directory', found ${JSON.stringify(type)}`, typeOffset);
    }
  }

  private directoryEntry(): void {
    const directory = this.directories[this.directories.length - 1]!;
    const { token, offset } = this.readToken();
    if (token === ')') {
      this.directories.pop();
      this.out.push({ type: 'directory-end', path: directory.path });
      this.state = { at: 'node-end' };
      return;
    }
    if (token !== 'entry') this.fail('NAR_UNEXPECTED_TOKEN', `expected 'entry' or ')', found ${JSON.stringify(token)}`, offset);
    this.expect('(');
    this.expect('name');
    const nameOffset = this.offset;
    const nameBytes = this.readString(this.limits.maxNameLength, 'entry name');
    const name = this.decodeText(nameBytes, 'entry name', nameOffset);
    const invalid = invalidNarNameReason(name);
    if (invalid) this.fail('NAR_BAD_NAME', invalid, nameOffset);
    if (directory.previousName) {
      const order = Buffer.compare(directory.previousName, nameBytes);
      if (order === 0) this.fail('NAR_DUPLICATE', `entry '${name}' appears twice`, nameOffset);
      if (order > 0) this.fail('NAR_UNSORTED', `entry '${name}' comes after '${utf8.decode(directory.previousName)}' (names must be sorted)`, nameOffset);
    }
    this.expect('node');
    directory.previousName = nameBytes.slice();
    this.state = { at: 'node', path: joinEntryPath(directory.path, name) };
  }

  /** Parses as far as `chunk` allows; returns the events completed. */
  push(chunk: Uint8Array): NarEvent[] {
    if (this.base + this.buffer.length + chunk.length > this.limits.maxNarSize) {
      this.fail('NAR_LIMIT', `NAR is larger than the limit of ${this.limits.maxNarSize} bytes`, this.limits.maxNarSize);
    }
    if (this.position < this.buffer.length) {
      // An incomplete header spans the chunk boundary: join the (small) rest with the new chunk.
      const rest = this.buffer.subarray(this.position);
      const joined = new Uint8Array(rest.length + chunk.length);
      joined.set(rest);
      joined.set(chunk, rest.length);
      this.base += this.position;
      this.buffer = joined;
    } else {
      this.base += this.buffer.length;
      this.buffer = chunk;
    }
    this.position = 0;
    for (;;) {
      const checkpoint = this.position;
      try {
        this.step();
      } catch (error) {
        if (error !== NEED_MORE) throw error;
        this.position = checkpoint;
        break;
      }
    }
    const events = this.out;
    this.out = [];
    return events;
  }

  /** Called at the end of the input: refuses a NAR that is not complete. */
  finish(): void {
    if (this.state.at === 'done') return;
    if (this.state.at === 'magic') this.fail('NAR_BAD_MAGIC', 'input is not a NAR (too short)', 0);
    const missing = this.state.at === 'contents' ? ` (${this.state.remaining} of ${this.state.size} bytes missing)` : '';
    this.fail('NAR_TRUNCATED', `NAR ends in the middle of ${STATE_DESCRIPTION[this.state.at]}${missing}`, this.base + this.buffer.length);
  }
}

/**
 * Decodes a NAR stream into events. Strict: refuses (NixError with a NAR_*
 * code, the byte offset and the entry path) a wrong magic, unknown or
 * misplaced tokens, non-zero padding, entry names that are empty, `.`, `..`,
 * contain '/' or NUL or are not UTF-8, unsorted or duplicate names, empty
 * symlink targets, truncated input, trailing bytes, and anything beyond
 * `limits`. File contents are yielded as views of the input chunks as they
 * arrive, so memory stays bounded by the chunk size; events before an error
 * have already been yielded, so consumers must treat an error as "discard
 * everything".
 */
export async function* decodeNar(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, limits: Partial<NarLimits> = {}): AsyncGenerator<NarEvent> {
  const parser = new NarParser({ ...DEFAULT_NAR_LIMITS, ...limits });
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    for (const event of parser.push(chunk)) yield event;
  }
  parser.finish();
}
