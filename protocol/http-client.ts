/**
 * A typed client for the coordinator's HTTP API: signs every request with
 * the caller's key, and turns error responses into ApiError with the
 * server's code (read against the enum, protocol/errors.ts) and message.
 */
import { readAtMost } from './bounded-read.js';
import { FerryError, readErrorBody, type ErrorCode, type FerryErrorOptions, type ReceivedError } from './errors.js';
import type { Identity } from './identity.js';
import { fetchFor, pinningFailure, type FetchFunction } from './pinned-fetch.js';
import { signRequest } from './request-signing.js';

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

export interface RequestOptions {
  query?: Record<string, QueryValue>;
  body?: unknown;
  /** Override the request time (tests of clock skew). */
  now?: number;
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
        response = await this.fetch(new URL(target, this.baseUrl), { method, headers, body });
      } catch (error) {
        const pinning = pinningFailure(error);
        if (pinning) throw pinning;
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

  async request<T = unknown>(method: 'GET' | 'POST', path: string, options: RequestOptions = {}): Promise<T> {
    const text = await readBoundedText(await this.send(method, path, options), MAX_REPLY_BYTES, `${method} ${path}`);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(200, 'BAD_RESPONSE', `${method} ${path}: the reply is not JSON`);
    }
  }

  get<T = unknown>(path: string, query?: Record<string, QueryValue>): Promise<T> {
    return this.request<T>('GET', path, { query });
  }

  post<T = unknown>(path: string, body: unknown = {}): Promise<T> {
    return this.request<T>('POST', path, { body });
  }
}
