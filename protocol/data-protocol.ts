/**
 * The data plane's messages: one request per stream (QUIC) or per POST
 * (HTTP), each a header frame (see framing.ts) and an optional binary body.
 * These schemas are the single source of the wire types: the coordinator
 * validates requests with them, clients validate responses with them.
 * A refused request is answered with one header frame, no body:
 * `{ error: { code, message } }` (ErrorBodySchema in errors.ts; codes from
 * its ErrorCode enum, the same as the HTTP API's).
 *
 * Bodies carry castore objects back to back, in header order:
 * - `directories.get` response, `upload.directories` request: each
 *   directory's canonical encoding (`size` bytes);
 * - `blob.get` response: the outboard (`outboardSize` bytes), then the
 *   blob's bytes from `offset` (`length` bytes);
 * - `blobs.get` response: per blob, its bytes (blobs of at most
 *   MAX_BATCHED_BLOB_BYTES, 1 MiB, verified whole; the `outboardSize` field is 0);
 * - `upload.blobs` request: each blob's bytes;
 * - `blobs.delta` request: per blob, `basisGroups` chaining values of 32
 *   bytes; response: per blob, the bytes of the groups its `runs` name;
 * - `blobs.stream` response: every blob's bytes back to back, to the end
 *   of the stream (`identity`), or one zstd stream of them (`zstd`, window
 *   at most 2^WIRE_STREAM_WINDOW_LOG) that runs to the end of the reply
 *   and decompresses to exactly `size` bytes. Receivers know each blob's
 *   size from its file node and verify each whole.
 * Receivers verify every object against its BLAKE3 id before using it.
 *
 * Compression on the wire (zstd; compression/wire.ts, docs/data-plane.md):
 * a client that says `accept: ['zstd']` in `blobs.get` or `blob.get` may
 * get bytes compressed; one that does not gets exactly the bytes above,
 * and headers without `encoding` fields. BLAKE3 is always over the
 * uncompressed bytes: compression changes what travels, not what is
 * verified.
 * - `blobs.get` response: a blob with `encoding: 'zstd'` is `wireSize`
 *   bytes (after its outboard, still none) of zstd frames decompressing to
 *   exactly `size` bytes, which are then verified whole as before; other
 *   blobs of the same reply may be `identity` (`size` bytes as they are):
 *   the coordinator sends raw what does not shrink by 10% (WIRE_MAX_RATIO).
 * - `blobs.get` response with `batch` (a client whose `accept` has
 *   `zstd-batch`): the body is one zstd frame of `batch.wireSize` bytes
 *   decompressing to exactly the blobs' bytes back to back, each then
 *   verified whole; files of a batch share their compression context.
 * - `blob.get` response with `encoding: 'zstd'`: after the outboard,
 *   `wireLength` bytes of independent zstd frames, one per WIRE_FRAME_BYTES
 *   (1 MiB, 64 groups) of the blob: frame k holds blob bytes
 *   [k·1 MiB, (k+1)·1 MiB) clipped to [offset, offset + length), so a
 *   segment starting at a group boundary that is not a frame boundary (a
 *   resume) starts with a shorter frame, and no frame needs earlier bytes.
 *   They decompress to exactly `length` bytes, verified per 16 KiB group
 *   against the outboard as they come. A frame that does not compress is
 *   sent as zstd raw blocks; a segment that would not shrink by 10% is sent
 *   `identity`.
 * - `upload.blobs` request: a blob with `encoding: 'zstd'` (`wireSize` at
 *   most `size`) is `wireSize` bytes of zstd frames (a batched blob: one
 *   frame; a large one: frames of WIRE_FRAME_BYTES as in `blob.get`); the
 *   coordinator decompresses at most `size` bytes and verifies their
 *   BLAKE3 as for raw ones.
 * - `blobs.delta` response: a blob with `encoding: 'zstd'` is `wireSize`
 *   bytes of one zstd frame of its sent groups (decompressing to exactly
 *   their total length); `identity`: those bytes as they are.
 * Decompression is bounded by the declared uncompressed size: a frame
 * producing more is refused (DECOMPRESS_OUTPUT_LIMIT) as soon as it passes
 * it, one producing less (DECOMPRESS_TRUNCATED) or not zstd
 * (DECOMPRESS_CORRUPT) too; nothing of a refused upload is stored.
 */
import { z } from 'zod';
import { DigestSchema } from './castore-node.js';
import { ConfigIdSchema, SystemSchema } from './config.js';
import { KeyIdSchema } from './identity.js';
import { StorePathInfoSchema, StorePathSchema } from './store-path-info.js';

/**
 * Encodings a client accepts (`['zstd']`); names this coordinator does not
 * know are ignored, so later clients can list more.
 */
const AcceptSchema = z.array(z.string().max(32)).max(8).optional();
const WireEncodingSchema = z.enum(['identity', 'zstd']);

export { COORDINATOR_TLS_NAME } from './tls-pinning.js';
/** ALPN of Ferry's raw QUIC protocol. */
export const FERRY_ALPN = 'ferry/1';
/**
 * ALPN of a relay's QUIC (relay/relay-server.ts): no session auth; each
 * stream starts with a frame of the headers the same request would carry
 * over HTTPS (its signature, the grant), checked per request as there. Its
 * own name, so a client speaking one to a peer of the other fails at the
 * handshake, not on a frame it misreads.
 */
export const RELAY_ALPN = 'ferry-relay/1';
/** Blob ranges start at multiples of BLAKE3 chunk groups (16 KiB): the unit of verification. */
export const TRANSFER_GROUP_SIZE = 16 * 1024;
/**
 * Blobs up to this size travel many to a request (blobs.get, upload.blobs)
 * and are verified whole on arrival; larger ones travel alone (blob.get)
 * and are verified per 16 KiB group against their outboard, with resume.
 */
export const MAX_BATCHED_BLOB_BYTES = 1024 * 1024;
/**
 * `blobs.delta` (group-level dedup against a previous version, see
 * castore/transfer/group-delta.ts): blobs per request, and basis chaining
 * values per request (32 bytes each: 2 MiB of request body at most).
 */
export const MAX_DELTA_BLOBS = 1024;
export const MAX_DELTA_GROUPS = 65_536;
/** Bytes of one group chaining value in a `blobs.delta` request body. */
export const DELTA_CV_BYTES = 32;
/** Bounds of one batch request. */
export const MAX_BATCH_OBJECTS = 4096;
export const MAX_BATCH_BYTES = 64 * 1024 * 1024;
export const MAX_QUERY_ITEMS = 20_000;
/** Bytes of blobs one `blobs.stream` reply carries at most (a client splits a larger fetch). */
export const MAX_STREAM_BYTES = 4 * 1024 * 1024 * 1024;
/** Store paths registered per `upload.storePaths` request (keeps its header well under MAX_REQUEST_HEADER_BYTES). */
export const MAX_REGISTER_PATHS = 5_000;
/**
 * `blobs.templates` (reference-aware blobs, docs/castore.md): ids per
 * request, and the largest template record a reply may carry (a record
 * holds at most 65,536 sites and their hash parts: castore/references/template-record.ts).
 */
export const MAX_TEMPLATE_QUERY = 1024;
export const MAX_TEMPLATE_RECORD_BYTES = 4 * 1024 * 1024;
/** Request headers the coordinator accepts (a missing-query of 2 x 20,000 ids is ~2.7 MB). */
export const MAX_REQUEST_HEADER_BYTES = 8 * 1024 * 1024;
/** Reply headers a client accepts (the manifest of a large closure). */
export const MAX_REPLY_HEADER_BYTES = 64 * 1024 * 1024;


export const DATA_REQUESTS = {
  /** Starts a QUIC session: the server answers with a challenge to sign. */
  hello: z.strictObject({ op: z.literal('hello') }),
  /** Authenticates the QUIC session as `keyId` (see sessionAuthMessage). */
  auth: z.strictObject({ op: z.literal('auth'), keyId: KeyIdSchema, signature: z.string().regex(/^[A-Za-z0-9+/]{86}==$/) }),
  'closure.manifest': z.strictObject({ op: z.literal('closure.manifest'), configId: ConfigIdSchema, system: SystemSchema }),
  'directories.get': z.strictObject({ op: z.literal('directories.get'), ids: z.array(DigestSchema).min(1).max(MAX_BATCH_OBJECTS) }),
  'blob.get': z.strictObject({
    op: z.literal('blob.get'),
    id: DigestSchema,
    offset: z.number().int().nonnegative().multipleOf(TRANSFER_GROUP_SIZE).default(0),
    length: z.number().int().nonnegative().optional(),
    /** Whether the reply starts with the blob's outboard (a receiver that has it already says false). */
    outboard: z.boolean().default(true),
    accept: AcceptSchema,
  }),
  'blobs.get': z.strictObject({ op: z.literal('blobs.get'), ids: z.array(DigestSchema).min(1).max(MAX_BATCH_OBJECTS), accept: AcceptSchema }),
  /**
   * Group-level dedup: for each blob, the receiver holds a basis (a
   * previous version of the same file) and sends, in the body, the BLAKE3
   * chaining values of the basis's first `basisGroups` 16 KiB groups, each
   * hashed as group i of a blob of the wanted blob's size (32 bytes each,
   * blob after blob). The reply carries only the wanted blob's groups whose
   * chaining value differs; the receiver takes the others from its basis
   * and verifies the whole blob against its id before using it.
   */
  'blobs.delta': z.strictObject({
    op: z.literal('blobs.delta'),
    blobs: z
      .array(z.strictObject({ id: DigestSchema, basisGroups: z.number().int().min(1).max(MAX_DELTA_GROUPS) }))
      .min(1)
      .max(MAX_DELTA_BLOBS)
      .refine((blobs) => blobs.reduce((sum, blob) => sum + blob.basisGroups, 0) <= MAX_DELTA_GROUPS, `at most ${MAX_DELTA_GROUPS} basis groups per request`),
    accept: AcceptSchema,
  }),
  /**
   * Many blobs, any size, in one reply: what a large fetch (a cold deploy)
   * asks for, so that zstd sees them as one stream and finds what files
   * share (compression/wire.ts, WIRE_STREAM_*). Verified whole, per blob.
   */
  'blobs.stream': z.strictObject({ op: z.literal('blobs.stream'), ids: z.array(DigestSchema).min(1).max(MAX_QUERY_ITEMS), accept: AcceptSchema }),
  /**
   * Which of `ids` the coordinator keeps as templates over a normalized blob
   * (reference-aware blobs): a client that has the normalized blob restores
   * the real one instead of fetching it, and verifies it against its id.
   */
  'blobs.templates': z.strictObject({ op: z.literal('blobs.templates'), ids: z.array(DigestSchema).min(1).max(MAX_TEMPLATE_QUERY) }),
  missing: z.strictObject({
    op: z.literal('missing'),
    storePaths: z.array(StorePathSchema).max(MAX_QUERY_ITEMS).default([]),
    blobs: z.array(DigestSchema).max(MAX_QUERY_ITEMS).default([]),
    directories: z.array(DigestSchema).max(MAX_QUERY_ITEMS).default([]),
  }),
  'upload.blobs': z.strictObject({
    op: z.literal('upload.blobs'),
    blobs: z
      .array(
        z.strictObject({
          id: DigestSchema,
          size: z.number().int().nonnegative(),
          /** Absent: identity (the blob's `size` bytes). */
          encoding: WireEncodingSchema.optional(),
          /** The bytes on the wire when `encoding` is zstd. */
          wireSize: z.number().int().nonnegative().optional(),
        }),
      )
      .min(1)
      .max(MAX_BATCH_OBJECTS),
  }),
  /**
   * Blobs the pusher keeps as templates over a normalized blob the
   * coordinator holds (or was just sent): their records follow in the body,
   * back to back. The coordinator restores and hashes each before it keeps it.
   */
  'upload.templates': z.strictObject({
    op: z.literal('upload.templates'),
    templates: z
      .array(
        z.strictObject({
          id: DigestSchema,
          size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
          normalized: DigestSchema,
          recordSize: z.number().int().positive().max(MAX_TEMPLATE_RECORD_BYTES),
        }),
      )
      .min(1)
      .max(MAX_TEMPLATE_QUERY)
      .refine((templates) => templates.reduce((sum, template) => sum + template.recordSize, 0) <= MAX_BATCH_BYTES, `at most ${MAX_BATCH_BYTES} bytes of records per request`),
  }),
  'upload.directories': z.strictObject({
    op: z.literal('upload.directories'),
    directories: z
      .array(z.strictObject({ id: DigestSchema, size: z.number().int().min(0).max(16 * 1024 * 1024) }))
      .min(1)
      .max(MAX_BATCH_OBJECTS),
  }),
  /** Registers store paths whose objects were uploaded; the push's one audit event. */
  'upload.storePaths': z.strictObject({
    op: z.literal('upload.storePaths'),
    roots: z.array(StorePathSchema).min(1).max(1000),
    storePaths: z.array(StorePathInfoSchema).max(MAX_REGISTER_PATHS),
    stats: z.strictObject({ bytesSent: z.number().int().nonnegative(), blobsSent: z.number().int().nonnegative(), directoriesSent: z.number().int().nonnegative() }),
  }),
} as const;

export type DataOperationName = keyof typeof DATA_REQUESTS;
/** The requests followed by a body (the objects they upload); every other request ends with its header. */
export const REQUESTS_WITH_BODY: ReadonlySet<DataOperationName> = new Set(['upload.blobs', 'upload.templates', 'upload.directories', 'blobs.delta']);
export type DataRequest<N extends DataOperationName = DataOperationName> = z.input<(typeof DATA_REQUESTS)[N]>;
export type ParsedDataRequest<N extends DataOperationName = DataOperationName> = z.infer<(typeof DATA_REQUESTS)[N]>;

export const DataRequestSchema = z.discriminatedUnion('op', Object.values(DATA_REQUESTS) as unknown as [
  (typeof DATA_REQUESTS)['hello'],
  ...(typeof DATA_REQUESTS)[Exclude<DataOperationName, 'hello'>][],
]);

export const DATA_RESPONSES = {
  hello: z.object({ challenge: z.string().regex(/^[0-9a-f]{64}$/), coordinatorKey: KeyIdSchema, version: z.string() }),
  auth: z.object({ keyId: KeyIdSchema, role: z.string() }),
  'closure.manifest': z.object({
    configId: ConfigIdSchema,
    system: SystemSchema,
    target: StorePathSchema,
    storePaths: z.array(StorePathInfoSchema),
    /** The coordinator's signature over the rest (protocol/coordinator-proofs.ts). */
    proof: z.string().max(128),
  }),
  'directories.get': z.object({ directories: z.array(z.object({ id: DigestSchema, size: z.number().int().nonnegative() })) }),
  'blob.get': z.object({
    id: DigestSchema,
    size: z.number().int().nonnegative(),
    offset: z.number().int().nonnegative(),
    length: z.number().int().nonnegative(),
    outboardSize: z.number().int().nonnegative(),
    /** Absent (old coordinators, clients that accept nothing): identity. */
    encoding: WireEncodingSchema.default('identity'),
    /** The body's bytes after the outboard when `encoding` is zstd. */
    wireLength: z.number().int().nonnegative().optional(),
  }),
  'blobs.get': z.object({
    blobs: z.array(
      z.object({
        id: DigestSchema,
        size: z.number().int().nonnegative(),
        outboardSize: z.number().int().nonnegative(),
        encoding: WireEncodingSchema.default('identity'),
        /** The blob's bytes on the wire when `encoding` is zstd. */
        wireSize: z.number().int().nonnegative().optional(),
      }),
    ),
    /**
     * Present (for a client that accepts `zstd-batch`): the body is one zstd
     * frame of `wireSize` bytes holding every blob's bytes back to back (and
     * every blob's own `encoding` is identity).
     */
    batch: z.object({ encoding: z.literal('zstd'), wireSize: z.number().int().nonnegative() }).optional(),
  }),
  'blobs.delta': z.object({
    blobs: z.array(
      z.object({
        id: DigestSchema,
        size: z.number().int().nonnegative(),
        /**
         * The groups sent, as [first group, count] runs in ascending order,
         * their bytes back to back in the body; null: no delta (nothing of
         * the basis matches, or the differing groups are most of the blob):
         * fetch the blob whole.
         */
        runs: z.array(z.tuple([z.number().int().nonnegative(), z.number().int().positive()])).max(MAX_DELTA_GROUPS).nullable(),
        encoding: WireEncodingSchema.default('identity'),
        /** The sent groups' bytes on the wire when `encoding` is zstd. */
        wireSize: z.number().int().nonnegative().optional(),
      }),
    ),
  }),
  'blobs.stream': z.object({
    /** The blobs' total size: what the body holds, or decompresses to. */
    size: z.number().int().nonnegative(),
    encoding: WireEncodingSchema.default('identity'),
  }),
  'blobs.templates': z.object({
    /** The templated ones among the ids asked, in their order; their records follow in the body, back to back. */
    templates: z
      .array(z.object({ id: DigestSchema, normalized: DigestSchema, recordSize: z.number().int().positive().max(MAX_TEMPLATE_RECORD_BYTES) }))
      .max(MAX_TEMPLATE_QUERY),
  }),
  missing: z.object({ storePaths: z.array(StorePathSchema), blobs: z.array(DigestSchema), directories: z.array(DigestSchema) }),
  'upload.blobs': z.object({ stored: z.number().int(), alreadyPresent: z.number().int() }),
  'upload.templates': z.object({ stored: z.number().int(), alreadyPresent: z.number().int() }),
  'upload.directories': z.object({ stored: z.number().int() }),
  'upload.storePaths': z.object({ registered: z.array(StorePathSchema), alreadyPresent: z.number().int(), seq: z.number().int() }),
} as const satisfies Record<DataOperationName, z.ZodType>;

export type DataResponse<N extends DataOperationName> = z.infer<(typeof DATA_RESPONSES)[N]>;
/** A reply header as sent: fields with defaults (`encoding`) may be left out. */
export type DataResponseInput<N extends DataOperationName> = z.input<(typeof DATA_RESPONSES)[N]>;

/** The message a client signs to authenticate a QUIC session. */
export function sessionAuthMessage(challenge: string, keyId: string): Uint8Array {
  return new TextEncoder().encode(`ferry-session-v1\n${challenge}\n${keyId}`);
}
