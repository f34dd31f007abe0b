/**
 * Typed errors for castore. Every refusal names the object (blob or
 * directory id) and, where it applies, the byte offset at which the
 * problem was found, so an operator can tell what is wrong and where.
 */
export type CastoreErrorCode =
  | 'BLAKE3_OUTBOARD_MISMATCH'
  | 'BLAKE3_GROUP_MISMATCH'
  | 'BLAKE3_BAD_SIZE'
  | 'BLOB_NOT_FOUND'
  | 'BATCH_TOO_LARGE'
  | 'BLOB_CORRUPT'
  | 'DIRECTORY_NOT_CANONICAL'
  | 'DIRECTORY_NOT_FOUND'
  | 'STORE_PATH_NOT_FOUND'
  | 'STORE_PATH_INVALID'
  | 'INGEST_ABORTED'
  | 'GC_CONFLICT'
  | 'UNSUPPORTED_FORMAT'
  | 'STORE_ADDRESS_INVALID'
  | 'REFERENCES_INVALID';

export interface CastoreErrorDetails {
  /** Byte offset inside the object (or stream) where the problem was found. */
  offset?: number;
  /** Hex id of the blob or directory concerned. */
  objectId?: string;
  cause?: unknown;
}

export class CastoreError extends Error {
  override readonly name = 'CastoreError';
  readonly code: CastoreErrorCode;
  readonly offset: number | undefined;
  readonly objectId: string | undefined;

  constructor(code: CastoreErrorCode, message: string, details: CastoreErrorDetails = {}) {
    const where = [
      details.objectId !== undefined && !message.includes(details.objectId) ? `object ${details.objectId}` : undefined,
      details.offset !== undefined ? `byte offset ${details.offset}` : undefined,
    ].filter(Boolean);
    super(where.length > 0 ? `${message} (at ${where.join(', ')})` : message, { cause: details.cause });
    this.code = code;
    this.offset = details.offset;
    this.objectId = details.objectId;
  }
}

export function isCastoreError(error: unknown): error is CastoreError {
  return error instanceof CastoreError;
}
