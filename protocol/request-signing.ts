/**
 * Signed HTTP requests. Ferry authenticates a request by a signature over
 * what it does, never by a bearer secret: a stolen request cannot be
 * replayed (nonce, timestamp) or altered (method, path, body hash).
 *
 * Signed message (UTF-8, '\n'-separated):
 *   ferry-request-v1
 *   <METHOD>
 *   <path with query string, as sent>
 *   <timestamp: ms since the epoch>
 *   <nonce: 32 hex chars>
 *   <sha256 hex of the body; of the empty string when there is none>
 *
 * Headers: x-ferry-key (key id), x-ferry-timestamp, x-ferry-nonce,
 * x-ferry-signature (base64 of the 64-byte signature).
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ed25519Verify } from './ed25519.js';
import { KeyIdSchema, publicKeyOf, type Identity, type KeyId } from './identity.js';

export const SIGNATURE_HEADERS = {
  key: 'x-ferry-key',
  timestamp: 'x-ferry-timestamp',
  nonce: 'x-ferry-nonce',
  signature: 'x-ferry-signature',
} as const;

/** How far a request's timestamp may be from the coordinator's clock. */
export const MAX_REQUEST_SKEW_MS = 5 * 60 * 1000;

export const SignedRequestHeadersSchema = z.object({
  key: KeyIdSchema,
  timestamp: z.string().regex(/^\d{1,16}$/, 'expected milliseconds since the epoch').transform(Number),
  nonce: z.string().regex(/^[0-9a-f]{32}$/, 'expected 32 hex characters'),
  signature: z
    .string()
    .regex(/^[A-Za-z0-9+/]{86}==$/, 'expected a base64 ed25519 signature')
    .transform((value) => new Uint8Array(Buffer.from(value, 'base64'))),
});
export type SignedRequestHeaders = z.infer<typeof SignedRequestHeadersSchema>;

export function bodyDigest(body: Uint8Array | string | undefined): string {
  return createHash('sha256')
    .update(body ?? '')
    .digest('hex');
}

export function requestSigningMessage(method: string, pathWithQuery: string, timestamp: number, nonce: string, bodySha256: string): Uint8Array {
  return new TextEncoder().encode(['ferry-request-v1', method.toUpperCase(), pathWithQuery, String(timestamp), nonce, bodySha256].join('\n'));
}

/** The headers that authenticate one request by `identity`. */
export function signRequest(
  identity: Identity,
  method: string,
  pathWithQuery: string,
  body: Uint8Array | string | undefined,
  now = Date.now(),
): Record<string, string> {
  const nonce = randomBytes(16).toString('hex');
  const message = requestSigningMessage(method, pathWithQuery, now, nonce, bodyDigest(body));
  return {
    [SIGNATURE_HEADERS.key]: identity.keyId,
    [SIGNATURE_HEADERS.timestamp]: String(now),
    [SIGNATURE_HEADERS.nonce]: nonce,
    [SIGNATURE_HEADERS.signature]: Buffer.from(identity.sign(message)).toString('base64'),
  };
}

export type RequestVerdict =
  | { ok: true; keyId: KeyId; signature: string }
  | { ok: false; reason: 'missing' | 'malformed' | 'stale' | 'bad-signature'; message: string };

/**
 * Checks the signature headers of a request (not whether the key is known,
 * allowed, or the nonce fresh: the caller does that with its own state).
 */
export function verifyRequestSignature(
  headers: (name: string) => string | undefined,
  method: string,
  pathWithQuery: string,
  body: Uint8Array | string | undefined,
  now = Date.now(),
): RequestVerdict {
  const raw = {
    key: headers(SIGNATURE_HEADERS.key),
    timestamp: headers(SIGNATURE_HEADERS.timestamp),
    nonce: headers(SIGNATURE_HEADERS.nonce),
    signature: headers(SIGNATURE_HEADERS.signature),
  };
  if (raw.key === undefined || raw.signature === undefined) {
    return { ok: false, reason: 'missing', message: 'request is not signed (x-ferry-key / x-ferry-signature headers missing)' };
  }
  const parsed = SignedRequestHeadersSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, reason: 'malformed', message: `bad signature header x-ferry-${String(issue.path[0])}: ${issue.message}` };
  }
  const { key, timestamp, nonce, signature } = parsed.data;
  if (Math.abs(now - timestamp) > MAX_REQUEST_SKEW_MS) {
    return { ok: false, reason: 'stale', message: `request timestamp is ${Math.round((now - timestamp) / 1000)} s off the coordinator's clock (limit ${MAX_REQUEST_SKEW_MS / 1000} s)` };
  }
  const message = requestSigningMessage(method, pathWithQuery, timestamp, nonce, bodyDigest(body));
  if (!ed25519Verify(publicKeyOf(key), message, signature)) {
    return { ok: false, reason: 'bad-signature', message: 'request signature does not verify' };
  }
  return { ok: true, keyId: key, signature: raw.signature };
}

/** The nonce of a verified request, for the caller's replay check. */
export function requestNonce(headers: (name: string) => string | undefined): string | undefined {
  return headers(SIGNATURE_HEADERS.nonce);
}
