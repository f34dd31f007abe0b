/**
 * Ferry's error model, one for every transport: a refusal is an ErrorCode
 * from the table below (its HTTP status and meaning) and a message for
 * people. The coordinator's HTTP API answers `{"error":{"code","message"}}`
 * (plus `details` where an error has them), the data plane (QUIC streams and
 * `/v1/data`) sends the same object as its reply header frame, the Nix cache
 * answers `text/plain` `CODE: message`, and the CLI prints
 * `ferry: error [CODE]: message`.
 *
 * The table is the single source: the zod enum, its type, the HTTP statuses
 * and docs/errors.md all follow it. The codes of the castore and nix
 * libraries' errors (CastoreErrorCode, NixErrorCode) and of framing and
 * decompression are part of it, because the data plane sends them as they
 * are; the coordinator's one mapping (coordinator/api/error-replies.ts)
 * only compiles while that holds.
 *
 * Clients read codes against the enum. A code they do not know (a newer
 * coordinator's) is not an error of its own: it is read as UNKNOWN_CODE,
 * and the code as sent is kept beside it (ReceivedError.sentCode), so it
 * still reaches the user.
 *
 * Codes are added, never renamed or reused for another meaning: clients in
 * the field match on them. Each route of the HTTP API names the codes it
 * answers beyond any request's (api/routes.ts, `errors`); its error output
 * is ErrorBodySchema.
 */
import { z } from 'zod';

/** The HTTP statuses Ferry answers errors with. */
export type ErrorStatus = 400 | 401 | 403 | 404 | 409 | 411 | 413 | 415 | 416 | 422 | 429 | 500 | 503 | 507;

export interface ErrorCodeInfo {
  /** The HTTP status of an answer with this code; null: raised by a client, never sent by the coordinator. */
  status: ErrorStatus | null;
  /** What it means, in one line (docs/errors.md lists them). */
  meaning: string;
}

const CODE_TABLE = {
  // Any request
  INVALID: { status: 400, meaning: 'the request does not match its schema, or asks for something that cannot be (the message names the field)' },
  BAD_JSON: { status: 400, meaning: 'the request body is not a JSON object' },
  JSON_TOO_DEEP: { status: 400, meaning: 'a JSON value nests deeper than the protocol allows' },
  JSON_TOO_LARGE: { status: 400, meaning: 'a JSON value holds more values than the protocol allows' },
  BODY_TOO_LARGE: { status: 413, meaning: 'the request body is larger than the coordinator accepts' },
  NOT_FOUND: { status: 404, meaning: 'no such route, agent, graph, config, key, token or object' },
  CONFLICT: { status: 409, meaning: 'the request contradicts the current state (already exists, already done, not allowed in this state)' },
  INTERNAL: { status: 500, meaning: 'the coordinator failed (its log has the details); the request may be retried' },
  SHUTTING_DOWN: { status: 503, meaning: 'the coordinator is shutting down; ask again later or elsewhere' },
  // Authentication and authorization
  UNAUTHENTICATED: { status: 401, meaning: 'the request is not signed, its signature does not verify, or there is no session' },
  STALE_REQUEST: { status: 401, meaning: "the request's timestamp is too far from the coordinator's clock" },
  REPLAYED_NONCE: { status: 401, meaning: "the request's nonce was already used: a replay" },
  UNKNOWN_KEY: { status: 401, meaning: 'the signing key is not registered with the coordinator' },
  BAD_CREDENTIALS: { status: 401, meaning: 'the Nix cache credentials (netrc) do not verify' },
  REVOKED: { status: 403, meaning: 'the key or agent was revoked (or the agent rejected)' },
  NOT_APPROVED: { status: 403, meaning: 'the agent is enrolled but waits for approval' },
  FORBIDDEN: { status: 403, meaning: "the caller's role (or agent) may not do this" },
  // Commands
  BAD_TOKEN: { status: 401, meaning: 'the bootstrap token is unknown, expired, revoked or used up' },
  BAD_SIGNATURE: { status: 400, meaning: 'a signature inside the request (a config author, a narinfo Sig) is malformed or not the signer claimed' },
  HEAD_MOVED: { status: 409, meaning: "the graph's head moved since the submitter saw it (submit again, or --force)" },
  MISSING_STORE_PATH: { status: 422, meaning: 'a store path the request needs is not on the coordinator (push it first)' },
  TOO_MANY_WATCHES: { status: 429, meaning: 'this agent already holds as many watches as allowed' },
  // The audit-log viewer
  OUT_OF_RANGE: { status: 404, meaning: 'the position or event is outside the audit log' },
  NOT_REPLAYABLE: { status: 409, meaning: 'the log cannot be replayed to that position (it changed, or is not indexed yet)' },
  TOO_MANY_STREAMS: { status: 429, meaning: 'as many live pages are open on the coordinator as it serves at once' },
  // The Nix binary cache
  BAD_NARINFO: { status: 400, meaning: 'an uploaded narinfo is malformed or inconsistent' },
  BAD_NAR: { status: 400, meaning: 'an uploaded NAR is not a valid NAR' },
  BAD_NAR_NAME: { status: 400, meaning: "an uploaded NAR's name is not nar/<sha256>.nar[.zst|.xz]" },
  NAR_MISMATCH: { status: 400, meaning: 'an uploaded NAR does not match its narinfo (NarHash, NarSize)' },
  NAR_HASH_MISMATCH: { status: 400, meaning: 'an uploaded NAR file does not hash to the name it was uploaded as' },
  NAR_TOO_LARGE: { status: 413, meaning: 'an uploaded NAR is larger than the cache accepts' },
  NAR_NOT_UPLOADED: { status: 404, meaning: "a narinfo's NAR was not uploaded first (or expired from the spool)" },
  MISSING_REFERENCES: { status: 422, meaning: "a narinfo references store paths the cache lacks (upload them first)" },
  UNSUPPORTED_UPLOAD: { status: 400, meaning: 'the cache accepts only NAR and narinfo uploads' },
  UNSUPPORTED_COMPRESSION: { status: 415, meaning: 'the compression is not one the cache accepts (xz, zstd or none)' },
  SPOOL_FULL: { status: 507, meaning: 'the upload spool is full; retry later' },
  // Data-plane framing and decompression
  FRAME_TOO_LARGE: { status: 413, meaning: 'a frame header is longer than allowed' },
  FRAME_NOT_JSON: { status: 400, meaning: 'a frame header is not UTF-8 JSON' },
  FRAME_TRUNCATED: { status: 400, meaning: 'the stream ended inside a frame or body' },
  FRAME_TRAILING_BYTES: { status: 400, meaning: 'bytes follow the end of a request' },
  DECOMPRESS_CORRUPT: { status: 400, meaning: 'compressed bytes are damaged, not of their compression, or need more memory than allowed' },
  DECOMPRESS_TRUNCATED: { status: 400, meaning: 'compressed bytes end inside a frame' },
  DECOMPRESS_OUTPUT_LIMIT: { status: 413, meaning: 'compressed bytes decompress to more than declared' },
  // castore objects (CastoreErrorCode)
  BLAKE3_OUTBOARD_MISMATCH: { status: 422, meaning: "a blob's outboard does not match its BLAKE3 id" },
  BLAKE3_GROUP_MISMATCH: { status: 422, meaning: "a 16 KiB group of a blob does not verify against its outboard" },
  BLAKE3_BAD_SIZE: { status: 422, meaning: 'a blob, range or outboard has a size that cannot be' },
  BLOB_NOT_FOUND: { status: 404, meaning: 'the blob is not in the store' },
  BATCH_TOO_LARGE: { status: 413, meaning: 'the batch is larger than one request carries' },
  BLOB_CORRUPT: { status: 422, meaning: "a blob's bytes do not match its id or declared size" },
  DIRECTORY_NOT_CANONICAL: { status: 400, meaning: 'a directory object is not in canonical encoding' },
  DIRECTORY_NOT_FOUND: { status: 404, meaning: 'the directory object is not in the store' },
  STORE_PATH_NOT_FOUND: { status: 404, meaning: 'the store path is not registered' },
  STORE_PATH_INVALID: { status: 400, meaning: 'the store path information is invalid' },
  INGEST_ABORTED: { status: 500, meaning: 'an ingest was used after it ended' },
  GC_CONFLICT: { status: 409, meaning: 'a garbage collection and a write got in each other’s way; retry' },
  UNSUPPORTED_FORMAT: { status: 500, meaning: "the store's on-disk format is not this version's" },
  STORE_ADDRESS_INVALID: { status: 500, meaning: 'a castore address is malformed or names a backend this build does not have' },
  REFERENCES_INVALID: { status: 422, meaning: "a file's reference sites or hash parts are malformed, or do not fit its normalized bytes" },
  // Nix formats (NixErrorCode)
  BAD_BASE32: { status: 400, meaning: 'not valid Nix base32' },
  BAD_HASH: { status: 400, meaning: 'not a valid Nix hash' },
  BAD_STORE_PATH: { status: 400, meaning: 'not a valid store path' },
  BAD_KEY: { status: 400, meaning: 'not a valid Nix signing key' },
  NAR_BAD_MAGIC: { status: 400, meaning: 'not a NAR (bad magic)' },
  NAR_UNEXPECTED_TOKEN: { status: 400, meaning: 'a NAR has an unexpected token' },
  NAR_BAD_PADDING: { status: 400, meaning: 'a NAR has non-zero padding' },
  NAR_TRUNCATED: { status: 400, meaning: 'a NAR ends early' },
  NAR_TRAILING_DATA: { status: 400, meaning: 'bytes follow the end of a NAR' },
  NAR_BAD_NAME: { status: 400, meaning: 'a NAR entry has an invalid name' },
  NAR_UNSORTED: { status: 400, meaning: 'NAR entries are not sorted' },
  NAR_DUPLICATE: { status: 400, meaning: 'a NAR has a duplicate entry' },
  NAR_LIMIT: { status: 413, meaning: 'a NAR exceeds a size or depth limit' },
  NAR_BAD_SYMLINK: { status: 400, meaning: 'a NAR symlink target is invalid' },
  NAR_UNSUPPORTED_FILE: { status: 400, meaning: 'a file type a NAR cannot hold' },
  PATH_EXISTS: { status: 409, meaning: 'the path to unpack into already exists' },
  NIX_NOT_FOUND: { status: 500, meaning: 'the Nix commands are not installed here' },
  NIX_COMMAND_FAILED: { status: 500, meaning: 'a Nix command failed' },
  // Raised by clients, never sent by the coordinator
  UNREACHABLE: { status: null, meaning: 'the coordinator cannot be reached (connection refused, DNS, TLS)' },
  TRANSPORT: { status: null, meaning: 'the data-plane connection failed mid-request (retried before it is reported)' },
  TLS_FINGERPRINT_MISMATCH: { status: null, meaning: "the coordinator's TLS certificate is not the pinned one" },
  BAD_RESPONSE: { status: null, meaning: 'the reply does not follow the protocol (not Ferry JSON, too large, encoded, not matching its schema)' },
  BAD_PROOF: { status: null, meaning: "an answer is not signed by the coordinator's key" },
  UNKNOWN_CODE: { status: null, meaning: 'the coordinator sent a code this client does not know (a newer version): shown as sent' },
} as const satisfies Record<string, ErrorCodeInfo>;

type CodeName = keyof typeof CODE_TABLE;

/** Every error code, as a zod enum: `ErrorCodeSchema.options` lists them. */
export const ErrorCodeSchema = z.enum(Object.keys(CODE_TABLE) as [CodeName, ...CodeName[]]);
export type ErrorCode = z.infer<typeof ErrorCodeSchema>;

/** Each code's HTTP status and meaning. */
export const ERROR_CODES: Readonly<Record<ErrorCode, ErrorCodeInfo>> = CODE_TABLE;

/** The codes the coordinator may send (those with an HTTP status). */
export type SentErrorCode = { [C in CodeName]: (typeof CODE_TABLE)[C]['status'] extends null ? never : C }[CodeName];

/** Whether the coordinator may send `code` (it has an HTTP status), rather than only clients raising it. */
export function isSentErrorCode(code: ErrorCode): code is SentErrorCode {
  return ERROR_CODES[code].status !== null;
}

/** The HTTP status of an answer with `code`. */
export function httpStatusOf(code: SentErrorCode): ErrorStatus {
  return CODE_TABLE[code].status;
}

/** Facts an error carries beside its message, for programs (sent as `details` where the transport has JSON). */
export type ErrorDetails = Readonly<Record<string, string | number | boolean | null>>;

export interface FerryErrorOptions {
  details?: ErrorDetails;
  /** The code as received, when a client read it from an answer (see FerryError.sentCode). */
  sentCode?: string;
  cause?: unknown;
}

/**
 * Ferry's one error type: a code from the enum, a message for people, and
 * optionally details for programs. What the coordinator throws to refuse a
 * request (the code decides the HTTP status: httpStatusOf), and what
 * clients throw for an answer (ApiError, DataError: subclasses, so callers
 * can tell an answer from a local failure by type).
 */
export class FerryError extends Error {
  override readonly name: string = 'FerryError';
  readonly details: ErrorDetails | undefined;
  /**
   * The code as it travelled, what to show a user: the same as `code`,
   * except for a code a newer coordinator sent that this client does not
   * know (then `code` is UNKNOWN_CODE).
   */
  readonly sentCode: string;

  constructor(
    readonly code: ErrorCode,
    message: string,
    options: FerryErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.details = options.details;
    this.sentCode = options.sentCode ?? code;
  }
}

/** The wire form of an error, as received: any code text (a newer coordinator may send codes this client does not know). */
export const ErrorBodySchema = z.object({
  error: z.object({
    code: z.string().max(64),
    message: z.string().max(4096),
    details: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional(),
  }),
});

/** The wire form of an error, as sent: the code is one of the enum's. */
export interface ErrorBody {
  error: { code: SentErrorCode; message: string; details?: ErrorDetails };
}

/** An error answer as a client reads it. */
export interface ReceivedError {
  /** The code, read against the enum: UNKNOWN_CODE for one this client does not know. */
  code: ErrorCode;
  /** The code exactly as sent (what to show a user). */
  sentCode: string;
  message: string;
  details?: ErrorDetails;
}

/** Reads an error body (`{ error: { code, message } }`); undefined if `value` does not have that shape. */
export function readErrorBody(value: unknown): ReceivedError | undefined {
  const parsed = ErrorBodySchema.safeParse(value);
  if (!parsed.success) return undefined;
  const { code: sentCode, message, details } = parsed.data.error;
  const known = ErrorCodeSchema.safeParse(sentCode);
  return { code: known.success ? known.data : 'UNKNOWN_CODE', sentCode, message, ...(details ? { details } : {}) };
}
