/**
 * A relay's state dir: its identity, what it pinned of its coordinator at
 * enrollment (URL, key, certificate fingerprint), its own TLS certificate
 * (agents pin its fingerprint, which the coordinator hands them), its
 * castore (the cache) and the status it last wrote.
 *
 *   <state>/identity          ed25519 key (0600)
 *   <state>/relay.json        RelayStateSchema
 *   <state>/tls/cert.pem, key.pem
 *   <state>/castore/          LocalCastore: the cache
 *   <state>/manifests/        the coordinator-signed manifests agents asked for (checked again when read)
 *   <state>/partial/          large blobs being fetched through (emptied at start)
 *   <state>/status.json       RelayStatusSchema, rewritten while it runs
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { KeyIdSchema } from '../protocol/identity.js';
import { FingerprintSchema, RelayUrlSchema } from '../protocol/relays.js';
import { createSelfSignedCertificate, type TlsCertificate } from '../protocol/self-signed-certificate.js';
import { certificateFingerprint } from '../protocol/tls-pinning.js';

/** The cache's size limit when enrollment does not say (bytes of blobs and directories). */
export const DEFAULT_RELAY_CACHE_BYTES = 10 * 1024 * 1024 * 1024;

export const RelayStateSchema = z.strictObject({
  relayId: KeyIdSchema,
  name: z.string().min(1).max(253),
  coordinator: z.strictObject({ httpUrl: z.string().url(), coordinatorKey: KeyIdSchema, tlsFingerprint: FingerprintSchema, pinnedTls: z.boolean() }),
  /** Where agents reach this relay (enrolled with the coordinator). */
  url: RelayUrlSchema,
  /** `host:port` it listens on (default: the URL's port on every address). */
  listen: z.string().max(300),
  cacheBytes: z.number().int().positive(),
});
export type RelayState = z.infer<typeof RelayStateSchema>;

export function relayPaths(stateDir: string) {
  return {
    identity: path.join(stateDir, 'identity'),
    state: path.join(stateDir, 'relay.json'),
    certificate: path.join(stateDir, 'tls', 'cert.pem'),
    privateKey: path.join(stateDir, 'tls', 'key.pem'),
    castore: path.join(stateDir, 'castore'),
    status: path.join(stateDir, 'status.json'),
  };
}

/** Reads relay.json; refuses (Error naming the file) a missing or invalid one. */
export function readRelayState(stateDir: string): RelayState {
  const file = relayPaths(stateDir).state;
  if (!existsSync(file)) throw new Error(`${stateDir} holds no enrolled relay (no relay.json): run 'ferry relay enroll' first`);
  const parsed = RelayStateSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new Error(`${file} is not a relay's state: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** Writes `value` to `file` through a temp file and a rename: never half-written. */
export function writeFileAtomic(file: string, value: string, mode = 0o600): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, value, { mode });
  renameSync(temp, file);
}

export function writeRelayState(stateDir: string, state: RelayState): void {
  writeFileAtomic(relayPaths(stateDir).state, `${JSON.stringify(RelayStateSchema.parse(state), null, 2)}\n`);
}

/** The relay's TLS certificate, created on first use (ECDSA P-256, as the coordinator's). */
export function relayCertificate(stateDir: string): TlsCertificate {
  const paths = relayPaths(stateDir);
  if (!existsSync(paths.certificate)) {
    const created = createSelfSignedCertificate();
    writeFileAtomic(paths.privateKey, created.privateKeyPem);
    writeFileAtomic(paths.certificate, created.certificatePem, 0o644);
  }
  const certificatePem = readFileSync(paths.certificate, 'utf8');
  return { certificatePem, privateKeyPem: readFileSync(paths.privateKey, 'utf8'), fingerprint: certificateFingerprint(certificatePem) };
}
