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
import { Duplex } from 'node:stream';
import type { Coordinator } from './coordinator.js';
import { createHttpApi, type HttpApiOptions } from './api/http.js';

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

/** The first byte of a TLS connection: a handshake record (RFC 8446 section 5.1). */
const TLS_HANDSHAKE_RECORD = 0x16;
/** A connection that sends nothing for this long is closed before it is given to either server. */
const FIRST_BYTE_TIMEOUT_MS = 30_000;

/**
 * The socket as a stream that first replays `first`. Node's TLS server
 * reads a net.Socket through its native handle, which would skip bytes
 * already read from it; a plain Duplex is read through JavaScript.
 */
function replayingStream(socket: net.Socket, first: Buffer): Duplex {
  const stream = new Duplex({
    read: () => void socket.resume(),
    write: (chunk: Buffer, _encoding, callback) => void socket.write(chunk, callback),
    final: (callback) => void socket.end(callback),
    destroy: (error, callback) => {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  stream.push(first);
  socket.on('data', (chunk: Buffer) => {
    if (!stream.push(chunk)) socket.pause();
  });
  socket.on('end', () => stream.push(null));
  socket.on('error', (error) => stream.destroy(error));
  socket.on('close', () => stream.destroy());
  return stream;
}

/** Listens on `host:port` (port 0 picks a free one); resolves once listening. */
export function startHttpServer(coordinator: Coordinator, host: string, port: number, options: HttpApiOptions = {}): Promise<RunningServer> {
  const handleRequest = getRequestListener(createHttpApi(coordinator, options).fetch);
  const plain = http.createServer(handleRequest);
  const secure = https.createServer({ cert: coordinator.tls.certificatePem, key: coordinator.tls.privateKeyPem }, handleRequest);
  // Neither listens itself; 'listening' starts their header and request timeouts.
  plain.emit('listening');
  secure.emit('listening');
  const listener = net.createServer((socket) => {
    socket.setTimeout(FIRST_BYTE_TIMEOUT_MS, () => socket.destroy());
    socket.once('data', (first: Buffer) => {
      socket.setTimeout(0);
      socket.pause();
      if (first[0] === TLS_HANDSHAKE_RECORD) {
        secure.emit('connection', replayingStream(socket, first));
      } else {
        socket.unshift(first);
        plain.emit('connection', socket);
        socket.resume();
      }
    });
    socket.on('error', () => socket.destroy());
  });
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(port, host, () => {
      const info = listener.address() as AddressInfo;
      const shownHost = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${shownHost}:${info.port}`,
        close: () =>
          new Promise<void>((done) => {
            // Ends idle keep-alive connections; the listener closes once the busy ones finish.
            plain.close();
            secure.close();
            listener.close(() => done());
          }),
      });
    });
  });
}
