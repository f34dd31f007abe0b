/**
 * Turning data operations into response bytes, the same for QUIC streams
 * and HTTP bodies: a header frame (the reply, or `{ error: { code, message } }`),
 * then the reply's body. Errors that happen after the header was sent
 * cannot be framed: the transport aborts the stream instead, and the
 * client, which verifies everything, sees a truncated or corrupt object.
 */
import { z } from 'zod';
import { CastoreError } from '../../castore/index.js';
import { isNixError } from '../../nix/index.js';
import { FrameError, encodeHeaderFrame } from '../../protocol/framing.js';
import { DecompressError } from '../../protocol/compression/decompress-error.js';
import { CommandError } from '../domain/commands.js';
import { AuthError } from './actors.js';
import type { DataReply } from './data-operations.js';

export interface DataErrorBody {
  error: { code: string; message: string };
}

/** The wire form of an error; unexpected errors are logged and reported as INTERNAL. */
export function dataErrorOf(error: unknown, log: (line: string) => void): DataErrorBody {
  if (error instanceof CommandError || error instanceof AuthError || error instanceof FrameError || error instanceof CastoreError || error instanceof DecompressError) {
    return { error: { code: error.code, message: error.message } };
  }
  if (isNixError(error)) return { error: { code: error.code, message: error.message } };
  if (error instanceof z.ZodError) {
    const issue = error.issues[0]!;
    return { error: { code: 'INVALID', message: `${issue.path.join('.') || 'request'}: ${issue.message}` } };
  }
  log(`ferry coordinator: internal error in a data request: ${error instanceof Error ? error.stack : String(error)}`);
  return { error: { code: 'INTERNAL', message: 'internal error (see the coordinator log)' } };
}

/** The response bytes of one request: `run` decides, errors become an error frame. */
export async function* replyFrames(run: () => Promise<DataReply>, log: (line: string) => void): AsyncGenerator<Uint8Array> {
  let reply: DataReply;
  try {
    reply = await run();
  } catch (error) {
    yield encodeHeaderFrame(dataErrorOf(error, log));
    return;
  }
  yield encodeHeaderFrame(reply.header);
  if (reply.body) yield* reply.body;
}
