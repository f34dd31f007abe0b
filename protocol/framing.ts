/**
 * Framing of data-plane requests and responses, the same on a QUIC stream
 * and in an HTTP body: a 4-byte big-endian length, that many bytes of UTF-8
 * JSON (the header, validated by zod on receipt), then an optional binary
 * body whose length the header implies. A frame that is too long, not
 * JSON, nested too deep (json-bounds.ts), or cut short fails with a
 * FrameError; on QUIC it closes only its own stream.
 */
import { FerryError } from './errors.js';
import { jsonBoundsViolation, MAX_JSON_DEPTH } from './json-bounds.js';

export type FrameErrorCode = 'FRAME_TOO_LARGE' | 'FRAME_NOT_JSON' | 'FRAME_TRUNCATED' | 'FRAME_TRAILING_BYTES' | 'JSON_TOO_DEEP';

/** A refused frame. Its own class because the data client retries FRAME_TRUNCATED (a cut stream) by type. */
export class FrameError extends FerryError {
  override readonly name = 'FrameError';
  declare readonly code: FrameErrorCode;
  constructor(code: FrameErrorCode, message: string) {
    super(code, message);
  }
}

/** Encodes a header frame: length prefix + JSON. */
export function encodeHeaderFrame(header: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(json.length);
  return Buffer.concat([prefix, json]);
}

/**
 * Parses a header frame's JSON bytes: FRAME_NOT_JSON if they are not UTF-8
 * JSON, JSON_TOO_DEEP if the value nests deeper than `maxDepth` (default
 * MAX_JSON_DEPTH; the same code the HTTP API uses). The depth is checked
 * before the value is returned, so nothing recursive (zod, JSON.stringify)
 * ever walks an over-deep header; the size is bounded before parsing, by
 * the frame length (readHeaderBytes).
 */
export function parseHeaderJson(bytes: Uint8Array, maxDepth = MAX_JSON_DEPTH): unknown {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new FrameError('FRAME_NOT_JSON', 'frame header is not UTF-8 JSON');
  }
  const violation = jsonBoundsViolation(value, { maxDepth });
  if (violation) throw new FrameError('JSON_TOO_DEEP', `frame header ${violation.message}`);
  return value;
}

/**
 * Reads frames and exact byte counts from a stream of chunks, holding at
 * most one chunk beyond what was asked for.
 */
export class FrameReader {
  private readonly iterator: AsyncIterator<Uint8Array>;
  private pending: Uint8Array = new Uint8Array(0);
  private ended = false;
  /** Bytes consumed so far (for error messages). */
  offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.iterator.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    // Only called once `pending` is used up.
    this.pending = next.value;
    return true;
  }

  /**
   * Exactly `length` bytes; FRAME_TRUNCATED if the stream ends first. A
   * view of the chunk they arrived in when they are all in one, else a
   * copy of just these bytes (never of the rest of the next chunk).
   */
  async readExact(length: number, what = 'frame'): Promise<Uint8Array> {
    if (this.pending.length >= length) return this.take(length);
    const out = new Uint8Array(length);
    let filled = 0;
    for (;;) {
      const part = this.take(Math.min(this.pending.length, length - filled));
      out.set(part, filled);
      filled += part.length;
      if (filled === length) return out;
      if (!(await this.fill())) {
        throw new FrameError('FRAME_TRUNCATED', `stream ended inside the ${what} at byte ${this.offset} (${length - filled} bytes missing)`);
      }
    }
  }

  private take(length: number): Uint8Array {
    const out = this.pending.subarray(0, length);
    this.pending = this.pending.subarray(length);
    this.offset += length;
    return out;
  }

  /**
   * The next header frame's JSON bytes (what an HTTP request signature
   * covers); FRAME_TOO_LARGE past `maxBytes`, which each side names
   * (MAX_REQUEST_HEADER_BYTES, MAX_REPLY_HEADER_BYTES in data-protocol.ts).
   */
  async readHeaderBytes(maxBytes: number): Promise<Uint8Array> {
    const prefix = await this.readExact(4, 'frame length');
    const length = Buffer.from(prefix.buffer, prefix.byteOffset, 4).readUInt32BE(0);
    if (length > maxBytes) throw new FrameError('FRAME_TOO_LARGE', `frame header of ${length} bytes exceeds the limit of ${maxBytes}`);
    return this.readExact(length, 'frame header');
  }

  /** The next header frame as parsed JSON (not yet schema-validated). */
  async readHeader(maxBytes: number): Promise<unknown> {
    return parseHeaderJson(await this.readHeaderBytes(maxBytes));
  }

  /** Streams the next `length` bytes in the chunks they arrive in. */
  async *readChunks(length: number, what = 'body'): AsyncGenerator<Uint8Array> {
    let left = length;
    while (left > 0) {
      if (this.pending.length === 0 && !(await this.fill())) {
        throw new FrameError('FRAME_TRUNCATED', `stream ended inside the ${what} (${left} of ${length} bytes missing)`);
      }
      const take = Math.min(left, this.pending.length);
      const out = this.pending.subarray(0, take);
      this.pending = this.pending.subarray(take);
      this.offset += take;
      left -= take;
      yield out;
    }
  }

  /** Streams every byte left, to the end of the stream (a body whose length its header does not state). */
  async *readRest(): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.pending.length === 0 && !(await this.fill())) return;
      const out = this.pending;
      this.pending = new Uint8Array(0);
      this.offset += out.length;
      yield out;
    }
  }

  /** Abandons the rest of the stream (its source is cancelled: a reply being sent is aborted). */
  async cancel(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.iterator.return?.();
  }

  /** Refuses bytes after the last expected one. */
  async expectEnd(): Promise<void> {
    if (this.pending.length > 0 || (await this.fill())) {
      throw new FrameError('FRAME_TRAILING_BYTES', `unexpected bytes after the end of the message at byte ${this.offset}`);
    }
  }
}
