/**
 * zstd on the data plane's wire (docs/data-plane.md, "Compression on the
 * wire"): what a sender does to one blob or one large-blob segment, and
 * what a receiver does to undo it, bounded by the size the header
 * declares. BLAKE3 is never computed here: receivers verify the
 * uncompressed bytes exactly as they would raw ones.
 */
import { compress } from 'zstd-napi';
import { DecompressError } from './decompress-error.js';
import { zstdDecompress } from './zstd.js';

/** How a blob (blobs.get, upload.blobs) or a segment (blob.get) travels: as it is, or as zstd frames. */
export type WireEncoding = 'identity' | 'zstd';

/**
 * The encodings a client can name in `accept`, best first: `zstd` (blobs
 * and segments compressed each on its own) and `zstd-batch` (a `blobs.get`
 * batch compressed as one frame: small files share their context, smaller
 * than each alone on the realistic corpus: bench/README.md, "Shaped links").
 */
export const WIRE_ENCODINGS = ['zstd', 'zstd-batch'] as const;

/** zstd level on the wire: fast enough to compress once per blob (the coordinator caches; bench/README.md, "Figures behind code comments"). */
export const WIRE_ZSTD_LEVEL = 3;

/**
 * `blobs.stream` (a large fetch as one reply, one zstd stream): level and
 * window, measured on the realistic corpus (bench/README.md, "Figures
 * behind code comments"): one stream at level 9 is clearly smaller than files or
 * batches compressed alone, and larger windows gain little. Level 9
 * compresses faster than a 100 Mbit/s link carries at that ratio, and runs
 * once per closure (the coordinator keeps the stream on disk,
 * blob-stream-cache.ts); 32 MiB is what every agent decompressing it must
 * hold, so the window stays there.
 */
export const WIRE_STREAM_LEVEL = 9;
export const WIRE_STREAM_WINDOW_LOG = 25;
/**
 * The level a prepared `blobs.stream` is compressed at again, in the
 * background, once its level-9 form exists (coordinator/api/blob-stream-cache.ts).
 * Same corpus, same 32 MiB window (bench/README.md, "Figures behind code
 * comments"): level 19, zstd's optimal parser, is some 11% smaller than level 9 at
 * many times the CPU and memory. That margin decides a cold deploy on a slow
 * link, and it is paid once per closure; what Nix caches do with xz or zstd
 * -19.
 * Receivers decompress it as fast as level 9 and hold the same window.
 */
export const WIRE_STREAM_REFINED_LEVEL = 19;
/**
 * A fetch moves its blobs as one stream when they add up to at least this
 * (below it, batches: a stream's first bytes wait for compression, and
 * small changes are few files).
 */
export const WIRE_STREAM_MIN_BYTES = 32 * 1024 * 1024;

/**
 * A blob or segment travels compressed only if that saves at least 10%:
 * zstd of already-compressed data (images, .gz, most of a Go binary's
 * debug info) saves nothing and still costs the receiver a pass.
 */
export const WIRE_MAX_RATIO = 0.9;

/**
 * Large blobs (blob.get) travel as independent zstd frames of this many
 * bytes of the blob (64 BLAKE3 groups), each starting at a multiple of it
 * in the blob, except the first frame of a segment that starts elsewhere
 * (a resume at a group boundary), which ends at the next multiple. No frame
 * needs bytes sent before it, so a resume at any 16 KiB group boundary
 * needs nothing earlier, and the aligned frames are what the coordinator
 * caches.
 */
export const WIRE_FRAME_BYTES = 1024 * 1024;

/**
 * The longest `blob.get` segment sent compressed (what clients ask for,
 * LARGE_BLOB_SEGMENT_BYTES): its frames are computed before the reply's
 * header, so a longer segment (a client asking for a whole large blob)
 * would hold that much per request. Longer segments go as they are,
 * streamed.
 */
export const WIRE_MAX_COMPRESSED_SEGMENT_BYTES = 16 * 1024 * 1024;

/** One zstd frame of `bytes`, or undefined when it would not save 10% (send them as they are). */
export function zstdForWire(bytes: Uint8Array, level = WIRE_ZSTD_LEVEL): Uint8Array | undefined {
  if (bytes.length < 64) return undefined;
  const frame = compress(bytes, { compressionLevel: level });
  return frame.length <= bytes.length * WIRE_MAX_RATIO ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength) : undefined;
}

/** Raw blocks of a zstd frame hold at most this (ZSTD_BLOCKSIZE_MAX). */
const ZSTD_RAW_BLOCK_MAX = 128 * 1024;

/** The size of zstdRawFrame(bytes) for `length` bytes. */
export function zstdRawFrameSize(length: number): number {
  return 4 + 1 + 4 + 3 * Math.max(1, Math.ceil(length / ZSTD_RAW_BLOCK_MAX)) + length;
}

/**
 * `bytes` as a zstd frame of raw (stored) blocks, built without running
 * the compressor: for the frames of a compressed segment that do not
 * compress. Layout (RFC 8878): magic, a frame header descriptor saying
 * single segment with a 4-byte content size, the size, then blocks of at
 * most 128 KiB, each a 3-byte header (last flag, type 0 = raw, size) and
 * the bytes.
 */
export function zstdRawFrame(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(zstdRawFrameSize(bytes.length));
  const view = new DataView(out.buffer);
  view.setUint32(0, 0xfd2fb528, true);
  out[4] = 0xa0;
  view.setUint32(5, bytes.length, true);
  let at = 9;
  let offset = 0;
  do {
    const size = Math.min(ZSTD_RAW_BLOCK_MAX, bytes.length - offset);
    const last = offset + size === bytes.length ? 1 : 0;
    const header = last | (size << 3);
    out[at] = header & 0xff;
    out[at + 1] = (header >> 8) & 0xff;
    out[at + 2] = (header >> 16) & 0xff;
    out.set(bytes.subarray(offset, offset + size), at + 3);
    at += 3 + size;
    offset += size;
  } while (offset < bytes.length);
  return out;
}

/**
 * Decompresses the zstd frames of `source` into exactly `size` bytes,
 * yielding them as they come (at most ZSTD_OUTPUT_STEP_BYTES at a time).
 * Refuses, by throwing DecompressError from the iterator:
 * DECOMPRESS_OUTPUT_LIMIT past `size` bytes (a declared size too small, a
 * bomb: at most `size + 1` bytes are ever produced), DECOMPRESS_CORRUPT for
 * bytes that are not zstd, DECOMPRESS_TRUNCATED for input ending inside a
 * frame or frames that end before `size` bytes (a declared size too large).
 */
export async function* unzstdExact(source: AsyncIterable<Uint8Array>, size: number, what: string): AsyncGenerator<Uint8Array> {
  let produced = 0;
  for await (const chunk of zstdDecompress(source, { maxOutputBytes: size, what })) {
    produced += chunk.length;
    yield chunk;
  }
  if (produced !== size) throw new DecompressError('DECOMPRESS_TRUNCATED', 'zstd', what, `${what} decompresses to ${produced} bytes, not the ${size} its header declares`, size);
}

/** unzstdExact of one buffer, into one buffer of `size` bytes. */
export async function unzstdWhole(frames: Uint8Array, size: number, what: string): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let at = 0;
  for await (const chunk of unzstdExact((async function* () { yield frames; })(), size, what)) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
