/**
 * Helpers for the hostile-input suites (test/hostile-api, hostile-data-plane,
 * hostile-viewer): raw HTTP requests that a well-behaved client would never
 * send (any method with any body, paths exactly as written, a declared
 * length that lies, chunked bodies that never end), signed or not, and a
 * fingerprint of everything a refused request must leave unchanged.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type { Coordinator } from '../coordinator/coordinator.js';
import { STATE_TABLES } from '../coordinator/domain/state.js';
import type { Identity } from '../protocol/identity.js';
import { signRequest } from '../protocol/request-signing.js';

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The `{ error: { code, message } }` of an error answer, when it has that shape. */
  error?: { code: string; message: string };
  /** Bytes of the request body written before the answer came. */
  sent: number;
}

export interface RawRequest {
  method: string;
  /** Sent exactly as written: no normalisation of `..` or percent-escapes. */
  path: string;
  headers?: Record<string, string>;
  /** A whole body, sent with its content-length (unless `headers` says otherwise). */
  body?: Buffer | string;
  /**
   * A body of `chunked` bytes sent chunked, without content-length, in
   * 64 KiB pieces; writing stops as soon as the server answers.
   */
  chunked?: number;
  /** Declares this content-length but sends only `body` (or nothing); the answer must not wait for the rest. */
  declaredLength?: number;
}

/**
 * Sends one request exactly as described, over a plain TCP socket (Node's
 * HTTP client refuses or rewrites much of what a hostile client sends, and
 * fails a request whose body the server stopped reading); resolves with the
 * answer, its body read whole.
 */
export function rawRequest(baseUrl: string, options: RawRequest): Promise<RawResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const body = options.body === undefined ? undefined : Buffer.from(options.body);
    const headers: Record<string, string> = { host: url.host, ...options.headers };
    if (options.chunked !== undefined) headers['transfer-encoding'] = 'chunked';
    else if (options.declaredLength !== undefined) headers['content-length'] = String(options.declaredLength);
    else if (body !== undefined) headers['content-length'] ??= String(body.length);
    const head = `${options.method} ${options.path} HTTP/1.1\r\n${Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('')}\r\n`;
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    let received = Buffer.alloc(0);
    let sent = 0;
    let answered: ParsedResponse | undefined;
    let done = false;
    const timer = setTimeout(() => finish(undefined, new Error(`no complete answer to ${options.method} ${options.path.slice(0, 80)} within 15 s`)), 15_000);
    const finish = (response: RawResponse | undefined, error?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (response) resolve(response);
      else reject(error ?? new Error(`the connection closed without a complete answer (${received.length} bytes received)`));
    };
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      answered = parseResponse(received, sent);
      if (answered?.complete) finish(answered);
    });
    // The server may answer and close while we are still sending: that is the point, not a failure.
    socket.on('error', () => undefined);
    socket.on('close', () => finish(answered?.complete || answered?.untilClose ? answered : undefined));
    socket.on('connect', () => {
      socket.write(head);
      if (options.chunked !== undefined) {
        const piece = Buffer.alloc(64 * 1024, 0x61);
        const pump = (): void => {
          while (!answered && !socket.destroyed && sent < options.chunked!) {
            const part = piece.subarray(0, Math.min(piece.length, options.chunked! - sent));
            sent += part.length;
            if (!socket.write(Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]))) return void socket.once('drain', pump);
          }
          if (!answered && !socket.destroyed) socket.write('0\r\n\r\n');
        };
        pump();
      } else if (body) {
        sent = body.length;
        socket.write(body);
      }
    });
  });
}

interface ParsedResponse extends RawResponse {
  complete: boolean;
  /** No length and not chunked: the body ends when the connection closes. */
  untilClose: boolean;
}

/** The answer in `bytes` so far, or undefined before its head is complete. */
function parseResponse(bytes: Buffer, sent: number): ParsedResponse | undefined {
  const end = bytes.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = bytes.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine!)?.[1]);
  const headers: IncomingHttpHeaders = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let rest = bytes.subarray(end + 4);
  let body: Buffer;
  let complete: boolean;
  const untilClose = headers['content-length'] === undefined && headers['transfer-encoding'] !== 'chunked';
  if (headers['content-length'] !== undefined) {
    const length = Number(headers['content-length']);
    complete = rest.length >= length;
    body = rest.subarray(0, length);
  } else if (headers['transfer-encoding'] === 'chunked') {
    const parts: Buffer[] = [];
    complete = false;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n');
      if (lineEnd < 0) break;
      const size = parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16);
      if (size === 0) {
        complete = true;
        break;
      }
      if (rest.length < lineEnd + 2 + size + 2) break;
      parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      rest = rest.subarray(lineEnd + 2 + size + 2);
    }
    body = Buffer.concat(parts);
  } else {
    complete = status === 204 || status === 304;
    body = rest;
  }
  let error: RawResponse['error'];
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed?.error?.code === 'string') error = { code: parsed.error.code, message: String(parsed.error.message) };
  } catch {
    error = undefined;
  }
  return { status, headers, body, ...(error ? { error } : {}), sent, complete, untilClose };
}

/** Signature headers for `identity` over exactly this method, path and body, at `now` (the coordinator's clock). */
export function signedHeaders(identity: Identity, method: string, path: string, body: Buffer | string | undefined, now: number): Record<string, string> {
  return signRequest(identity, method, path, body === undefined ? undefined : Buffer.from(body), now);
}

/**
 * Everything a refused request must leave as it was: the audit log's head
 * and every state table (keys, tokens, agents, facts, graphs, configs),
 * and the castore's registered store paths.
 */
export function visibleState(coordinator: Coordinator): string {
  const tables = Object.fromEntries(STATE_TABLES.map((table) => [table, coordinator.state.all(table)]));
  const storePaths = coordinator.castore.listStorePaths().map((info) => info.storePath);
  return JSON.stringify({ lastSeq: coordinator.lastSeq, tables, storePaths });
}
