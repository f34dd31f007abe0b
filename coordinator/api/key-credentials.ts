/**
 * Credentials derived from a Ferry key, for clients that cannot sign each
 * request (Nix's netrc, Prometheus's basic_auth): HTTP Basic auth with
 *
 *   login    = the key id (64 hex characters)
 *   password = base64 of the key's ed25519 signature of the UTF-8 string
 *              `<context>\n<key id>`
 *
 * ed25519 signatures are deterministic, so the key's owner derives the
 * password offline and the coordinator stores nothing: it verifies the
 * signature and looks the key up (role, revocation) on each request, so
 * revoking the key revokes the password. The context keeps each use's
 * password apart from the others' and from every other message Ferry
 * signs: a Nix cache password is no metrics password.
 */
import { z } from 'zod';
import { ed25519Verify } from '../../protocol/ed25519.js';
import { KeyIdSchema, publicKeyOf, type Identity, type KeyId } from '../../protocol/identity.js';

/** What a derived password is for. */
export type CredentialContext = 'ferry-nix-cache-v1' | 'ferry-metrics-v1';

/** The context of the passwords that read the metrics on the API port (`GET /v1/metrics`). */
export const METRICS_CREDENTIAL_CONTEXT = 'ferry-metrics-v1';

/** The message whose signature is key `keyId`'s password for `context`. */
export function keyCredentialMessage(context: CredentialContext, keyId: string): Uint8Array {
  return new TextEncoder().encode(`${context}\n${keyId}`);
}

/** `identity`'s password for `context` (base64 of its signature of keyCredentialMessage). */
export function keyCredentialPassword(identity: Identity, context: CredentialContext): string {
  return Buffer.from(identity.sign(keyCredentialMessage(context, identity.keyId))).toString('base64');
}

const BasicCredentialsSchema = z.strictObject({
  login: KeyIdSchema,
  // 64 signature bytes in base64: 86 characters and '=='.
  password: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, 'expected the base64 of a 64-byte ed25519 signature'),
});

export type CredentialVerdict = { ok: true; keyId: KeyId } | { ok: false; reason: 'missing' | 'malformed' | 'bad-signature'; message: string };

/**
 * Checks an `Authorization` header: `Basic base64(login:password)` whose
 * password is the login key's signature of its `context` message; `how`
 * says where the password comes from (in refusals). Refuses (never
 * throws) a missing header, another scheme, malformed values and wrong
 * signatures. Says nothing about the key's role or revocation: the caller
 * looks the key up.
 */
export function verifyKeyCredential(header: string | undefined, context: CredentialContext, how: string): CredentialVerdict {
  if (header === undefined || header.trim() === '') return { ok: false, reason: 'missing', message: `credentials required (${how})` };
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
  if (!ed25519Verify(publicKeyOf(login), keyCredentialMessage(context, login), new Uint8Array(Buffer.from(password, 'base64')))) {
    return { ok: false, reason: 'bad-signature', message: `the password is not this key's signature for ${context} (${how})` };
  }
  return { ok: true, keyId: login };
}
