/**
 * HTTPS to the coordinator with its self-signed certificate pinned: the
 * coordinator answers TLS on its HTTP port with the certificate the join
 * string names by fingerprint, so agents get confidentiality (the bootstrap
 * token, configs, activation commands) without any CA. The certificate is
 * trusted because its SHA-256 is the pinned one, never by a CA or a name.
 *
 * Built on node:https rather than undici's fetch: the requests are small
 * JSON exchanges and framed data streams, which node:https (its HTTP parser
 * is native) serves as well, while loading undici and compiling its
 * WebAssembly HTTP parser was the largest part of a `ferry config submit`'s
 * start-up (bench/README.md, "App-change latency"). What callers
 * get is still a fetch-shaped `Response`.
 */
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { COORDINATOR_TLS_NAME, normalizeFingerprint, PinningError } from './tls-pinning.js';

/** How the HTTP clients fetch: the global `fetch`, or a pinned one. */
export type FetchFunction = (url: URL, init: RequestInit) => Promise<Response>;

/**
 * A request or reply that moves no byte for this long fails (a coordinator
 * gone without closing the connection), as undici's fetch did by default.
 * Longer than any held request (the agent's watch: at most MAX_WATCH_SECONDS, 240 s).
 */
const IDLE_TIMEOUT_MS = 300_000;

/** A connection whose TCP and TLS handshakes take longer fails (undici's default, which the clients had before). */
const CONNECT_TIMEOUT_MS = 10_000;

/** Idle time before a connection's first TCP keepalive probe. */
const TCP_KEEPALIVE_MS = 45_000;

/** A kept-alive connection unused for this long is closed (undici's default too). */
const KEEP_ALIVE_MS = 4_000;

/** Statuses whose responses have no body (a `Response` with one is refused). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * Connections to the coordinator's port, each handed to a request only
 * after the TLS handshake showed the pinned certificate: a request is never
 * written to a connection that is not verified. Kept alive between
 * requests for KEEP_ALIVE_MS (idle ones do not keep the process running).
 */
class PinnedAgent extends HttpsAgent {
  constructor(private readonly pinned: string) {
    // `timeout` is how long a connection may sit unused in the pool; requests set their own (IDLE_TIMEOUT_MS).
    super({ keepAlive: true, timeout: KEEP_ALIVE_MS });
  }

  override createConnection(options: RequestOptions, created?: (error: Error | null, socket: Duplex) => void): Duplex | null | undefined {
    // Chain validation is off because no CA signs this certificate; the fingerprint check below
    // replaces it, and is stricter. No TLS session reuse: every connection shows its certificate.
    const socket = tlsConnect({ host: String(options.host ?? 'localhost').replace(/^\[|\]$/g, ''), port: Number(options.port), servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false });
    // Requests are written in pieces (headers, then the body): with Nagle, the second waits for the server's delayed ACK.
    // Keepalives: the agent's watch holds a request for minutes, across NATs that may forget an idle mapping.
    socket.once('connect', () => socket.setNoDelay(true).setKeepAlive(true, TCP_KEEPALIVE_MS));
    const failed = (error: Error) => created?.(error, socket);
    socket.once('error', failed);
    const connectTimedOut = () => socket.destroy(new Error(`TLS connection to ${String(options.host)}:${String(options.port)} timed out after ${CONNECT_TIMEOUT_MS / 1000} s`));
    socket.setTimeout(CONNECT_TIMEOUT_MS);
    socket.once('timeout', connectTimedOut);
    socket.once('secureConnect', () => {
      socket.off('error', failed);
      socket.off('timeout', connectTimedOut);
      socket.setTimeout(0);
      const presented = socket.getPeerCertificate().fingerprint256?.replace(/:/g, '').toLowerCase();
      if (presented !== this.pinned) {
        socket.destroy();
        created?.(new PinningError(`the server at ${String(options.host)}:${String(options.port)} presented TLS certificate ${presented ?? '(none)'}, but ${this.pinned} is pinned: refusing to talk to it`), socket);
        return;
      }
      created?.(null, socket);
    });
    return undefined;
  }
}

const pinnedFetches = new Map<string, FetchFunction>();

/**
 * A `fetch` that speaks TLS to the URL's host and port whatever its scheme
 * (`http://host:7070` is the coordinator's port, which answers both) and
 * succeeds only if the server presents the certificate with SHA-256
 * fingerprint `fingerprint`; any other certificate fails the request with
 * PinningError (code TLS_FINGERPRINT_MISMATCH) before a byte of it is
 * sent. One connection pool per fingerprint, shared by its callers. Takes
 * a string, bytes or a ReadableStream as the body; follows no redirect.
 */
export function pinnedFetch(fingerprint: string): FetchFunction {
  const pinned = normalizeFingerprint(fingerprint);
  let pinnedFetchFunction = pinnedFetches.get(pinned);
  if (!pinnedFetchFunction) {
    const agent = new PinnedAgent(pinned);
    pinnedFetchFunction = (url, init) => fetchThrough(agent, url, init);
    pinnedFetches.set(pinned, pinnedFetchFunction);
  }
  return pinnedFetchFunction;
}

function fetchThrough(agent: PinnedAgent, url: URL, init: RequestInit): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, name) => (headers[name] = value));
    const request = httpsRequest(
      {
        agent,
        host: url.hostname,
        port: url.port === '' ? (url.protocol === 'http:' ? 80 : 443) : Number(url.port),
        path: `${url.pathname}${url.search}`,
        method: init.method ?? 'GET',
        headers,
        timeout: IDLE_TIMEOUT_MS,
      },
      (reply) => resolve(responseOf(reply)),
    );
    request.on('error', reject);
    request.on('timeout', () => request.destroy(new Error(`no bytes from ${url.host} for ${IDLE_TIMEOUT_MS / 1000} s`)));
    const signal = init.signal;
    if (signal) {
      if (signal.aborted) request.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', () => request.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted')), { once: true });
    }
    const body = init.body;
    if (body === undefined || body === null) request.end();
    else if (typeof body === 'string' || body instanceof Uint8Array) request.end(body);
    else if (body instanceof ReadableStream) {
      const source = Readable.fromWeb(body as Parameters<typeof Readable.fromWeb>[0]);
      source.on('error', (error) => request.destroy(error));
      source.pipe(request);
    } else {
      request.destroy(new TypeError('pinned fetch: a body is a string, bytes or a ReadableStream'));
    }
  });
}

/** The reply as a fetch Response; its body streams, and cancelling it closes the connection. */
function responseOf(reply: IncomingMessage): Response {
  const headers = new Headers();
  for (const [name, value] of Object.entries(reply.headers)) {
    if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    else if (value !== undefined) headers.set(name, value);
  }
  const status = reply.statusCode ?? 0;
  if (NULL_BODY_STATUSES.has(status)) reply.resume();
  const body = NULL_BODY_STATUSES.has(status) ? null : (Readable.toWeb(reply) as unknown as ReadableStream<Uint8Array>);
  return new Response(body, { status, statusText: reply.statusMessage ?? '', headers });
}

/** The fetch a client uses: the pinned one when it pins a fingerprint, the global one otherwise. */
export function fetchFor(pinnedFingerprint: string | undefined): FetchFunction {
  return pinnedFingerprint === undefined ? globalThis.fetch : pinnedFetch(pinnedFingerprint);
}

/** The PinningError a failed fetch carries as its cause, if that is why it failed. */
export function pinningFailure(error: unknown): PinningError | undefined {
  const cause = (error as { cause?: unknown }).cause;
  return error instanceof PinningError ? error : cause instanceof PinningError ? cause : undefined;
}
