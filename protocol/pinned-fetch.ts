/**
 * HTTPS to the coordinator with its self-signed certificate pinned: the
 * coordinator answers TLS on its HTTP port with the certificate the join
 * string names by fingerprint, so agents get confidentiality (the bootstrap
 * token, configs, activation commands) without any CA. The certificate is
 * trusted because its SHA-256 is the pinned one, never by a CA or a name.
 */
import type { TLSSocket } from 'node:tls';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';
import { COORDINATOR_TLS_NAME } from './data-protocol.js';
import { normalizeFingerprint, PinningError } from './tls-pinning.js';

/** The signature of the global `fetch`, which the HTTP clients call. */
export type FetchFunction = typeof globalThis.fetch;

const pinnedFetches = new Map<string, FetchFunction>();

/**
 * A `fetch` whose https:// connections succeed only if the server presents
 * the certificate with SHA-256 fingerprint `fingerprint`; any other
 * certificate fails the request with PinningError (code
 * TLS_FINGERPRINT_MISMATCH) before a byte of it is sent. Plain http:// URLs
 * are refused too (a pinned client never downgrades). One connection pool
 * per fingerprint, shared by its callers.
 */
export function pinnedFetch(fingerprint: string): FetchFunction {
  const pinned = normalizeFingerprint(fingerprint);
  let pinnedFetchFunction = pinnedFetches.get(pinned);
  if (!pinnedFetchFunction) {
    // Chain validation is off because no CA signs this certificate; the
    // fingerprint check below replaces it, and is stricter. No TLS session
    // cache: every connection shows its certificate again.
    const connectTls = buildConnector({ rejectUnauthorized: false, servername: COORDINATOR_TLS_NAME, maxCachedSessions: 0 });
    const dispatcher = new Agent({
      connect: (options, callback) => {
        if (options.protocol !== 'https:') {
          callback(new PinningError(`refusing plain ${options.protocol}// to ${options.hostname}: this coordinator is reached over pinned HTTPS only`), null);
          return;
        }
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
    const fetchPinned = (input: Parameters<FetchFunction>[0], init?: Parameters<FetchFunction>[1]) =>
      undiciFetch(input as Parameters<typeof undiciFetch>[0], { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher });
    pinnedFetchFunction = fetchPinned as unknown as FetchFunction;
    pinnedFetches.set(pinned, pinnedFetchFunction);
  }
  return pinnedFetchFunction;
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
