/**
 * How every HTTP surface of the coordinator (the API, the Nix binary cache,
 * the audit viewer) refuses a request: a status and a Ferry error code,
 * answered as `{ error: { code, message } }`; and reading a request body
 * with a bound that holds whatever the client declares or sends.
 */
import { readAtMost } from '../../protocol/bounded-read.js';

export type RefusalStatus = 400 | 401 | 403 | 404 | 409 | 411 | 413 | 415 | 416 | 422 | 500 | 503;

export class HttpRefusal extends Error {
  constructor(
    readonly status: RefusalStatus,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The whole body of `request`, refused (HttpRefusal 413 BODY_TOO_LARGE)
 * beyond `limit` bytes — declared in content-length, or sent: reading stops
 * at the limit, so a chunked body of any length holds at most `limit`
 * bytes in memory.
 */
export async function readBoundedBody(request: Request, limit: number): Promise<Uint8Array> {
  const declared = Number(request.headers.get('content-length') ?? '0');
  if (declared > limit) throw new HttpRefusal(413, 'BODY_TOO_LARGE', `request body of ${declared} bytes exceeds the limit of ${limit}`);
  const bytes = await readAtMost(request.body, limit);
  if (!bytes) throw new HttpRefusal(413, 'BODY_TOO_LARGE', `request body exceeds the limit of ${limit} bytes`);
  return bytes;
}
