/**
 * Typed errors for everything in nix/. Every refusal of bad input carries a
 * stable `code` (for programs and tests) and says what and where in its
 * message (for people). NAR errors also carry the byte offset at which the
 * decoder gave up and the entry path it was in.
 */
export type NixErrorCode =
  // encodings and hashes
  | 'BAD_BASE32'
  | 'BAD_HASH'
  // store paths
  | 'BAD_STORE_PATH'
  // narinfo and signing keys
  | 'BAD_NARINFO'
  | 'BAD_KEY'
  | 'BAD_SIGNATURE'
  // NAR codec
  | 'NAR_BAD_MAGIC'
  | 'NAR_UNEXPECTED_TOKEN'
  | 'NAR_BAD_PADDING'
  | 'NAR_TRUNCATED'
  | 'NAR_TRAILING_DATA'
  | 'NAR_BAD_NAME'
  | 'NAR_UNSORTED'
  | 'NAR_DUPLICATE'
  | 'NAR_LIMIT'
  | 'NAR_BAD_SYMLINK'
  | 'NAR_UNSUPPORTED_FILE'
  | 'PATH_EXISTS'
  // local Nix store access
  | 'NIX_NOT_FOUND'
  | 'NIX_COMMAND_FAILED';

export interface NixErrorDetails {
  /** Byte offset in the input at which the problem was found. */
  offset?: number;
  /** Path of the entry inside a NAR (or a store path) the problem concerns. */
  path?: string;
  cause?: unknown;
}

export class NixError extends Error {
  override readonly name = 'NixError';
  readonly code: NixErrorCode;
  readonly offset: number | undefined;
  readonly path: string | undefined;

  constructor(code: NixErrorCode, message: string, details: NixErrorDetails = {}) {
    const where = [
      details.path !== undefined ? `entry '${details.path || '/'}'` : undefined,
      details.offset !== undefined ? `byte offset ${details.offset}` : undefined,
    ].filter(Boolean);
    super(where.length > 0 ? `${message} (at ${where.join(', ')})` : message, {
      cause: details.cause,
    });
    this.code = code;
    this.offset = details.offset;
    this.path = details.path;
  }
}

export function isNixError(error: unknown): error is NixError {
  return error instanceof NixError;
}
