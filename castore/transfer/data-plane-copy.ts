/**
 * The data plane's fast paths for the verified copy (copy-closure.ts), the
 * BulkCopySource a RemoteCastore offers: directories 1,024 to a request;
 * small blobs in batches (zstd when the client compresses), a cold
 * deploy's blobs as one zstd stream, large blobs segment by segment
 * verified group by group against their outboard (a corrupt group is
 * caught where it is, and the transfer resumes from the last verified
 * group), and group deltas against previous versions a local target
 * holds (group-delta.ts). Every blob is verified before it is staged or
 * handed to a sink; corrupt bytes are retried as transport faults.
 */
import { DataClient, DataError, TransportError } from '../../protocol/data-client.js';
import { DecompressError } from '../../protocol/compression/decompress-error.js';
import { unzstdExact, unzstdWhole, WIRE_MAX_COMPRESSED_SEGMENT_BYTES, WIRE_STREAM_MIN_BYTES, type WireEncoding } from '../../protocol/compression/wire.js';
import { FrameReader } from '../../protocol/framing.js';
import { MAX_BATCH_OBJECTS, MAX_BATCHED_BLOB_BYTES, MAX_QUERY_ITEMS, MAX_STREAM_BYTES } from '../../protocol/data-protocol.js';
import { BlobVerifier, blake3 } from '../blake3/index.js';
import { directoryId } from '../directory.js';
import { CastoreError } from '../errors.js';
import { digestFromBytes, digestToBytes, type Digest, type FileNode } from '../node.js';
import type { BlobWriter } from '../services/blob-service.js';
import { batchBlobs, TRANSFER_BATCH_BYTES } from './batches.js';
import type { BulkBlobJob, BulkCopyOutcome, BulkCopySource, SharedIngest, SmallBlobSink } from './copy-closure.js';
import { deltaBatches, fetchGroupDeltaBatch, type DeltaPair } from './group-delta.js';
import { streamOrder } from './stream-order.js';
import { runPool } from './pool.js';

/**
 * Corrupt bytes are retried (from the last verified group), as a transport
 * fault, not a final error; so are compressed bytes that do not decompress
 * to the declared size (DecompressError), which are bytes corrupt too.
 */
function retryable(error: unknown): never {
  if (
    (error instanceof CastoreError && (error.code === 'BLAKE3_GROUP_MISMATCH' || error.code === 'BLAKE3_OUTBOARD_MISMATCH' || error.code === 'BLOB_CORRUPT')) ||
    error instanceof DecompressError
  ) {
    throw new TransportError(`${error.message}; retrying from the last verified group`);
  }
  throw error;
}

/** Refuses (DataError BAD_RESPONSE) a compressed reply not asked for, or one larger than the bytes it stands for. */
function checkEncoding(client: DataClient, encoding: 'identity' | 'zstd', wireSize: number | undefined, size: number, what: string): void {
  if (encoding === 'identity') return;
  if (!client.compression) throw new DataError('BAD_RESPONSE', `the coordinator sent ${what} ${encoding}-encoded, which was not asked for`);
  if (wireSize === undefined || wireSize > size) throw new DataError('BAD_RESPONSE', `the coordinator sent ${what} as ${wireSize} bytes of ${encoding} for ${size} bytes`);
}

type Sink = SmallBlobSink['accept'] | undefined;

/** Fetches small blobs in one request; each is verified whole before it is staged (or, with a sink, handed to it instead). */
async function fetchBlobBatch(client: DataClient, ingest: SharedIngest, blobs: readonly FileNode[], onBytes: (bytes: number) => void, sink: Sink): Promise<void> {
  const bytes = blobs.reduce((sum, blob) => sum + blob.size, 0);
  await ingest.use(bytes, (session) =>
    client.call(
      { op: 'blobs.get', ids: blobs.map((blob) => blob.digest), ...(client.accept ? { accept: client.accept } : {}) },
      {
        consume: async (reply) => {
          if (reply.header.blobs.length !== blobs.length) throw new TransportError(`the coordinator sent ${reply.header.blobs.length} blobs for ${blobs.length}`);
          const batch = reply.header.batch;
          let batchBytes: Uint8Array | undefined;
          if (batch) {
            if (reply.header.blobs.some((meta) => meta.encoding !== 'identity' || meta.outboardSize !== 0)) throw new DataError('BAD_RESPONSE', 'the coordinator sent a batch frame of blobs encoded on their own');
            checkEncoding(client, batch.encoding, batch.wireSize, bytes, 'a batch of blobs');
            // Bounded by the sizes asked for; each blob is then verified whole as below.
            batchBytes = await unzstdWhole(await reply.body.readExact(batch.wireSize, 'batch frame'), bytes, 'batch frame').catch(retryable);
          }
          let batchAt = 0;
          for (const [index, meta] of reply.header.blobs.entries()) {
            const wanted = blobs[index]!;
            if (meta.id !== wanted.digest || meta.size !== wanted.size) throw new TransportError(`the coordinator sent ${meta.id} (${meta.size} bytes) where ${wanted.digest} was asked for`);
            checkEncoding(client, meta.encoding, meta.wireSize, meta.size, `blob ${meta.id}`);
            await reply.body.readExact(meta.outboardSize, `outboard of ${meta.id}`);
            let data: Uint8Array;
            if (batchBytes) {
              data = batchBytes.subarray(batchAt, batchAt + meta.size);
              batchAt += meta.size;
            } else if (meta.encoding === 'zstd') {
              const wire = await reply.body.readExact(meta.wireSize!, `blob ${meta.id}`);
              // Bounded by the declared size; the result is then verified whole like raw bytes.
              data = await unzstdWhole(wire, meta.size, `blob ${meta.id}`).catch(retryable);
            } else {
              data = await reply.body.readExact(meta.size, `blob ${meta.id}`);
            }
            if (!sink) {
              // The writer hashes small blobs anyway, and refuses bytes that do not hash to the id before staging them.
              await session.putBlobBytes(data, meta.id).catch(retryable);
            } else {
              if (digestFromBytes(blake3(data)) !== meta.id) {
                retryable(new CastoreError('BLOB_CORRUPT', `blob ${meta.id} arrived with bytes that hash to something else`, { objectId: meta.id }));
              }
              await sink(meta.id, data);
            }
          }
          await reply.body.expectEnd();
          onBytes(bytes);
        },
      },
    ),
  );
}

/**
 * Sees the wire bytes of a `blobs.stream` reply as they arrive: a site
 * relay keeps its upstream's stream to serve the same bytes to its agents
 * (relay/stream-recordings.ts). `begin` is called for a request that asks
 * a whole run of blobs (not the rest after a cut); it may decline
 * (undefined).
 */
export interface StreamTap {
  begin(ids: readonly Digest[], size: number, encoding: WireEncoding): StreamTapRecording | undefined;
}

/** One reply as a StreamTap sees it. */
export interface StreamTapRecording {
  append(chunk: Uint8Array): void;
  /** The reply arrived whole, and every blob in it verified. */
  complete(): void;
  /** The reply was cut, refused or carried a blob that did not verify: what was appended is worth nothing. */
  fail(error: Error): void;
}

export interface DataPlaneBulkCopyOptions {
  /**
   * Reads a blob's outboard (checked against its id). When set, each large
   * blob of a stream is verified group by group against its outboard,
   * read before the stream: a corrupt byte is caught within 16 KiB, not at
   * the blob's end (a site relay's streams, which it only passes on).
   */
  streamOutboards?: (id: Digest) => Promise<Uint8Array>;
  /** Sees each stream's wire bytes (a relay's upstream copy). */
  streamTap?: StreamTap;
}

/** Outboards read at once before a stream (each a small request). */
const OUTBOARDS_IN_FLIGHT = 8;

/**
 * Fetches `blobs` as one `blobs.stream` reply, zstd when the client
 * compresses (one stream: files share their context); each blob is
 * verified as it completes (or, with `streamOutboards`, a large one group
 * by group) and staged (or handed to the sink), so a cut stream keeps what
 * arrived, and the retry asks for the rest only. Returns the blobs it did
 * not fetch because the source refused `blobs.stream` (INVALID: a
 * coordinator from before it, or a relay without this stream), for the
 * caller to fetch in batches; an empty list when all came.
 */
async function fetchBlobStream(client: DataClient, ingest: SharedIngest, blobs: readonly FileNode[], onBytes: (bytes: number) => void, sink: Sink, options: DataPlaneBulkCopyOptions): Promise<FileNode[]> {
  const received = new Set<Digest>();
  const rest = () => blobs.filter((blob) => !received.has(blob.digest));
  try {
    const outboards = new Map<Digest, Uint8Array>();
    const readOutboard = options.streamOutboards;
    if (readOutboard) {
      const large = blobs.filter((blob) => blob.size > MAX_BATCHED_BLOB_BYTES);
      await runPool(large, OUTBOARDS_IN_FLIGHT, async (blob) => void outboards.set(blob.digest, await readOutboard(blob.digest)));
    }
    await client.call(() => ({ op: 'blobs.stream', ids: rest().map((blob) => blob.digest), ...(client.accept ? { accept: client.accept } : {}) }), {
      consume: async (reply) => {
        const wanted = rest();
        const size = wanted.reduce((sum, blob) => sum + blob.size, 0);
        if (reply.header.size !== size) throw new TransportError(`the coordinator streams ${reply.header.size} bytes for blobs of ${size}`);
        if (reply.header.encoding !== 'identity' && !client.compression) throw new DataError('BAD_RESPONSE', `the coordinator sent a ${reply.header.encoding} stream, which was not asked for`);
        const recording = received.size === 0 ? options.streamTap?.begin(wanted.map((blob) => blob.digest), size, reply.header.encoding) : undefined;
        try {
          const wire = reply.header.encoding === 'zstd' ? reply.body.readRest() : reply.body.readChunks(size, 'blob stream');
          const tapped = recording ? teeInto(wire, recording) : wire;
          // zstd: decompressed to exactly `size` bytes at most (the sizes come from verified directories).
          const bytes = new FrameReader(reply.header.encoding === 'zstd' ? unzstdExact(tapped, size, 'blob stream') : tapped);
          try {
            for (const blob of wanted) {
              if (blob.size <= MAX_BATCHED_BLOB_BYTES) {
                const data = await bytes.readExact(blob.size, `blob ${blob.digest}`);
                if (digestFromBytes(blake3(data)) !== blob.digest) throw new CastoreError('BLOB_CORRUPT', `blob ${blob.digest} arrived with bytes that hash to something else`, { objectId: blob.digest });
                if (sink) await sink(blob.digest, data);
                else await ingest.use(blob.size, (session) => session.putBlobBytes(data, blob.digest));
              } else {
                const outboard = outboards.get(blob.digest);
                await ingest.use(blob.size, async (session) => {
                  // With its outboard: verified per group before it is written (and not hashed again);
                  // without: hashed as written, and `finish` refuses (and drops) bytes that are not the blob.
                  const verifier = outboard && new BlobVerifier(digestToBytes(blob.digest), blob.size, outboard, { objectId: blob.digest });
                  const writer = session.blobWriter(blob.size, blob.digest, outboard);
                  try {
                    for await (const chunk of bytes.readChunks(blob.size, `blob ${blob.digest}`)) {
                      if (!verifier) writer.write(chunk);
                      else for (const verified of verifier.push(chunk)) writer.write(verified);
                    }
                    verifier?.finish();
                    writer.finish();
                  } catch (error) {
                    writer.discard();
                    throw error;
                  }
                });
              }
              received.add(blob.digest);
              onBytes(blob.size);
            }
            await bytes.expectEnd();
          } catch (error) {
            retryable(error);
          }
          await reply.body.expectEnd();
        } catch (error) {
          recording?.fail(error as Error);
          throw error;
        }
        recording?.complete();
      },
    });
  } catch (error) {
    // A source that does not serve this stream (a coordinator from before blobs.stream, a relay without it): the rest in batches.
    if (error instanceof DataError && error.code === 'INVALID') return rest();
    throw error;
  }
  return [];
}

/** `chunks`, each handed to `recording` as it passes. */
async function* teeInto(chunks: AsyncIterable<Uint8Array>, recording: StreamTapRecording): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    recording.append(chunk);
    yield chunk;
  }
}

/**
 * A large blob is asked for in segments of this size, one after the other:
 * the QUIC library buffers whatever is sent until it is read, so a 1 GiB
 * file sent in one go could sit in memory while it is verified. No more
 * than the coordinator sends compressed (WIRE_MAX_COMPRESSED_SEGMENT_BYTES).
 */
export const LARGE_BLOB_SEGMENT_BYTES = WIRE_MAX_COMPRESSED_SEGMENT_BYTES;

/**
 * Fetches one large blob segment by segment, the outboard only with the
 * first; resumes after a dropped connection or a corrupt group from the
 * last verified group.
 */
async function fetchLargeBlob(client: DataClient, ingest: SharedIngest, blob: FileNode, onBytes: (bytes: number) => void): Promise<void> {
  await ingest.use(blob.size, async (session) => {
    let writer: BlobWriter | undefined;
    let verifier: BlobVerifier | undefined;
    let verifiedBytes = 0;
    try {
      while (verifiedBytes < blob.size || !verifier) {
        await client.call(() => ({ op: 'blob.get', id: blob.digest, offset: verifiedBytes, length: LARGE_BLOB_SEGMENT_BYTES, outboard: verifier === undefined, ...(client.accept ? { accept: client.accept } : {}) }), {
          consume: async (reply) => {
            const expected = Math.min(LARGE_BLOB_SEGMENT_BYTES, blob.size - verifiedBytes);
            if (reply.header.size !== blob.size || reply.header.offset !== verifiedBytes || reply.header.length !== expected) {
              throw new TransportError(`the coordinator sent blob ${blob.digest} from ${reply.header.offset}, ${reply.header.length} of its ${reply.header.size} bytes`);
            }
            checkEncoding(client, reply.header.encoding, reply.header.wireLength, expected, `blob ${blob.digest} from ${verifiedBytes}`);
            try {
              if (!verifier) {
                const outboard = await reply.body.readExact(reply.header.outboardSize, `outboard of ${blob.digest}`);
                // Checks the outboard against the id; then every byte written is verified against it,
                // so the store keeps it rather than hashing the blob again.
                verifier = new BlobVerifier(digestToBytes(blob.digest), blob.size, outboard, { objectId: blob.digest });
                writer = session.blobWriter(blob.size, blob.digest, new Uint8Array(outboard));
              } else if (reply.header.outboardSize !== 0) {
                throw new TransportError(`the coordinator sent an outboard for blob ${blob.digest} that was not asked for`);
              }
              // A retry starts again after the last group this side has written.
              verifier.rewindTo(verifiedBytes);
              // zstd: independent frames from this offset on, decompressed to at most `expected` bytes, then verified group by group as raw ones.
              const chunks =
                reply.header.encoding === 'zstd'
                  ? unzstdExact(reply.body.readChunks(reply.header.wireLength!, `blob ${blob.digest}`), expected, `blob ${blob.digest} from ${verifiedBytes}`)
                  : reply.body.readChunks(expected, `blob ${blob.digest}`);
              for await (const chunk of chunks) {
                for (const verified of verifier.push(chunk)) {
                  writer!.write(verified);
                  verifiedBytes += verified.length;
                  onBytes(verified.length);
                }
              }
              if (verifiedBytes === blob.size) verifier.finish();
            } catch (error) {
              retryable(error);
            }
            await reply.body.expectEnd();
          },
        });
      }
      writer!.finish();
    } catch (error) {
      writer?.discard();
      throw error;
    }
  });
}


/** Directories asked for in one `directories.get`. */
const DIRECTORIES_PER_REQUEST = 1024;

/** The data plane's bulk reads (see the module comment), over a connected client that stays the caller's. */
export class DataPlaneBulkCopy implements BulkCopySource {
  readonly directoriesPerRequest = DIRECTORIES_PER_REQUEST;

  constructor(
    private readonly client: DataClient,
    private readonly options: DataPlaneBulkCopyOptions = {},
  ) {}

  /** Retries (as a transport fault) a directory that does not hash to its id; the copy checks and decodes it again. */
  async getDirectories(ids: readonly Digest[]): Promise<Uint8Array[]> {
    return this.client.call(
      { op: 'directories.get', ids: [...ids] },
      {
        consume: async (reply) => {
          const received: Uint8Array[] = [];
          if (reply.header.directories.length !== ids.length) throw new TransportError(`the coordinator sent ${reply.header.directories.length} directories for ${ids.length}`);
          for (const [index, meta] of reply.header.directories.entries()) {
            if (meta.id !== ids[index]) throw new TransportError(`the coordinator sent directory ${meta.id} where ${ids[index]} was asked for`);
            const bytes = new Uint8Array(await reply.body.readExact(meta.size, `directory ${meta.id}`));
            if (directoryId(bytes) !== meta.id) throw new TransportError(`directory ${meta.id} arrived corrupt; retrying`);
            received.push(bytes);
          }
          await reply.body.expectEnd();
          return received;
        },
      },
    );
  }

  /**
   * Deltas where the target has a basis (and the normalized blobs asked as
   * deltas, staged in the target only), a cold deploy as one stream, the
   * rest in batches and large blobs alone.
   */
  async copyBlobs(job: BulkBlobJob): Promise<BulkCopyOutcome> {
    const client = this.client;
    const deltaPairs = job.deltas?.pairs ?? [];
    const inDelta = new Set(deltaPairs.map((pair) => pair.target.digest));
    const whole = job.blobs.filter((blob) => !inDelta.has(blob.digest));
    const outcome: BulkCopyOutcome = { deltaBlobs: 0, deltaGroupBytes: 0, normalized: new Set(), normalizedGroupBytes: 0 };
    const fetchWhole = async (blobs: FileNode[]): Promise<void> => {
      if (blobs.length === 1 && blobs[0]!.size > MAX_BATCHED_BLOB_BYTES) await fetchLargeBlob(client, job.ingest, blobs[0]!, job.onBytes);
      else await fetchBlobBatch(client, job.ingest, blobs, job.onBytes, job.smallBlobs);
      job.onObjects(blobs.length);
    };
    const wholeJobs = (blobs: readonly FileNode[]) => batchBlobs(blobs, { largeOver: MAX_BATCHED_BLOB_BYTES, maxObjects: MAX_BATCH_OBJECTS / 4, maxBytes: TRANSFER_BATCH_BYTES });
    /** Blobs the coordinator declined to send as deltas, or whose delta did not verify: fetched whole at the end. */
    const declined: FileNode[] = [];
    const fetchDeltas = async (batch: DeltaPair[], normalized: boolean): Promise<void> => {
      const bytes = batch.reduce((sum, pair) => sum + pair.target.size, 0);
      const result = await job.ingest.use(bytes, (session) =>
        fetchGroupDeltaBatch(client, job.deltas!.basis, batch, {
          largeWriter: (blob, outboard) => session.blobWriter(blob.size, blob.digest, outboard),
          small: async (blob, data) => {
            // A normalized blob is no file of the closure: the target keeps it, the sink never sees it.
            if (job.smallBlobs && !normalized) await job.smallBlobs(blob.digest, data);
            else await session.putBlobBytes(data, blob.digest);
          },
        }),
      );
      if (normalized) {
        const missed = new Set(result.whole.map((blob) => blob.digest));
        for (const pair of batch) if (!missed.has(pair.target.digest)) outcome.normalized.add(pair.target.digest);
        outcome.normalizedGroupBytes += result.groupBytes;
      } else {
        outcome.deltaBlobs += result.assembled;
        outcome.deltaGroupBytes += result.groupBytes;
        declined.push(...result.whole);
      }
      job.onObjects(batch.length - result.whole.length);
      job.onBytes(bytes - result.whole.reduce((sum, blob) => sum + blob.size, 0));
    };
    let batched = whole;
    const large = whole.reduce((sum, blob) => sum + blob.size, 0) >= (job.streamMinBytes ?? WIRE_STREAM_MIN_BYTES);
    // Over QUIC, the data plane's transport for bulk (a client may send small fetches over a warm HTTPS connection).
    if (large) client.startBulkTransfer();
    let streamed: FileNode[] = [];
    if (large) {
      const wholeIds = new Set(whole.map((blob) => blob.digest));
      streamed = streamOrder(job.storePaths, job.readDirectory).filter((blob) => wholeIds.has(blob.digest));
      const inStream = new Set(streamed.map((blob) => blob.digest));
      // What no stream carries (an empty blob) goes in a batch.
      batched = whole.filter((blob) => !inStream.has(blob.digest));
      // Not compressing (loopback): batches, in the stream's order; a stream is for what zstd carries.
      if (!client.compression) {
        batched = [...streamed, ...batched];
        streamed = [];
      }
    }
    // A large fetch (a cold deploy) as one stream first: it fills the link on its own.
    if (streamed.length > 0) {
      // Runs a `blobs.stream` request may carry.
      const parts = batchBlobs(streamed, { largeOver: MAX_STREAM_BYTES, maxObjects: MAX_QUERY_ITEMS, maxBytes: MAX_STREAM_BYTES });
      for (const [index, part] of parts.entries()) {
        const refused = await fetchBlobStream(client, job.ingest, part, job.onBytes, job.smallBlobs, this.options);
        job.onObjects(part.length - refused.length);
        if (refused.length > 0) {
          // First, in the stream's order: from a relay, what it has just received.
          batched = [...refused, ...parts.slice(index + 1).flat(), ...batched];
          break;
        }
      }
    }
    // Deltas and whole batches side by side: a small change is one round trip, not two.
    const jobs = [
      ...deltaBatches(job.deltas?.normalized ?? []).map((batch) => ({ deltas: batch, normalized: true })),
      ...deltaBatches(deltaPairs).map((batch) => ({ deltas: batch, normalized: false })),
      ...wholeJobs(batched).map((blobs) => ({ whole: blobs })),
    ];
    await runPool(jobs, job.parallel, (next) => ('deltas' in next ? fetchDeltas(next.deltas, next.normalized) : fetchWhole(next.whole)));
    await runPool(wholeJobs(declined), job.parallel, fetchWhole);
    return outcome;
  }
}
