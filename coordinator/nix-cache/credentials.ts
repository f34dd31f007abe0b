/**
 * Credentials for the Nix binary cache endpoint. Nix sends `netrc`
 * credentials as HTTP Basic auth, so a Ferry key becomes a netrc entry:
 *
 *   login    = the key id (64 hex characters)
 *   password = base64 of the key's ed25519 signature of the UTF-8 string
 *              `ferry-nix-cache-v1\n<key id>`
 *
 * ed25519 signatures are deterministic, so the key's owner derives the
 * password offline (`ferry cache netrc`) and the coordinator stores nothing:
 * it verifies the signature and looks the key up (role, revocation) on each
 * request, so revoking the key revokes the password. The `ferry-nix-cache-v1`
 * prefix keeps these signatures apart from every other message Ferry signs
 * (the scheme is api/key-credentials.ts's, shared with the metrics).
 */
import type { Identity } from '../../protocol/identity.js';
import { keyCredentialMessage, keyCredentialPassword, verifyKeyCredential, type CredentialVerdict } from '../api/key-credentials.js';

export const NIX_CACHE_CREDENTIAL_CONTEXT = 'ferry-nix-cache-v1';

/** The message whose signature is the password of key `keyId`. */
export function nixCacheCredentialMessage(keyId: string): Uint8Array {
  return keyCredentialMessage(NIX_CACHE_CREDENTIAL_CONTEXT, keyId);
}

/** The netrc password of `identity` (base64 of its signature of nixCacheCredentialMessage). */
export function nixCachePassword(identity: Identity): string {
  return keyCredentialPassword(identity, NIX_CACHE_CREDENTIAL_CONTEXT);
}

/** A netrc line for the cache at `url` (netrc matches on the host name only, without the port). */
export function nixCacheNetrcLine(url: string, identity: Identity): string {
  return `machine ${new URL(url).hostname.replace(/^\[|\]$/g, '')} login ${identity.keyId} password ${nixCachePassword(identity)}`;
}

export type { CredentialVerdict };

/** Checks an `Authorization` header's netrc credentials (key-credentials.ts verifyKeyCredential). */
export function verifyNixCacheAuthorization(header: string | undefined): CredentialVerdict {
  return verifyKeyCredential(header, NIX_CACHE_CREDENTIAL_CONTEXT, 'netrc: see ferry cache netrc');
}
