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
 *
 * HTTP/2 when the coordinator offers it (ALPN), HTTP/1.1 otherwise: over
 * HTTP/2 all of a client's requests to an origin share one connection, so
 * an agent's report beside its held watch costs the coordinator no TLS
 * handshake (bench/README.md, "Capacity").
 */
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { connect as http2Connect, type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2';
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
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

/**
 * A kept-alive connection unused for this long is closed (undici's default too). Shorter than
 * the coordinator's own idle limits (5 s for HTTP/1.1, 30 s for HTTP/2), so this client closes an
 * idle connection before the coordinator does, and never sends a request into that race.
 */
const KEEP_ALIVE_MS = 4_000;

/**
 * HTTP/2 receive windows: how much of a reply the coordinator may send
 * before this client reads it. HTTP/2's default (64 KiB, for the stream and
 * the whole connection) would cap a closure fetched over the HTTPS fallback
 * at 64 KiB per round trip: 5 Mbit/s on a 100 ms link.
 */
const HTTP2_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const HTTP2_CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;

/** Headers HTTP/2 forbids (RFC 9113 section 8.2.2) or carries as pseudo-headers. */
const NOT_FOR_HTTP2 = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host']);

/** Statuses whose responses have no body (a `Response` with one is refused). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * Opens a TLS connection to `host:port` offering `alpn`, and hands it to
 * `done` only once it presents the certificate with fingerprint `pinned`;
 * otherwise `done` gets a PinningError (or the connect failure) and the
 * connection is closed: nothing is ever written to an unverified one.
 * Chain validation is off because no CA signs this certificate; the
 * fingerprint check replaces it, and is stricter. No TLS session reuse:
 * every connection shows its certificate.
 */
function connectPinned(host: string, port: number, pinned: string, alpn: readonly string[], done: (error: Error | null, socket: TLSSocket) => void): TLSSocket {
  const socket = tlsConnect({ host: host.replace(/^\[|\]$/g, ''), port, servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false, ALPNProtocols: [...alpn] });
  // Requests are written in pieces (headers, then the body): with Nagle, the second waits for the server's delayed ACK.
  // Keepalives: the agent's watch holds a request for minutes, across NATs that may forget an idle mapping.
  socket.once('connect', () => socket.setNoDelay(true).setKeepAlive(true, TCP_KEEPALIVE_MS));
  const failed = (error: Error) => done(error, socket);
  socket.once('error', failed);
  const connectTimedOut = () => socket.destroy(new Error(`TLS connection to ${host}:${port} timed out after ${CONNECT_TIMEOUT_MS / 1000} s`));
  socket.setTimeout(CONNECT_TIMEOUT_MS);
  socket.once('timeout', connectTimedOut);
  socket.once('secureConnect', () => {
    socket.off('error', failed);
    socket.off('timeout', connectTimedOut);
    socket.setTimeout(0);
    const presented = socket.getPeerCertificate().fingerprint256?.replace(/:/g, '').toLowerCase();
    if (presented !== pinned) {
      socket.destroy();
      done(new PinningError(`the server at ${host}:${port} presented TLS certificate ${presented ?? '(none)'}, but ${pinned} is pinned: refusing to talk to it`), socket);
      return;
    }
    done(null, socket);
  });
  return socket;
}

/**
 * HTTP/1.1 connections to the coordinator's port (one that does not offer
 * HTTP/2), each handed to a request only after the TLS handshake showed the
 * pinned certificate. Kept alive between requests for KEEP_ALIVE_MS (idle
 * ones do not keep the process running).
 */
class PinnedAgent extends HttpsAgent {
  constructor(private readonly pinned: string) {
    // `timeout` is how long a connection may sit unused in the pool; requests set their own (IDLE_TIMEOUT_MS).
    super({ keepAlive: true, timeout: KEEP_ALIVE_MS });
  }

  override createConnection(options: RequestOptions, created?: (error: Error | null, socket: Duplex) => void): Duplex | null | undefined {
    connectPinned(String(options.host ?? 'localhost'), Number(options.port), this.pinned, ['http/1.1'], (error, socket) => created?.(error, socket));
    return undefined;
  }
}

/**
 * One HTTP/2 connection per origin, opened on first use after the pinned
 * certificate was seen, shared by every request to that origin. Idle ones
 * (no open request) do not keep the process running and close after
 * KEEP_ALIVE_MS. An origin whose server does not offer HTTP/2 is served by
 * the HTTP/1.1 agent from then on.
 */
class PinnedConnections {
  private readonly http1: PinnedAgent;
  private readonly sessions = new Map<string, Promise<PinnedSession | 'http/1.1'>>();

  constructor(private readonly pinned: string) {
    this.http1 = new PinnedAgent(pinned);
  }

  async fetch(url: URL, init: RequestInit): Promise<Response> {
    const port = url.port === '' ? (url.protocol === 'http:' ? 80 : 443) : Number(url.port);
    const session = await this.sessionFor(url.hostname, port);
    return session === 'http/1.1' ? fetchOverHttp1(this.http1, url, port, init) : fetchOverHttp2(session, url, init);
  }

  private sessionFor(host: string, port: number): Promise<PinnedSession | 'http/1.1'> {
    const origin = `${host}:${port}`;
    let session = this.sessions.get(origin);
    if (!session) {
      const opening = this.openSession(origin, host, port, () => {
        if (this.sessions.get(origin) === opening) this.sessions.delete(origin);
      });
      session = opening;
      this.sessions.set(origin, opening);
    }
    return session;
  }

  /**
   * Connects to `origin`: HTTP/2 when the server offers it, else 'http/1.1'.
   * `forget` runs once the connection can serve no more requests (failed,
   * closed, GOAWAY), so the next request opens another.
   */
  private openSession(origin: string, host: string, port: number, forget: () => void): Promise<PinnedSession | 'http/1.1'> {
    return new Promise((resolve, reject) => {
      connectPinned(host, port, this.pinned, ['h2', 'http/1.1'], (error, socket) => {
        if (error) {
          forget();
          return reject(error);
        }
        if (socket.alpnProtocol !== 'h2') {
          // Seen once per origin; that server's requests go over HTTP/1.1 from now on.
          socket.destroy();
          return resolve('http/1.1');
        }
        const session = http2Connect(`https://${origin}`, {
          createConnection: () => socket,
          settings: { enablePush: false, initialWindowSize: HTTP2_STREAM_WINDOW_BYTES },
        });
        session.setLocalWindowSize(HTTP2_CONNECTION_WINDOW_BYTES);
        // Errors reach the requests on it.
        session.on('error', forget);
        session.once('goaway', forget);
        session.once('close', forget);
        const pinned = { session, requests: closeIdleSession(session, forget) };
        // Used once the server's settings are known: until then the client would assume no limit on
        // concurrent requests, and a burst over the server's would be refused (REFUSED_STREAM).
        session.once('remoteSettings', () => resolve(pinned));
        session.once('close', () => reject(new Error(`the connection to ${origin} closed before the HTTP/2 handshake finished`)));
      });
    });
  }
}

/** An HTTP/2 connection, and how its requests are counted (closeIdleSession). */
interface PinnedSession {
  session: ClientHttp2Session;
  requests: { opened(): void; closed(): void };
}

/**
 * Keeps `session` referenced (the process running) while a request is
 * open on it, and closes it once it has had none for KEEP_ALIVE_MS; the
 * caller reports each request's start and end. `forget` runs before the
 * close: a closing session refuses new requests ("the session has been
 * destroyed"), so the next one must open another rather than find this one.
 */
function closeIdleSession(session: ClientHttp2Session, forget: () => void): PinnedSession['requests'] {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const idle = () => {
    session.unref();
    timer = setTimeout(() => {
      forget();
      session.close();
    }, KEEP_ALIVE_MS);
    timer.unref();
  };
  session.once('close', () => clearTimeout(timer));
  // Referenced until its first request is done: the caller that opened it is about to send one.
  return {
    opened: () => {
      if (open++ === 0) {
        clearTimeout(timer);
        session.ref();
      }
    },
    closed: () => {
      if (--open === 0 && !session.closed) idle();
    },
  };
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
    const connections = new PinnedConnections(pinned);
    pinnedFetchFunction = (url, init) => connections.fetch(url, init);
    pinnedFetches.set(pinned, pinnedFetchFunction);
  }
  return pinnedFetchFunction;
}

function fetchOverHttp1(agent: PinnedAgent, url: URL, port: number, init: RequestInit): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, name) => (headers[name] = value));
    const request = httpsRequest(
      {
        agent,
        host: url.hostname,
        port,
        path: `${url.pathname}${url.search}`,
        method: init.method ?? 'GET',
        headers,
        timeout: IDLE_TIMEOUT_MS,
      },
      (reply) => resolve(responseOf(reply, reply.statusCode ?? 0, reply.statusMessage ?? '', reply.headers)),
    );
    request.on('error', reject);
    request.on('timeout', () => request.destroy(new Error(`no bytes from ${url.host} for ${IDLE_TIMEOUT_MS / 1000} s`)));
    const signal = init.signal;
    if (signal) {
      if (signal.aborted) request.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', () => request.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted')), { once: true });
    }
    writeBody(request, init.body);
  });
}

/** One request as a stream of `session`; the same contract as fetchOverHttp1. */
function fetchOverHttp2({ session, requests }: PinnedSession, url: URL, init: RequestInit): Promise<Response> {
  return new Promise((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ':method': init.method ?? 'GET', ':path': `${url.pathname}${url.search}` };
    new Headers(init.headers).forEach((value, name) => {
      if (!NOT_FOR_HTTP2.has(name)) headers[name] = value;
    });
    const body = init.body;
    let stream: ReturnType<ClientHttp2Session['request']>;
    try {
      // Throws if the session is closing (GOAWAY): the request was not sent, and a GET may be retried.
      stream = session.request(headers, { endStream: body === undefined || body === null });
    } catch (error) {
      session.destroy();
      return reject(error as Error);
    }
    requests.opened();
    stream.on('error', reject);
    stream.once('close', () => {
      requests.closed();
      // Closed before a reply (reset, cancelled, the connection gone); a no-op once resolved.
      const reason = init.signal?.aborted ? init.signal.reason : undefined;
      reject(reason instanceof Error ? reason : new Error(`the request to ${url.host} ended before a reply (HTTP/2 stream closed, code ${stream.rstCode ?? '?'})`));
    });
    stream.setTimeout(IDLE_TIMEOUT_MS, () => stream.destroy(new Error(`no bytes from ${url.host} for ${IDLE_TIMEOUT_MS / 1000} s`)));
    stream.once('response', (replyHeaders) => {
      const status = Number(replyHeaders[':status']);
      const plainHeaders: IncomingHttpHeaders = {};
      for (const [name, value] of Object.entries(replyHeaders)) if (!name.startsWith(':')) plainHeaders[name] = value as string | string[];
      resolve(responseOf(stream, status, '', plainHeaders));
    });
    const signal = init.signal;
    if (signal) {
      const abort = () => stream.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (signal.aborted) abort();
      signal.addEventListener('abort', abort, { once: true });
      stream.once('close', () => signal.removeEventListener('abort', abort));
    }
    if (body !== undefined && body !== null) writeBody(stream, body);
  });
}

/** Writes a request body (a string, bytes or a ReadableStream) to `sink` and ends it; anything else destroys it. */
function writeBody(sink: NodeJS.WritableStream & { destroy(error?: Error): void }, body: RequestInit['body']): void {
  if (body === undefined || body === null) sink.end();
  else if (typeof body === 'string' || body instanceof Uint8Array) sink.end(body);
  else if (body instanceof ReadableStream) {
    const source = Readable.fromWeb(body as Parameters<typeof Readable.fromWeb>[0]);
    source.on('error', (error) => sink.destroy(error));
    source.pipe(sink);
  } else {
    sink.destroy(new TypeError('pinned fetch: a body is a string, bytes or a ReadableStream'));
  }
}

/** A reply as a fetch Response; its body streams, and cancelling it closes the connection (HTTP/1.1) or the stream (HTTP/2). */
function responseOf(reply: Readable, status: number, statusText: string, replyHeaders: IncomingHttpHeaders): Response {
  const headers = new Headers();
  for (const [name, value] of Object.entries(replyHeaders)) {
    if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    else if (value !== undefined) headers.set(name, value);
  }
  if (NULL_BODY_STATUSES.has(status)) reply.resume();
  const body = NULL_BODY_STATUSES.has(status) ? null : (Readable.toWeb(reply) as unknown as ReadableStream<Uint8Array>);
  return new Response(body, { status, statusText, headers });
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
