/**
 * Opening a data-plane client for a coordinator known by its HTTP URL:
 * learns the QUIC port from `/v1/info`, fetches the TLS certificate and
 * checks it against the pinned fingerprint (a DataPlaneRoute, which can be
 * kept for the next client), then connects (QUIC first, HTTP fallback).
 */
import { DataClient, type DataClientOptions } from './data-client.js';
import { CoordinatorHttpClient } from './http-client.js';
import type { Identity } from './identity.js';
import type { z } from 'zod';
import type { InfoSchema } from './api/views.js';
import { checkPinnedCertificate, PinningError } from './tls-pinning.js';
import { fetchFor, pinningFailure } from './pinned-fetch.js';
import { readAtMost } from './bounded-read.js';
import { RELAY_QUIC_INFO_PATH, RelayQuicInfoSchema, type RelayEndpoint, type RelayQuicInfo } from './relays.js';
import type { RelayQuicInfoCache } from './relay-quic-info-cache.js';

/** What `GET /v1/info` says of a coordinator (protocol/api/views.ts InfoSchema). */
export type CoordinatorInfo = z.infer<typeof InfoSchema>;

export interface OpenDataClientOptions extends Pick<DataClientOptions, 'httpOnly' | 'retries' | 'onNotice' | 'connectTimeoutMs' | 'compression' | 'warmHttps'> {
  /** The certificate fingerprint to trust; without one, the coordinator's own claim is used (trust on first use). */
  tlsFingerprint?: string;
  /** `httpUrl` is the coordinator's own port: talk TLS to it with `tlsFingerprint` pinned (join strings with `tls=pinned`). */
  pinnedTls?: boolean;
}

/**
 * Where a coordinator's data plane is and how to trust it, as two requests
 * (`/v1/info`, `/v1/tls-certificate`) found out: a client that opens data
 * clients again and again (the agent, once per deployment) keeps it and
 * skips those round trips (dataClientFor).
 */
export interface DataPlaneRoute {
  info: CoordinatorInfo;
  /** The coordinator's certificate, checked against the pinned fingerprint; absent: HTTP only. */
  certificatePem?: string;
  /** `host:port` of its QUIC listener; absent: HTTP only. */
  quicAddress?: string;
}

/**
 * Learns the data plane of the coordinator at `httpUrl`. Refuses
 * (PinningError) a certificate that does not match the pinned fingerprint;
 * when the coordinator has no QUIC listener (or `httpOnly`), the route is
 * HTTP only.
 */
export async function discoverDataPlane(httpUrl: string, options: OpenDataClientOptions = {}): Promise<DataPlaneRoute> {
  const pinnedFingerprint = pinnedFingerprintOf(options);
  const http = new CoordinatorHttpClient(httpUrl, undefined, pinnedFingerprint === undefined ? {} : { pinnedFingerprint });
  const info = await http.call('info');
  if (!info.quicPort || options.httpOnly) return { info };
  const pem = await (await http.send('GET', '/v1/tls-certificate')).text();
  const certificatePem = checkPinnedCertificate(pem, options.tlsFingerprint ?? info.tlsFingerprint);
  return { info, certificatePem, quicAddress: `${new URL(httpUrl).hostname.replace(/^\[|\]$/g, '')}:${info.quicPort}` };
}

/** A DataClient for the coordinator at `httpUrl` over `route` (discoverDataPlane); connects on its first request. */
export function dataClientFor(httpUrl: string, identity: Identity, route: DataPlaneRoute, options: OpenDataClientOptions = {}): DataClient {
  const pinnedFingerprint = pinnedFingerprintOf(options);
  // Ask for compression only from a coordinator that says it has it: an older one refuses the field.
  const compression = route.info.wireEncodings?.includes('zstd') ? options.compression : 'off';
  const { quicAddress, certificatePem } = route;
  return new DataClient({ ...options, ...(compression ? { compression } : {}), identity, httpUrl, ...(pinnedFingerprint ? { pinnedFingerprint } : {}), ...(quicAddress ? { quicAddress } : {}), ...(certificatePem ? { certificatePem } : {}) });
}

/** The fingerprint TLS to `httpUrl`'s own port is pinned to, when the options say so; refuses (PinningError) pinning without one. */
function pinnedFingerprintOf(options: OpenDataClientOptions): string | undefined {
  if (options.pinnedTls && !options.tlsFingerprint) throw new PinningError('pinned TLS needs the fingerprint to pin');
  return options.pinnedTls ? options.tlsFingerprint : undefined;
}

/**
 * A DataClient for the coordinator at `httpUrl` (discoverDataPlane, then
 * dataClientFor). Refuses (PinningError) a certificate that does not match
 * the pinned fingerprint; when the coordinator has no QUIC listener, the
 * client uses HTTP only.
 */
export async function openDataClient(httpUrl: string, identity: Identity, options: OpenDataClientOptions = {}): Promise<{ client: DataClient; info: CoordinatorInfo; route: DataPlaneRoute }> {
  const route = await discoverDataPlane(httpUrl, options);
  return { client: dataClientFor(httpUrl, identity, route, options), info: route.info, route };
}

export interface RelayDataClientOptions extends Pick<DataClientOptions, 'retries' | 'onNotice' | 'connectTimeoutMs' | 'replyTimeoutMs' | 'headers' | 'httpOnly'> {
  /** The relays' answers this caller remembers (the agent's, for ten minutes): asked only when it holds none for this relay. */
  quicInfo?: RelayQuicInfoCache;
}

/**
 * A DataClient for `relay` (its HTTPS pinned to the fingerprint the
 * coordinator gave): QUIC first when the relay says it listens for it
 * (RELAY_QUIC_INFO_PATH, asked within `connectTimeoutMs`, or its answer
 * remembered in `quicInfo`) and its certificate is the pinned one, HTTPS
 * otherwise and as the fallback, as to a coordinator; zstd accepted (a
 * relay's kept streams). A relay that cannot be asked (down, withholding) gets
 * an HTTPS-only client, which fails as it did before relays spoke QUIC.
 * Refuses (PinningError) a relay whose certificate is not the pinned one.
 */
export async function openRelayDataClient(relay: RelayEndpoint, identity: Identity, options: RelayDataClientOptions = {}): Promise<DataClient> {
  const { quicInfo: cache, ...clientOptions } = options;
  // zstd accepted: a relay serves its upstream's compressed stream as it is (relay/stream-recordings.ts), the rest plain.
  const base = { ...clientOptions, identity, httpUrl: relay.url, pinnedFingerprint: relay.fingerprint, compression: 'zstd' as const };
  if (options.httpOnly) return new DataClient(base);
  let info = cache?.get(relay);
  const cached = info !== undefined;
  if (!cached) {
    try {
      const answer = await askRelayQuicInfo(relay, options.connectTimeoutMs ?? 3000);
      // Checked before it is remembered: a certificate other than the pinned one is refused, never kept.
      info = answer ? { port: answer.port, certificatePem: checkPinnedCertificate(answer.certificatePem, relay.fingerprint) } : null;
      cache?.set(relay, info);
    } catch (error) {
      const pinning = error instanceof PinningError ? error : pinningFailure(error);
      if (pinning) throw pinning;
      options.onNotice?.(`cannot ask whether it serves QUIC (${(error as Error).message}): HTTPS only`);
    }
  }
  if (!info) return new DataClient({ ...base, httpOnly: true });
  const host = new URL(relay.url).hostname.replace(/^\[|\]$/g, '');
  return new DataClient({
    ...base,
    quicAddress: `${host}:${info.port}`,
    certificatePem: info.certificatePem,
    quicSignedRequests: true,
    // A remembered port that does not answer (the relay restarted elsewhere, or without QUIC): asked again next time.
    ...(cache ? { onQuicUnreachable: () => cache.drop(relay) } : {}),
  });
}

/** A relay's QUIC info is read up to this many bytes (a certificate and a port). */
const MAX_RELAY_QUIC_INFO_BYTES = 16 * 1024;

/** The relay's RELAY_QUIC_INFO_PATH answer, undefined when it serves no QUIC (404); throws when it cannot be asked within `timeoutMs` or answers something else. */
async function askRelayQuicInfo(relay: RelayEndpoint, timeoutMs: number): Promise<RelayQuicInfo | undefined> {
  const deadline = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  // Raced, not only signalled: the pinned client's connect (TCP, TLS) does not see the signal.
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const reason = new Error(`no answer within ${timeoutMs / 1000} s`);
      deadline.abort(reason);
      reject(reason);
    }, timeoutMs);
  });
  expired.catch(() => undefined);
  try {
    const fetching = fetchFor(relay.fingerprint)(new URL(RELAY_QUIC_INFO_PATH, relay.url), { signal: deadline.signal });
    fetching.catch(() => undefined);
    const response = await Promise.race([fetching, expired]);
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    const bytes = await Promise.race([readAtMost(response.body, MAX_RELAY_QUIC_INFO_BYTES), expired]);
    if (!response.ok || !bytes) throw new Error(`HTTP ${response.status}${bytes ? '' : `, more than ${MAX_RELAY_QUIC_INFO_BYTES} bytes`}`);
    const parsed = RelayQuicInfoSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)));
    if (!parsed.success) throw new Error(`not a relay's QUIC info: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  } finally {
    clearTimeout(timer);
  }
}
