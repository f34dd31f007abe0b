/**
 * Opening a data-plane client for a coordinator known by its HTTP URL:
 * learns the QUIC port from `/v1/info`, fetches the TLS certificate and
 * checks it against the pinned fingerprint, then connects (QUIC first,
 * HTTP fallback).
 */
import { DataClient, type DataClientOptions } from './data-client.js';
import { CoordinatorHttpClient } from './http-client.js';
import type { Identity, KeyId } from './identity.js';
import { checkPinnedCertificate, PinningError } from './tls-pinning.js';

export interface CoordinatorInfo {
  name: string;
  coordinatorKey: KeyId;
  version: string;
  lastSeq: number;
  tlsFingerprint: string;
  quicPort: number | null;
  /** What its data plane can compress with; absent from coordinators before wire compression. */
  wireEncodings?: string[];
}

export interface OpenDataClientOptions extends Pick<DataClientOptions, 'httpOnly' | 'retries' | 'onNotice' | 'connectTimeoutMs' | 'compression'> {
  /** The certificate fingerprint to trust; without one, the coordinator's own claim is used (trust on first use). */
  tlsFingerprint?: string;
  /** `httpUrl` is the coordinator's own port: talk TLS to it with `tlsFingerprint` pinned (join strings with `tls=pinned`). */
  pinnedTls?: boolean;
}

/**
 * A DataClient for the coordinator at `httpUrl`. Refuses (PinningError) a
 * certificate that does not match the pinned fingerprint; when the
 * coordinator has no QUIC listener, the client uses HTTP only.
 */
export async function openDataClient(httpUrl: string, identity: Identity, options: OpenDataClientOptions = {}): Promise<{ client: DataClient; info: CoordinatorInfo }> {
  const pinnedFingerprint = options.pinnedTls ? options.tlsFingerprint : undefined;
  if (options.pinnedTls && !pinnedFingerprint) throw new PinningError('pinned TLS needs the fingerprint to pin');
  const http = new CoordinatorHttpClient(httpUrl, undefined, pinnedFingerprint === undefined ? {} : { pinnedFingerprint });
  const info = await http.get<CoordinatorInfo>('/v1/info');
  let certificatePem: string | undefined;
  let quicAddress: string | undefined;
  if (info.quicPort && !options.httpOnly) {
    const pem = await (await http.send('GET', '/v1/tls-certificate')).text();
    certificatePem = checkPinnedCertificate(pem, options.tlsFingerprint ?? info.tlsFingerprint);
    quicAddress = `${new URL(httpUrl).hostname.replace(/^\[|\]$/g, '')}:${info.quicPort}`;
  }
  // Ask for compression only from a coordinator that says it has it: an older one refuses the field.
  const compression = info.wireEncodings?.includes('zstd') ? options.compression : 'off';
  const client = new DataClient({ ...options, ...(compression ? { compression } : {}), identity, httpUrl, ...(pinnedFingerprint ? { pinnedFingerprint } : {}), ...(quicAddress ? { quicAddress } : {}), ...(certificatePem ? { certificatePem } : {}) });
  return { client, info };
}
