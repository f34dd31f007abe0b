/**
 * HTTPS to the coordinator with its self-signed certificate pinned: the
 * coordinator answers TLS on its HTTP port with the certificate the join
 * string names by fingerprint, so agents get confidentiality (the bootstrap
 * token, configs, activation commands) without any CA. The certificate is
 * trusted because its SHA-256 is the pinned one, never by a CA or a name.
 */
import type { TLSSocket } from 'node:tls';
import { COORDINATOR_TLS_NAME } from './data-protocol.js';
import { normalizeFingerprint, PinningError } from './tls-pinning.js';

/** How the HTTP clients fetch: the global `fetch`, or a pinned one. */
export type FetchFunction = (url: URL, init: RequestInit) => Promise<Response>;

const pinnedFetches = new Map<string, FetchFunction>();

/**
 * A `fetch` that speaks TLS to the URL's host and port whatever its scheme
 * (`http://host:7070` is the coordinator's port, which answers both) and
 * succeeds only if the server presents the certificate with SHA-256
 * fingerprint `fingerprint`; any other certificate fails the request with
 * PinningError (code TLS_FINGERPRINT_MISMATCH) before a byte of it is
 * sent. One connection pool per fingerprint, shared by its callers.
 */
export function pinnedFetch(fingerprint: string): FetchFunction {
  const pinned = normalizeFingerprint(fingerprint);
  let pinnedFetchFunction = pinnedFetches.get(pinned);
  if (!pinnedFetchFunction) {
    // undici loads with the first pinned request (~60 ms, ~10 MiB): commands that make none start without it.
    const ready = import('undici').then((undici) => fetchThroughPin(undici, pinned));
    pinnedFetchFunction = async (url, init) => (await ready)(url, init);
    pinnedFetches.set(pinned, pinnedFetchFunction);
  }
  return pinnedFetchFunction;
}

function fetchThroughPin(undici: typeof import('undici'), pinned: string): FetchFunction {
  // Chain validation is off because no CA signs this certificate; the
  // fingerprint check below replaces it, and is stricter. No TLS session
  // cache: every connection shows its certificate again.
  const connectTls = undici.buildConnector({ rejectUnauthorized: false, servername: COORDINATOR_TLS_NAME, maxCachedSessions: 0 });
  const dispatcher = new undici.Agent({
    connect: (options, callback) => {
      connectTls(options, (error, socket) => {
        if (error) return callback(error, null);
        const presented = (socket as TLSSocket).getPeerCertificate().fingerprint256?.replace(/:/g, '').toLowerCase();
        if (presented !== pinned) {
          socket.destroy();
          return callback(new PinningError(`the server at ${options.hostname}:${options.port} presented TLS certificate ${presented ?? '(none)'}, but ${pinned} is pinned: refusing to talk to it`), null);
        }
        callback(null, socket);
      });
    },
  });
  // undici's own fetch (the global one cannot take this package's dispatcher
  // on every Node 20); its Request and Response types differ from the DOM
  // ones only in details the clients do not use.
  return (url, init) => {
    const tlsUrl = new URL(url);
    if (tlsUrl.protocol === 'http:' && tlsUrl.port === '') tlsUrl.port = '80';
    tlsUrl.protocol = 'https:';
    return undici.fetch(tlsUrl, { ...(init as Parameters<typeof undici.fetch>[1]), dispatcher }) as unknown as Promise<Response>;
  };
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
