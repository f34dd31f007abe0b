/**
 * Reading a request body with a bound that holds whatever the client
 * declares or sends: the same for every HTTP surface of the coordinator
 * (the API, the Nix binary cache, the audit viewer).
 */
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import { readAtMost } from '../../protocol/bounded-read.js';
import { FerryError } from '../../protocol/errors.js';
import { jsonBoundsViolation, MAX_JSON_DEPTH } from '../../protocol/json-bounds.js';

const NO_BODY = new Uint8Array(0);

/**
 * The whole body of the request, refused (FerryError BODY_TOO_LARGE, 413)
 * beyond `limit` bytes — declared in content-length, or sent: reading stops
 * at the limit (and the connection is closed), so a chunked body of any
 * length holds at most `limit` bytes in memory. A GET or HEAD has none
 * (as fetch's Request says). Under @hono/node-server the body is read from
 * Node's request stream itself: going through the Web `Request` built a
 * second request object, its headers and an AbortSignal for each request,
 * ~15% of a small request's cost.
 */
export async function readBoundedBody(c: Context, limit: number): Promise<Uint8Array> {
  const request = c.req.raw;
  const declared = Number(request.headers.get('content-length') ?? '0');
  if (declared > limit) throw new FerryError('BODY_TOO_LARGE', `request body of ${declared} bytes exceeds the limit of ${limit}`);
  if (request.method === 'GET' || request.method === 'HEAD') return NO_BODY;
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming;
  const bytes = incoming instanceof Readable ? await readStreamAtMost(incoming, limit) : await readAtMost(request.body, limit);
  if (!bytes) throw new FerryError('BODY_TOO_LARGE', `request body exceeds the limit of ${limit} bytes`);
  return bytes;
}

/** readAtMost for a Node stream: undefined (and the stream destroyed) once past `limit`. */
async function readStreamAtMost(stream: Readable, limit: number): Promise<Uint8Array | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const buffer = chunk as Buffer;
    total += buffer.length;
    // Leaving the loop destroys the stream: nothing more is read.
    if (total > limit) return undefined;
    chunks.push(buffer);
  }
  return total === 0 ? NO_BODY : new Uint8Array(Buffer.concat(chunks, total));
}

/**
 * A described route's input as one object (protocol/api routes.ts): the
 * query (a repeated key as an array), the JSON body, and the path
 * parameters, merged in that order, for the route's input schema to
 * validate. Refuses a body that is not a JSON object (BAD_JSON) or nests
 * deeper than MAX_JSON_DEPTH (JSON_TOO_DEEP), before anything recursive
 * sees it.
 */
export function requestInput(c: Context, body: Uint8Array): Record<string, unknown> {
  let parsedBody: unknown = {};
  if (body.length > 0) {
    try {
      parsedBody = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
    } catch {
      throw new FerryError('BAD_JSON', 'request body is not valid JSON');
    }
    if (parsedBody === null || typeof parsedBody !== 'object' || Array.isArray(parsedBody)) throw new FerryError('BAD_JSON', 'request body must be a JSON object');
    // JSON.parse is iterative, but what comes next (zod, canonicalJson, JSON.stringify) may not be:
    // the depth is bounded here, before any of it sees the value.
    const violation = jsonBoundsViolation(parsedBody, { maxDepth: MAX_JSON_DEPTH });
    if (violation) throw new FerryError(violation.code, `request body ${violation.message}`);
  }
  const query: Record<string, string | string[]> = {};
  for (const [key, values] of Object.entries(c.req.queries())) query[key] = values.length === 1 ? values[0]! : values;
  return { ...query, ...(parsedBody as Record<string, unknown>), ...c.req.param() };
}
