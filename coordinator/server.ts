/**
 * Serving the coordinator's HTTP API on a TCP address, as plain HTTP and as
 * HTTPS with the coordinator's pinned certificate on the same port: a
 * connection whose first byte is a TLS handshake record goes to the HTTPS
 * server. Browsers (the viewer), Nix (the binary cache) and a local CLI use
 * plain HTTP; agents, whose join string pins the certificate, use HTTPS and
 * get confidentiality without a CA or a second port to open.
 */
import { getRequestListener } from '@hono/node-server';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import type { Coordinator } from './coordinator.js';
import { createHttpApi, type HttpApiOptions } from './api/http.js';

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

/** The first byte of a TLS connection: a handshake record (RFC 8446 section 5.1). */
const TLS_HANDSHAKE_RECORD = 0x16;
/** Idle time before a connection's first TCP keepalive probe (many NATs forget a mapping after a few minutes). */
const TCP_KEEPALIVE_MS = 45_000;
/** Connections waiting to be accepted. */
const LISTEN_BACKLOG = 4096;
/** A connection that sends nothing for this long is closed before it is given to either server. */
const FIRST_BYTE_TIMEOUT_MS = 30_000;

/** Listens on `host:port` (port 0 picks a free one); resolves once listening. */
export function startHttpServer(coordinator: Coordinator, host: string, port: number, options: HttpApiOptions = {}): Promise<RunningServer> {
  const stopping = new AbortController();
  const handleRequest = getRequestListener(createHttpApi(coordinator, { ...options, stopping: stopping.signal }).fetch);
  const plain = http.createServer(handleRequest);
  const secure = https.createServer({ cert: coordinator.tls.certificatePem, key: coordinator.tls.privateKeyPem }, handleRequest);
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
  const listener = net.createServer({ pauseOnConnect: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_MS }, (socket) => {
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
            listener.close(() => done());
          }),
      });
    });
  });
}
