/**
 * Serving the coordinator's HTTP API on a TCP address, as plain HTTP and as
 * HTTPS with the coordinator's pinned certificate on the same port: a
 * connection whose first byte is a TLS handshake record goes to the HTTPS
 * server. Browsers (the viewer), Nix (the binary cache) and a local CLI use
 * plain HTTP; agents, whose join string pins the certificate, use HTTPS and
 * get confidentiality without a CA or a second port to open.
 *
 * HTTPS speaks HTTP/2 to clients that offer it (ALPN `h2`: the agents and
 * the CLI, protocol/pinned-fetch.ts) and HTTP/1.1 to the others. With
 * HTTP/2 an agent's held watch and its other requests share one connection;
 * over HTTP/1.1 each request beside a held watch needed a connection, and
 * so a TLS handshake, of its own: at 10,000 agents those handshakes were
 * most of the coordinator's CPU (bench/README.md, "Capacity").
 */
import { getRequestListener } from '@hono/node-server';
import http from 'node:http';
import http2, { type Http2Session } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Coordinator } from './coordinator.js';
import { createHttpApi, type HttpApiOptions } from './api/http.js';

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

/** What serving adds to the API's options. */
export interface ServeOptions extends HttpApiOptions {
  /** Connections open at once (default DEFAULT_MAX_CONNECTIONS); more are closed as they arrive. */
  maxConnections?: number;
}

/**
 * Connections open at once, by default. Each costs the coordinator memory
 * while open: ~20 KiB over HTTP, ~75 KiB over HTTPS with HTTP/2 (bench/
 * README.md, "Capacity"), bounded per connection by the limits below, so
 * the count is what bounds the total: ~2.5 GB at this limit, all HTTPS.
 * Room for 10,000 agents and, over HTTP/1.1, a second connection each
 * beside its held watch. `ferry coordinator serve --max-connections`.
 */
export const DEFAULT_MAX_CONNECTIONS = 32_768;
/** At most one log line per this long about connections refused at the limit. */
const DROP_LOG_INTERVAL_MS = 10_000;

/** The first byte of a TLS connection: a handshake record (RFC 8446 section 5.1). */
const TLS_HANDSHAKE_RECORD = 0x16;
/** Idle time before a connection's first TCP keepalive probe (many NATs forget a mapping after a few minutes). */
const TCP_KEEPALIVE_MS = 45_000;
/** Connections waiting to be accepted. */
const LISTEN_BACKLOG = 4096;
/** A connection that sends nothing for this long is closed before it is given to either server. */
const FIRST_BYTE_TIMEOUT_MS = 30_000;
/** An HTTP/1.1 keep-alive connection unused for this long is closed (Node's https default, which HTTP/2's server lacks for HTTP/1.1). */
const HTTP1_KEEP_ALIVE_MS = 5_000;
/** An HTTP/2 connection with no open request for this long is closed (GOAWAY): an agent always holds its watch, so only leftovers idle. */
const HTTP2_IDLE_SESSION_MS = 30_000;
/**
 * Requests one HTTP/2 connection may have open at once. An agent needs two
 * or three (its watch, a report, a fetch); the coordinator's per-agent watch
 * cap (TOO_MANY_WATCHES) bounds watches whatever this allows.
 */
const HTTP2_MAX_CONCURRENT_STREAMS = 32;
/** How long a stopping coordinator lets requests under way finish before it cuts the connections left. */
const HTTP2_CLOSE_GRACE_MS = 5_000;
/** The largest header block a client may send (HTTP/1.1's default limit is 16 KiB too). */
const HTTP2_MAX_HEADER_LIST_BYTES = 16 * 1024;
/**
 * How much of a request body (a push over the HTTPS fallback) a client may
 * send ahead of the coordinator reading it: per request, and for its whole
 * connection, which bounds what one connection can make the coordinator
 * buffer. HTTP/2's 64 KiB default would cap a push at 64 KiB per round
 * trip (5 Mbit/s on a 100 ms link); 2 MiB allows 160 Mbit/s there.
 */
const HTTP2_STREAM_WINDOW_BYTES = 1024 * 1024;
const HTTP2_CONNECTION_WINDOW_BYTES = 2 * 1024 * 1024;

/**
 * Closes an HTTP/2 connection (GOAWAY, its open requests still answered)
 * once it has had no open request for HTTP2_IDLE_SESSION_MS. Not the
 * session's own timeout, which counts frames: a held watch sends none for
 * minutes and would look idle.
 */
function closeWhenIdle(session: Http2Session): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), HTTP2_IDLE_SESSION_MS);
    timer.unref();
  };
  session.on('stream', (stream) => {
    open++;
    clearTimeout(timer);
    stream.once('close', () => {
      if (--open === 0 && !session.closed) arm();
    });
  });
  session.once('close', () => clearTimeout(timer));
  arm();
}

/** Listens on `host:port` (port 0 picks a free one); resolves once listening. */
export function startHttpServer(coordinator: Coordinator, host: string, port: number, options: ServeOptions = {}): Promise<RunningServer> {
  const { maxConnections = DEFAULT_MAX_CONNECTIONS, ...apiOptions } = options;
  const stopping = new AbortController();
  const handleRequest = getRequestListener(createHttpApi(coordinator, { ...apiOptions, stopping: stopping.signal }).fetch);
  const plain = http.createServer(handleRequest);
  const secure = http2.createSecureServer(
    {
      cert: coordinator.tls.certificatePem,
      key: coordinator.tls.privateKeyPem,
      allowHTTP1: true,
      settings: { maxConcurrentStreams: HTTP2_MAX_CONCURRENT_STREAMS, maxHeaderListSize: HTTP2_MAX_HEADER_LIST_BYTES, initialWindowSize: HTTP2_STREAM_WINDOW_BYTES },
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: 100,
    },
    handleRequest,
  );
  // Its HTTP/1.1 connections are served by node:http's machinery, which reads these (Node's types omit them).
  const secureHttp1 = secure as unknown as Pick<http.Server, 'keepAliveTimeout' | 'closeIdleConnections'>;
  secureHttp1.keepAliveTimeout = HTTP1_KEEP_ALIVE_MS;
  const sessions = new Set<Http2Session>();
  secure.on('session', (session: Http2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    session.once('connect', () => session.setLocalWindowSize(HTTP2_CONNECTION_WINDOW_BYTES));
    closeWhenIdle(session);
  });
  // Neither listens itself; 'listening' starts their header and request timeouts.
  plain.emit('listening');
  secure.emit('listening');
  // Paused on connect: the first byte is read through JavaScript and put back, and whichever
  // server takes the socket wraps its native handle, reading the byte back from the socket's
  // buffer first (TLS: initRead): handing TLS a JavaScript stream instead was slower (bench/README.md, "Figures behind code comments").
  // noDelay: the API servers never accept a connection themselves, so their own default (Nagle off) is never
  // applied; with Nagle, a reply written in pieces waited for the client's delayed ACK (bench/README.md, "Figures behind code comments").
  // keepAlive: an agent's watch is a request held for minutes; TCP keepalives (from the kernel, no work
  // here) keep NAT mappings on the way open and let a vanished agent's connection be closed.
  /** Every connection accepted and still open: what a stopping server cuts after its grace period. */
  const connections = new Set<net.Socket>();
  const listener = net.createServer({ pauseOnConnect: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_MS }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    socket.setTimeout(FIRST_BYTE_TIMEOUT_MS, () => socket.destroy());
    socket.once('readable', () => {
      socket.setTimeout(0);
      const first = socket.read(1) as Buffer | null;
      if (!first) return void socket.destroy();
      socket.unshift(first);
      (first[0] === TLS_HANDSHAKE_RECORD ? secure : plain).emit('connection', socket);
    });
    socket.on('error', () => socket.destroy());
  });
  // Past the limit the kernel's connection is accepted and closed at once (net.Server's maxConnections).
  listener.maxConnections = maxConnections;
  options.metrics?.setConnectionsOpen(() => connections.size);
  let dropped = 0;
  let lastDropLog = 0;
  listener.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now - lastDropLog < DROP_LOG_INTERVAL_MS) return;
    lastDropLog = now;
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    log(`ferry coordinator: refused ${dropped} connection(s): ${maxConnections} are open, the limit (ferry coordinator serve --max-connections)`);
    dropped = 0;
  });
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    // A fleet reconnects at once after a restart: thousands of connections in a second overflowed Node's
    // default backlog of 511 (the kernel logged SYN cookies; bench:capacity). The kernel caps it (somaxconn).
    listener.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      const info = listener.address() as AddressInfo;
      const shownHost = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${shownHost}:${info.port}`,
        close: () =>
          new Promise<void>((done) => {
            // Held watches are answered first, so no connection waits for one's deadline (minutes).
            stopping.abort();
            // Ends idle keep-alive connections; the listener closes once the busy ones finish.
            plain.close();
            secure.close();
            secureHttp1.closeIdleConnections();
            // GOAWAY: requests under way finish. One whose client stopped reading waits for a flow-control
            // window that never opens (over HTTP/1.1 the kernel's buffers took such a reply), so after a grace
            // period what is left is cut.
            // The raw sockets are cut, not the sessions: a session an error destroyed can leave its socket open.
            for (const session of sessions) session.close();
            setTimeout(() => connections.forEach((socket) => socket.destroy()), HTTP2_CLOSE_GRACE_MS).unref();
            listener.close(() => done());
          }),
      });
    });
  });
}
