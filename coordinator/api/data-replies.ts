/**
 * Turning data operations into response bytes, the same for QUIC streams
 * and HTTP bodies: a header frame (the reply, or `{ error: { code, message } }`:
 * error-replies.ts decides which), then the reply's body. Errors that
 * happen after the header was sent cannot be framed: the transport aborts
 * the stream instead, and the client, which verifies everything, sees a
 * truncated or corrupt object.
 */
import { encodeHeaderFrame } from '../../protocol/framing.js';
import type { DataReply } from './data-operations.js';
import { errorReplyOf } from './error-replies.js';

/**
 * The response bytes of one request: `run` decides, errors become an error
 * frame (unexpected ones are logged with `where` and reported as INTERNAL).
 */
export async function* replyFrames(run: () => Promise<DataReply>, log: (line: string) => void, where: string): AsyncGenerator<Uint8Array> {
  let reply: DataReply;
  try {
    reply = await run();
  } catch (error) {
    yield encodeHeaderFrame(errorReplyOf(error, log, where).body);
    return;
  }
  yield encodeHeaderFrame(reply.header);
  if (reply.body) yield* reply.body;
}
