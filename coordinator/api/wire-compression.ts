/**
 * The coordinator's side of zstd on the wire (protocol/compression/wire.ts,
 * docs/data-plane.md "Compression on the wire"): compressed forms are
 * computed once and kept in an LRU bounded by bytes, shared by the QUIC
 * and HTTP transports, so a rollout to 20 agents compresses each blob once,
 * not 20 times.
 *
 * Why a cache and not compressed forms at rest in the packs: a rollout
 * fetches the same closure from many agents within minutes, which an LRU
 * of a few hundred MiB covers, while storing compressed forms would change
 * the castore's pack format and its fsck and GC, and spend disk on every
 * blob ever pushed, most of which are fetched by few agents or none. The
 * cache also keeps verdicts: a blob that does not compress is remembered
 * as such (a few bytes), and is then sent raw without trying again.
 *
 * Keys: a batched blob by its id; a frame of a large blob by
 * `<id>@<offset>`, for frames aligned on WIRE_FRAME_BYTES (the first,
 * shorter frame of a segment that starts elsewhere, a resume, is
 * compressed for that request only).
 */
import type { LocalCastore, Digest } from '../../castore/index.js';
import { WIRE_FRAME_BYTES, WIRE_MAX_COMPRESSED_SEGMENT_BYTES, WIRE_MAX_RATIO, zstdForWire, zstdRawFrame, zstdRawFrameSize } from '../../protocol/compression/wire.js';
import type { Coordinator } from '../coordinator.js';

/** Default bound of the cache of compressed forms. */
export const WIRE_CACHE_BYTES = 256 * 1024 * 1024;
/** What an entry costs besides its bytes (key, map slot), so verdicts are bounded too. */
const ENTRY_OVERHEAD_BYTES = 160;

export interface WireCompressionStats {
  /** Times the compressor ran (one blob, or one frame of a large blob). */
  compressions: number;
  /** Uncompressed bytes those runs took in. */
  bytesCompressed: number;
  /** Blobs and frames served from the cache (a frame or a "does not compress" verdict). */
  hits: number;
}

/** An LRU of zstd frames (or `null`: does not compress) by key, bounded by bytes. */
export class WireCompressionCache {
  private readonly entries = new Map<string, Uint8Array | null>();
  private bytes = 0;
  readonly stats: WireCompressionStats = { compressions: 0, bytesCompressed: 0, hits: 0 };

  constructor(readonly maxBytes = WIRE_CACHE_BYTES) {}

  /**
   * The zstd frame of `bytes`, or undefined when they do not shrink by 10%
   * (send them raw). With a `key`, computed once while the entry stays
   * cached; without one, computed for this caller only.
   */
  frameOf(key: string | undefined, bytes: () => Uint8Array): Uint8Array | undefined {
    if (key !== undefined) {
      const cached = this.entries.get(key);
      if (cached !== undefined) {
        this.entries.delete(key);
        this.entries.set(key, cached);
        this.stats.hits++;
        return cached ?? undefined;
      }
    }
    const input = bytes();
    this.stats.compressions++;
    this.stats.bytesCompressed += input.length;
    const frame = zstdForWire(input) ?? null;
    if (key !== undefined) this.put(key, frame);
    return frame ?? undefined;
  }

  /** Whether `key` is cached (a frame or a verdict). */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  private put(key: string, frame: Uint8Array | null): void {
    const cost = (frame?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
    if (cost > this.maxBytes / 4) return;
    this.entries.set(key, frame);
    this.bytes += cost;
    for (const [oldest, value] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= (value?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
    }
  }
}

const caches = new WeakMap<Coordinator, WireCompressionCache | null>();

/** The coordinator's cache, shared by its transports; null when CoordinatorOptions.wireCompression is false. */
export function wireCompressionOf(coordinator: Coordinator): WireCompressionCache | null {
  let cache = caches.get(coordinator);
  if (cache === undefined) {
    const option = coordinator.wireCompression;
    cache = option === false ? null : new WireCompressionCache(option === true ? WIRE_CACHE_BYTES : (option.cacheBytes ?? WIRE_CACHE_BYTES));
    caches.set(coordinator, cache);
  }
  return cache;
}

/** Whether a request's `accept` list lets this coordinator send zstd. */
export function acceptsZstd(accept: readonly string[] | undefined): boolean {
  return accept?.includes('zstd') ?? false;
}

/** Whether a `blobs.get` request lets this coordinator send the batch as one zstd frame. */
export function acceptsZstdBatch(accept: readonly string[] | undefined): boolean {
  return accept?.includes('zstd-batch') ?? false;
}

/**
 * A large blob's segment [offset, offset + length) as independent zstd
 * frames (protocol/data-protocol.ts, `blob.get`): the frames' total size
 * and their bytes, or undefined when the segment would not shrink by 10%
 * or is longer than WIRE_MAX_COMPRESSED_SEGMENT_BYTES (send it raw). Frames that do not compress go as raw-block frames,
 * built from the stored bytes without compressing.
 */
export async function compressedSegment(
  cache: WireCompressionCache,
  store: LocalCastore,
  id: Digest,
  size: number,
  offset: number,
  length: number,
): Promise<{ wireLength: number; frames: AsyncIterable<Uint8Array> } | undefined> {
  const end = offset + length;
  if (length > WIRE_MAX_COMPRESSED_SEGMENT_BYTES) return undefined;
  const pieces: { start: number; length: number; frame: Uint8Array | undefined }[] = [];
  let wireLength = 0;
  for (let start = offset; start < end; ) {
    const pieceEnd = Math.min(end, (Math.floor(start / WIRE_FRAME_BYTES) + 1) * WIRE_FRAME_BYTES);
    const aligned = start % WIRE_FRAME_BYTES === 0 && (pieceEnd - start === WIRE_FRAME_BYTES || pieceEnd === size);
    const key = aligned ? `${id}@${start}` : undefined;
    let raw: Uint8Array | undefined;
    if (key === undefined || !cache.has(key)) raw = await store.readBlobRange(id, start, pieceEnd - start);
    const frame = cache.frameOf(key, () => raw!);
    // Only frames are held until the reply is sent: pieces that go raw are read again then.
    pieces.push({ start, length: pieceEnd - start, frame });
    wireLength += frame ? frame.length : zstdRawFrameSize(pieceEnd - start);
    start = pieceEnd;
  }
  if (wireLength > length * WIRE_MAX_RATIO) return undefined;
  async function* frames(): AsyncGenerator<Uint8Array> {
    for (const piece of pieces) {
      if (piece.frame) yield piece.frame;
      else yield zstdRawFrame(await store.readBlobRange(id, piece.start, piece.length));
    }
  }
  return { wireLength, frames: frames() };
}
