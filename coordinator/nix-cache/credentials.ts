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
 * prefix keeps these signatures apart from every other message Ferry signs.
 */
import { z } from 'zod';
import { ed25519Verify } from '../../protocol/ed25519.js';
import { KeyIdSchema, publicKeyOf, type Identity, type KeyId } from '../../protocol/identity.js';

export const NIX_CACHE_CREDENTIAL_CONTEXT = 'ferry-nix-cache-v1';

/** The message whose signature is the password of key `keyId`. */
export function nixCacheCredentialMessage(keyId: string): Uint8Array {
  return new TextEncoder().encode(`${NIX_CACHE_CREDENTIAL_CONTEXT}\n${keyId}`);
}

/** The netrc password of `identity` (base64 of its signature of nixCacheCredentialMessage). */
export function nixCachePassword(identity: Identity): string {
  return Buffer.from(identity.sign(nixCacheCredentialMessage(identity.keyId))).toString('base64');
}

/** A netrc line for the cache at `url` (netrc matches on the host name only, without the port). */
export function nixCacheNetrcLine(url: string, identity: Identity): string {
  return `machine ${new URL(url).hostname.replace(/^\[|\]$/g, '')} login ${identity.keyId} password ${nixCachePassword(identity)}`;
}

const BasicCredentialsSchema = z.strictObject({
  login: KeyIdSchema,
  // 64 signature bytes in base64: 86 characters and '=='.
  password: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, 'expected the base64 of a 64-byte ed25519 signature'),
});

export type CredentialVerdict = { ok: true; keyId: KeyId } | { ok: false; reason: 'missing' | 'malformed' | 'bad-signature'; message: string };

/**
 * Checks an `Authorization` header: `Basic base64(login:password)` whose
 * password is the login key's signature of its credential message.
 * Refuses (never throws) a missing header, another scheme, malformed
 * values and wrong signatures. Says nothing about the key's role or
 * revocation: the caller looks the key up.
 */
export function verifyNixCacheAuthorization(header: string | undefined): CredentialVerdict {
  if (header === undefined || header.trim() === '') return { ok: false, reason: 'missing', message: 'credentials required (netrc: see ferry cache netrc)' };
  const match = /^Basic\s+([A-Za-z0-9+/=]{1,512})\s*$/i.exec(header);
  if (!match) return { ok: false, reason: 'malformed', message: 'expected HTTP Basic credentials' };
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const parsed = BasicCredentialsSchema.safeParse({ login: colon < 0 ? decoded : decoded.slice(0, colon), password: colon < 0 ? '' : decoded.slice(colon + 1) });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, reason: 'malformed', message: `bad credentials: ${String(issue.path[0])}: ${issue.message}` };
  }
  const { login, password } = parsed.data;
  if (!ed25519Verify(publicKeyOf(login), nixCacheCredentialMessage(login), new Uint8Array(Buffer.from(password, 'base64')))) {
    return { ok: false, reason: 'bad-signature', message: 'the password is not the signature of this key (regenerate it with ferry cache netrc)' };
  }
  return { ok: true, keyId: login };
}
