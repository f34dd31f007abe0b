/**
 * Pinning the coordinator's self-signed certificate: clients know its
 * SHA-256 fingerprint (from the join string or their CLI context), fetch
 * the certificate over HTTP, and trust it only if the fingerprint matches.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { FerryError } from './errors.js';

/** The name in every coordinator's self-signed certificate; clients send it as SNI and pin the certificate itself. */
export const COORDINATOR_TLS_NAME = 'ferry-coordinator';

/**
 * A certificate (or fingerprint) that is not the pinned one. Its own class
 * because it is found as the cause of a failed fetch (pinningFailure) and
 * must not be retried or reported as the coordinator being unreachable.
 */
export class PinningError extends FerryError {
  override readonly name = 'PinningError';
  constructor(message: string) {
    super('TLS_FINGERPRINT_MISMATCH', message);
  }
}

/** The pinning fingerprint of a PEM certificate: SHA-256 of its DER, lowercase hex. */
export function certificateFingerprint(certificatePem: string): string {
  return createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex');
}

/** Normalises `AB:CD:…` or hex to lowercase hex; refuses anything that is not a SHA-256. */
export function normalizeFingerprint(text: string): string {
  const hex = text.replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new PinningError(`'${text}' is not a SHA-256 certificate fingerprint`);
  return hex;
}

/** Returns the certificate if its fingerprint is `pinned`; throws PinningError otherwise. */
export function checkPinnedCertificate(certificatePem: string, pinned: string): string {
  const actual = certificateFingerprint(certificatePem);
  if (actual !== normalizeFingerprint(pinned)) {
    throw new PinningError(`the coordinator's TLS certificate has fingerprint ${actual}, but ${normalizeFingerprint(pinned)} was pinned: refusing to connect`);
  }
  return certificatePem;
}
