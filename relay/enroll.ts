/**
 * `ferry relay enroll`: a relay joins its coordinator with a relay token
 * (`ferry tokens create --relay`), saying where agents reach it and the
 * fingerprint of its own certificate, which the coordinator hands to the
 * agents it assigns to it.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { createIdentityFile, loadIdentity } from '../protocol/identity.js';
import { parseJoinString } from '../protocol/join-string.js';
import { RelayUrlSchema } from '../protocol/relays.js';
import { DEFAULT_RELAY_CACHE_BYTES, relayCertificate, relayPaths, writeRelayState } from './relay-state.js';

export interface EnrollRelayOptions {
  stateDir: string;
  /** Where agents reach it: https://host:port. */
  url: string;
  /** `host:port` to listen on (default: every address, the URL's port). */
  listen?: string;
  name?: string;
  cacheBytes?: number;
}

/**
 * Enrolls the relay of `stateDir` (creating its key and certificate) with
 * the coordinator the join string names. Refuses (Error) a state dir that
 * holds an enrolled relay, a URL that is not https://host:port, a
 * coordinator whose key is not the join string's, and what the coordinator
 * refuses (an agent token: BAD_TOKEN).
 */
export async function enrollRelay(joinString: string, options: EnrollRelayOptions): Promise<{ relayId: string; fingerprint: string }> {
  const join = parseJoinString(joinString);
  const paths = relayPaths(options.stateDir);
  if (existsSync(paths.state)) throw new Error(`${options.stateDir} already holds an enrolled relay`);
  const url = RelayUrlSchema.parse(options.url.replace(/\/$/, ''));
  const identity = existsSync(paths.identity) ? loadIdentity(paths.identity) : createIdentityFile(paths.identity);
  const certificate = relayCertificate(options.stateDir);
  const http = new CoordinatorHttpClient(join.httpUrl, identity, join.pinnedTls ? { pinnedFingerprint: join.tlsFingerprint } : {});
  const info = await http.call('info');
  if (info.coordinatorKey !== join.coordinatorKey) {
    throw new Error(`the coordinator at ${join.httpUrl} has key ${info.coordinatorKey}, but the join string names ${join.coordinatorKey}: refusing to enroll`);
  }
  const name = options.name ?? hostname();
  const result = await http.call('relays.enroll', { token: join.token, name, url, fingerprint: certificate.fingerprint });
  if (result.relayId !== identity.keyId) throw new Error(`the coordinator enrolled ${String(result.relayId).slice(0, 80)}, not this relay's key ${identity.keyId}: refusing it`);
  writeRelayState(options.stateDir, {
    relayId: identity.keyId,
    name,
    coordinator: { httpUrl: join.httpUrl, coordinatorKey: join.coordinatorKey, tlsFingerprint: join.tlsFingerprint, pinnedTls: join.pinnedTls },
    url,
    listen: options.listen ?? `0.0.0.0:${new URL(url).port || 443}`,
    cacheBytes: options.cacheBytes ?? DEFAULT_RELAY_CACHE_BYTES,
  });
  return { relayId: identity.keyId, fingerprint: certificate.fingerprint };
}
