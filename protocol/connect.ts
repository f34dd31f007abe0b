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
