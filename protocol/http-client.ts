/**
 * A typed client for the coordinator's HTTP API: signs every request with
 * the caller's key, calls the routes the API describes by name
 * (api/routes.ts, and the audit viewer's: api/viewer-routes.ts) and checks
 * each reply against its route's output schema, and turns error responses
 * into ApiError with the server's code (read against the enum,
 * protocol/errors.ts) and message.
 */
import type { z } from 'zod';
import { readAtMost } from './bounded-read.js';
import { FerryError, readErrorBody, type ErrorCode, type FerryErrorOptions, type ReceivedError } from './errors.js';
import type { Identity } from './identity.js';
import { fetchFor, pinningFailure, type FetchFunction } from './pinned-fetch.js';
import { signRequest } from './request-signing.js';
import { API_ROUTES, fillPath, firstIssue, type ApiRoute, type ApiRouteName } from './api/routes.js';
import type { VIEWER_ROUTES, ViewerRoute, ViewerRouteName } from './api/viewer-routes.js';

/**
 * Every route `call` knows by name: the coordinator's API and the audit
 * viewer's, which carry their own paths. The names do not overlap (the
 * viewer's all start with `viewer.`; a test checks).
 */
export type RouteName = ApiRouteName | ViewerRouteName;
type Routes = typeof API_ROUTES & typeof VIEWER_ROUTES;
export type RouteInput<N extends RouteName> = z.input<Routes[N]['input']>;
export type RouteOutput<N extends RouteName> = z.output<Routes[N]['output']>;

/**
 * A request to the HTTP API that failed: the coordinator's refusal, or (a
 * client-side code: UNREACHABLE, BAD_RESPONSE) no usable answer. Its own
 * class because callers tell it by type from failures of their own (the
 * agent backs off and retries on UNREACHABLE or a 5xx `status`).
 */
export class ApiError extends FerryError {
  override readonly name = 'ApiError';

  constructor(
    /** The HTTP status answered; 0 when there was no answer. */
    readonly status: number,
    code: ErrorCode,
    message: string,
    options: FerryErrorOptions = {},
  ) {
    super(code, message, options);
  }

  /** The error an answer with `status` carried. */
  static received(status: number, { code, message, sentCode, details }: ReceivedError): ApiError {
    return new ApiError(status, code, message, { sentCode, ...(details ? { details } : {}) });
  }
}

/** The largest JSON reply the client reads (a listing of 1,000 agents with their views is a few MB). */
export const MAX_REPLY_BYTES = 64 * 1024 * 1024;
/** An error reply is read up to this many bytes. */
const MAX_ERROR_REPLY_BYTES = 64 * 1024;

/**
 * Refuses (ApiError BAD_RESPONSE) a reply the HTTP stack would decompress
 * on the fly: the client asks for `identity`, so a compressed reply is an
 * intermediary's (or a hostile server's) doing, and a few KB of gzip can
 * become gigabytes in memory.
 */
export function refuseEncodedReply(response: Response, what: string): void {
  const encoding = response.headers.get('content-encoding');
  if (encoding && encoding.toLowerCase() !== 'identity') throw new ApiError(response.status, 'BAD_RESPONSE', `${what}: the reply is ${encoding}-encoded; Ferry replies are never compressed by HTTP`);
}

/** The body of `response` as text, refused (ApiError BAD_RESPONSE) past `limit` bytes: reading stops there. */
export async function readBoundedText(response: Response, limit: number, what: string): Promise<string> {
  const bytes = await readAtMost(response.body, limit);
  if (!bytes) throw new ApiError(response.status, 'BAD_RESPONSE', `${what}: the reply is larger than ${limit} bytes`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

function parseJsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export type QueryValue = string | number | boolean | undefined | readonly string[];

/**
 * The description of route `name`. The viewer's table is loaded on its
 * first call: only `ferry audit` calls it, and building its schemas would
 * cost every other command, and the agent, ~15 ms of start-up here.
 */
async function describedRoute(name: RouteName): Promise<ApiRoute | ViewerRoute> {
  if (Object.hasOwn(API_ROUTES, name)) return API_ROUTES[name as ApiRouteName];
  return (await import('./api/viewer-routes.js')).VIEWER_ROUTES[name as ViewerRouteName];
}

/** `call`'s input argument: optional for a route whose input may be empty. */
export type CallInput<N extends RouteName> = {} extends RouteInput<N> ? [input?: RouteInput<N>, options?: CallOptions] : [input: RouteInput<N>, options?: CallOptions];

export interface CallOptions {
  /** Override the request time (tests of clock skew). */
  now?: number;
  /** Ends the request (a held watch) when aborted: the call rejects. */
  signal?: AbortSignal;
}

export interface RequestOptions {
  query?: Record<string, QueryValue>;
  body?: unknown;
  /** Override the request time (tests of clock skew). */
  now?: number;
  signal?: AbortSignal;
}

export interface CoordinatorHttpClientOptions {
  /**
   * The coordinator's TLS certificate fingerprint, when the base URL is the
   * coordinator's own port (join strings with `tls=pinned`, CLI contexts
   * that know it): requests go over TLS whatever the URL's scheme, and
   * only that certificate is accepted.
   */
  pinnedFingerprint?: string;
}

export class CoordinatorHttpClient {
  private readonly fetch: FetchFunction;

  constructor(
    readonly baseUrl: string,
    readonly identity?: Identity,
    options: CoordinatorHttpClientOptions = {},
  ) {
    this.fetch = fetchFor(options.pinnedFingerprint);
  }

  pathWithQuery(path: string, query: Record<string, QueryValue> = {}): string {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const item of value) search.append(key, item);
      else search.append(key, String(value));
    }
    const text = search.toString();
    return text ? `${path}?${text}` : path;
  }

  /**
   * Sends a signed request; resolves to the raw Response (for streams).
   * A GET that fails to connect (e.g. a pooled connection the server
   * closed) is retried twice, freshly signed; other methods are not, since
   * the coordinator may have acted on them.
   */
  async send(method: 'GET' | 'POST', path: string, options: RequestOptions = {}): Promise<Response> {
    const target = this.pathWithQuery(path, options.query);
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    let response: Response | undefined;
    for (let attempt = 0; response === undefined; attempt++) {
      const headers: Record<string, string> = { 'accept-encoding': 'identity', ...(body === undefined ? {} : { 'content-type': 'application/json' }) };
      if (this.identity) Object.assign(headers, signRequest(this.identity, method, target, body, options.now));
      try {
        response = await this.fetch(new URL(target, this.baseUrl), { method, headers, body, ...(options.signal ? { signal: options.signal } : {}) });
      } catch (error) {
        const pinning = pinningFailure(error);
        if (pinning) throw pinning;
        if (options.signal?.aborted) throw error;
        if (method === 'GET' && attempt < 2) {
          await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
          continue;
        }
        const cause = (error as Error & { cause?: { code?: string; message?: string } }).cause;
        throw new ApiError(0, 'UNREACHABLE', `cannot reach the coordinator at ${this.baseUrl}: ${(error as Error).message}${cause ? ` (${cause.code ?? cause.message})` : ''}`);
      }
    }
    refuseEncodedReply(response, `${method} ${path}`);
    if (!response.ok) {
      const text = await readBoundedText(response, MAX_ERROR_REPLY_BYTES, `${method} ${path}`).catch(() => '');
      const received = readErrorBody(parseJsonOrUndefined(text));
      if (received) throw ApiError.received(response.status, received);
      // Not Ferry's answer (a proxy's, another server's): its status and the start of its text.
      throw new ApiError(response.status, 'BAD_RESPONSE', `${method} ${path}: HTTP ${response.status} ${text.slice(0, 200) || response.statusText}`);
    }
    return response;
  }

  /**
   * Calls the route `name` (API_ROUTES, or VIEWER_ROUTES for `viewer.*`)
   * with `input`: its path parameters filled in, the rest sent as the
   * query (GET) or the JSON body (POST). Resolves to the reply as its
   * route's output schema parses it; refuses (ApiError BAD_RESPONSE, naming
   * the field and with it in `details.field`) a reply that does not match.
   * The input is not checked here: the coordinator checks it, and answers
   * INVALID naming the field.
   */
  async call<N extends RouteName>(name: N, ...[input, options]: CallInput<N>): Promise<RouteOutput<N>> {
    const { status, reply, route } = await this.callJson(name, input ?? {}, options);
    const parsed = route.output.safeParse(reply);
    if (!parsed.success) {
      const { field, message } = firstIssue(parsed.error);
      throw new ApiError(status, 'BAD_RESPONSE', `${name}: the reply does not match its description: ${field}: ${message}`, { details: { field } });
    }
    return parsed.data as RouteOutput<N>;
  }

  /**
   * `call` without the check of the reply: for a reply whose signature the
   * caller checks over what was received before it parses it with the
   * route's output schema (an agent's `agent.desired` and `agent.watch`:
   * "unsigned" and "signed but invalid" are different refusals).
   */
  async callUnchecked<N extends RouteName>(name: N, ...[input, options]: CallInput<N>): Promise<unknown> {
    return (await this.callJson(name, input ?? {}, options)).reply;
  }

  private async callJson(name: RouteName, input: object, options: CallOptions = {}): Promise<{ status: number; reply: unknown; route: ApiRoute | ViewerRoute }> {
    const route = await describedRoute(name);
    const { path, rest } = fillPath(route.path, input as Record<string, unknown>);
    const request: RequestOptions = route.method === 'GET' ? { query: queryOf(rest), now: options.now, signal: options.signal } : { body: rest, now: options.now, signal: options.signal };
    return { ...(await this.readJson(route.method, path, request)), route };
  }

  /**
   * A request whose JSON reply is not checked: for tests that send what no
   * input schema allows. Everything else uses `call`.
   */
  async request<T = unknown>(method: 'GET' | 'POST', path: string, options: RequestOptions = {}): Promise<T> {
    return (await this.readJson(method, path, options)).reply as T;
  }

  get<T = unknown>(path: string, query?: Record<string, QueryValue>): Promise<T> {
    return this.request<T>('GET', path, { query });
  }

  post<T = unknown>(path: string, body: unknown = {}): Promise<T> {
    return this.request<T>('POST', path, { body });
  }

  private async readJson(method: 'GET' | 'POST', path: string, options: RequestOptions): Promise<{ status: number; reply: unknown }> {
    const response = await this.send(method, path, options);
    const text = await readBoundedText(response, MAX_REPLY_BYTES, `${method} ${path}`);
    try {
      return { status: response.status, reply: JSON.parse(text) as unknown };
    } catch {
      throw new ApiError(response.status, 'BAD_RESPONSE', `${method} ${path}: the reply is not JSON`);
    }
  }
}

/** An input's fields as query values: arrays repeat the key, everything else is its string. */
function queryOf(fields: Record<string, unknown>): Record<string, QueryValue> {
  const query: Record<string, QueryValue> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    query[key] = Array.isArray(value) ? value.map(String) : String(value);
  }
  return query;
}
