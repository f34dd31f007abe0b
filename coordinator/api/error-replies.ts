/**
 * The one mapping from what a request handler throws to the error it
 * answers, for every surface of the coordinator: the HTTP API and the viewer
 * (JSON, through `app.onError`: jsonErrorHandler), the data plane on QUIC
 * and `/v1/data` (an error frame: data-replies.ts) and the Nix cache
 * (`CODE: message` text, its own `onError`: nix-cache/app.ts). Which code a
 * refusal carries and which status it gets is decided here and in
 * protocol/errors.ts, nowhere else. See docs/errors.md.
 */
import type { Context, ErrorHandler } from 'hono';
import { z } from 'zod';
import { CastoreError } from '../../castore/index.js';
import { isNixError } from '../../nix/index.js';
import { FerryError, httpStatusOf, isSentErrorCode, type ErrorBody, type ErrorCode, type ErrorStatus } from '../../protocol/errors.js';

export interface ErrorReply {
  status: ErrorStatus;
  body: ErrorBody;
}

const INTERNAL_MESSAGE = 'internal error (see the coordinator log)';

/**
 * The code of an error that carries one of Ferry's: a FerryError (framing
 * and decompression errors are), or the castore's and nix's own error
 * types, which cannot depend on protocol/: each assignment to ErrorCode
 * below compiles only while that library's codes are all in the enum, so
 * the coordinator never sends a code clients cannot read.
 */
function codeOf(error: unknown): ErrorCode | undefined {
  if (error instanceof FerryError) return error.code;
  if (error instanceof CastoreError) {
    const code: ErrorCode = error.code;
    return code;
  }
  if (isNixError(error)) {
    const code: ErrorCode = error.code;
    return code;
  }
  if (error instanceof z.ZodError) return 'INVALID';
  return undefined;
}

/**
 * What a request that failed with `error` answers: the error's own code and
 * message, a zod error as INVALID naming the first issue, anything else as
 * INTERNAL with a generic message (the error, with its stack, goes to `log`
 * with `where`, never to the client). Every 500 answer is logged.
 */
export function errorReplyOf(error: unknown, log: (line: string) => void, where: string): ErrorReply {
  const code = codeOf(error);
  if (code === undefined || !isSentErrorCode(code)) {
    log(`ferry coordinator: internal error in ${where}: ${error instanceof Error ? error.stack : String(error)}`);
    return { status: 500, body: { error: { code: 'INTERNAL', message: INTERNAL_MESSAGE } } };
  }
  const status = httpStatusOf(code);
  let message: string;
  if (error instanceof z.ZodError) {
    const issue = error.issues[0]!;
    message = `${issue.path.join('.') || 'request'}: ${issue.message}`;
  } else {
    message = (error as Error).message;
  }
  if (status === 500) log(`ferry coordinator: internal error in ${where} (${code}): ${error instanceof Error ? error.stack : String(error)}`);
  const details = error instanceof FerryError ? error.details : undefined;
  return { status, body: { error: { code, message, ...(details ? { details } : {}) } } };
}

/** `METHOD /path` of a request, for logs. */
export function requestWhere(c: Context): string {
  return `${c.req.method} ${new URL(c.req.url).pathname}`;
}

/**
 * The error handler of the coordinator's JSON surfaces (the API, and the
 * viewer mounted on it or served offline): `{ error: { code, message } }`
 * with the code's status, never hono's plain-text 500.
 */
export function jsonErrorHandler(log: (line: string) => void): ErrorHandler {
  return (error, c) => {
    const { status, body } = errorReplyOf(error, log, requestWhere(c));
    return c.json(body, status);
  };
}
