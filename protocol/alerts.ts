/**
 * Alerts: what a coordinator POSTs to a webhook (`ferry alerts add URL
 * --on …`), and how a receiver checks that its coordinator sent it.
 *
 * Participants: the coordinator (sender, signs with its ed25519 key) and a
 * receiver (any HTTP server the admin registered), which knows the
 * coordinator's key id from its join string, `ferry coordinator info` or
 * `GET /v1/info`.
 *
 * Kinds: `rolled-back` (an agent reported `rolled-back`), `degraded` (an
 * agent's periodic health check turned degraded), `offline` (the
 * coordinator recorded an agent offline), `audit-broken` (the coordinator's
 * verification of its own audit chain failed).
 *
 * Request: `POST <url>`, `Content-Type: application/json`, the body one
 * AlertPayloadSchema object, and two headers:
 * - `Ferry-Signature: t=<ms>,sig=<base64>`: `t` is when this attempt was
 *   signed (ms since the epoch), `sig` the coordinator's ed25519 signature
 *   over the bytes `ferry-alert-v1\n<t>\n<body>` (alertSigningMessage):
 *   domain-separated like the coordinator's other proofs
 *   (coordinator-proofs.ts), so no other signature of the coordinator
 *   passes for an alert, and bound to the exact body bytes;
 * - `Ferry-Key: <coordinator key id>`: which coordinator signed it (a hint
 *   for a receiver serving several; verifyAlert checks it against the key
 *   the receiver trusts, never trusts it).
 * A retry re-signs the same body with a fresh `t`; the payload's `id` is the
 * same on every attempt, so a receiver can drop duplicates by it.
 *
 * Response: any 2xx is delivered; anything else (a redirect included: they
 * are not followed) or no answer in time is retried with backoff.
 *
 * Example body: `{"id":"3f…:rolled-back:42","alertId":"3f…","kind":"rolled-back",
 * "seq":42,"action":"agent.report","agent":{"id":"ab…","name":"gw-1"},
 * "config":"9c…","reason":"health check failed","coordinator":{"name":"prod",
 * "key":"e1…"},"time":1733443200000}`.
 */
import { z } from 'zod';
import { FerryError } from './errors.js';
import { ed25519Verify } from './ed25519.js';
import { KeyIdSchema, publicKeyOf, type Identity, type KeyId } from './identity.js';

export const ALERT_KINDS = ['rolled-back', 'degraded', 'offline', 'audit-broken'] as const;
export const AlertKindSchema = z.enum(ALERT_KINDS);
export type AlertKind = z.infer<typeof AlertKindSchema>;

declare const alertIdBrand: unique symbol;
/** An alert (webhook registration): 16 random hex digits. */
export type AlertId = string & { readonly [alertIdBrand]: true };
export const AlertIdSchema = z
  .string()
  .regex(/^[0-9a-f]{16}$/, 'an alert id is 16 hex digits')
  .transform((value) => value as AlertId);

/** The longest webhook URL accepted. */
export const MAX_ALERT_URL_LENGTH = 2048;
/** At most this many `--where` clauses per alert, each at most MAX_ALERT_WHERE_LENGTH characters. */
export const MAX_ALERT_WHERE = 16;
export const MAX_ALERT_WHERE_LENGTH = 256;

/**
 * Why `text` is not a webhook URL, or undefined when it is one: an
 * absolute http or https URL with a host, at most MAX_ALERT_URL_LENGTH
 * characters, without credentials (`user:pass@`: the coordinator would send
 * them as Basic auth to whoever answers, and they would sit in every
 * listing; a receiver authenticates the coordinator by its signature
 * instead) and without a fragment (never sent, so it can only mislead).
 */
export function alertUrlProblem(text: string): string | undefined {
  if (text.length > MAX_ALERT_URL_LENGTH) return `a webhook URL is at most ${MAX_ALERT_URL_LENGTH} characters (this one has ${text.length})`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `'${text.slice(0, 200)}' is not an absolute URL`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `a webhook URL is http:// or https://, not ${url.protocol}//`;
  if (url.hostname === '') return 'a webhook URL names a host';
  if (url.username !== '' || url.password !== '') return 'a webhook URL may not hold credentials (user:password@): receivers check the coordinator\'s signature instead';
  if (url.hash !== '') return 'a webhook URL may not have a #fragment (it is never sent)';
  return undefined;
}

/** A webhook URL (alertUrlProblem says what it refuses), normalized by the URL parser. */
export const AlertUrlSchema = z
  .string()
  .max(MAX_ALERT_URL_LENGTH, `a webhook URL is at most ${MAX_ALERT_URL_LENGTH} characters`)
  .superRefine((text, context) => {
    const problem = alertUrlProblem(text);
    if (problem) context.addIssue({ code: 'custom', message: problem });
  })
  .transform((text) => new URL(text).href);

/** What an alert says: one JSON object, the POST's body. */
export const AlertPayloadSchema = z.strictObject({
  /** This alert's delivery id: the same on every attempt (`<alertId>:<kind>:<seq>`). */
  id: z.string().max(64),
  alertId: AlertIdSchema,
  kind: AlertKindSchema,
  /** The audit event's seq; for `audit-broken`, the first seq that failed verification. */
  seq: z.number().int().nonnegative(),
  /** The audit event's action (`agent.report`, `agent.health`, `agent.presence`); null for `audit-broken`. */
  action: z.string().max(64).nullable(),
  agent: z.strictObject({ id: KeyIdSchema, name: z.string().max(253) }).nullable(),
  /** The config concerned (rolled back from, degraded), else null. */
  config: z.string().max(128).nullable(),
  /** Why: the agent's error or health reason, the verification's finding; null when none was given. */
  reason: z.string().max(8192).nullable(),
  coordinator: z.strictObject({ name: z.string().max(128), key: KeyIdSchema }),
  /** When it happened (ms since the epoch): the event's wall time, or when the break was found. */
  time: z.number().int(),
});
export type AlertPayload = z.infer<typeof AlertPayloadSchema>;

export const ALERT_SIGNATURE_HEADER = 'Ferry-Signature';
export const ALERT_KEY_HEADER = 'Ferry-Key';
/** How far an alert's `t` may be from the receiver's clock by default (either way). */
export const ALERT_SIGNATURE_TOLERANCE_MS = 5 * 60_000;
/** The largest alert body verifyAlert reads (a payload is far smaller). */
export const MAX_ALERT_BODY_BYTES = 64 * 1024;

/** The bytes an alert's signature covers: `ferry-alert-v1\n<t>\n` then the body, byte for byte. */
export function alertSigningMessage(t: number, body: Uint8Array | string): Uint8Array {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([Buffer.from(`ferry-alert-v1\n${t}\n`, 'utf8'), bytes]);
}

/** The headers of one delivery attempt of `body`, signed by `coordinator` at time `t`. */
export function signAlert(coordinator: Identity, body: Uint8Array | string, t: number): Record<string, string> {
  const sig = Buffer.from(coordinator.sign(alertSigningMessage(t, body))).toString('base64');
  return { [ALERT_SIGNATURE_HEADER]: `t=${t},sig=${sig}`, [ALERT_KEY_HEADER]: coordinator.keyId };
}

export interface VerifyAlertOptions {
  /** The request body, exactly as received (not re-encoded). */
  body: Uint8Array | string;
  /** The `Ferry-Signature` header's value. */
  signature: string | string[] | undefined;
  /** The `Ferry-Key` header's value, if the receiver has it: refused when it names another key. */
  key?: string | string[] | undefined;
  /** The coordinator key the receiver trusts. */
  coordinatorKey: KeyId | string;
  /** The receiver's clock (default Date.now()). */
  now?: number;
  /** How far `t` may be from `now` (default ALERT_SIGNATURE_TOLERANCE_MS). */
  toleranceMs?: number;
}

const SIGNATURE_HEADER = /^t=(\d{1,15}),sig=([A-Za-z0-9+/]{86}==)$/;

/**
 * Checks an alert a receiver got and returns its payload. Refuses
 * (FerryError BAD_PROOF, saying why) a missing or malformed
 * `Ferry-Signature`, a `Ferry-Key` naming another coordinator, a `t`
 * further than `toleranceMs` from `now` (an old alert replayed), a
 * signature that is not `coordinatorKey`'s over these exact body bytes, a
 * body over MAX_ALERT_BODY_BYTES, and a body that is not an
 * AlertPayloadSchema object whose `coordinator.key` is that key. Pure:
 * nothing is remembered, so dropping repeated `id`s is the receiver's.
 */
export function verifyAlert(options: VerifyAlertOptions): AlertPayload {
  const refuse = (why: string): never => {
    throw new FerryError('BAD_PROOF', `alert refused: ${why}`);
  };
  const coordinatorKey = KeyIdSchema.safeParse(options.coordinatorKey);
  if (!coordinatorKey.success) throw new TypeError(`verifyAlert: coordinatorKey '${String(options.coordinatorKey).slice(0, 80)}' is not a key id`);
  const key = Array.isArray(options.key) ? options.key[0] : options.key;
  if (key !== undefined && key !== coordinatorKey.data) refuse(`${ALERT_KEY_HEADER} names key ${key.slice(0, 80)}, not the coordinator's ${coordinatorKey.data}`);
  const header = Array.isArray(options.signature) ? (options.signature.length === 1 ? options.signature[0] : undefined) : options.signature;
  if (header === undefined) refuse(`no single ${ALERT_SIGNATURE_HEADER} header`);
  const match = SIGNATURE_HEADER.exec(header!);
  if (!match) refuse(`${ALERT_SIGNATURE_HEADER} is not t=<ms>,sig=<base64 ed25519 signature>`);
  const t = Number(match![1]);
  const now = options.now ?? Date.now();
  const tolerance = options.toleranceMs ?? ALERT_SIGNATURE_TOLERANCE_MS;
  if (Math.abs(now - t) > tolerance) refuse(`signed at ${t}, ${Math.round((now - t) / 1000)} s from this clock (tolerance ${tolerance / 1000} s)`);
  const body = typeof options.body === 'string' ? Buffer.from(options.body, 'utf8') : options.body;
  if (body.length > MAX_ALERT_BODY_BYTES) refuse(`the body is ${body.length} bytes, over ${MAX_ALERT_BODY_BYTES}`);
  if (!ed25519Verify(publicKeyOf(coordinatorKey.data), alertSigningMessage(t, body), Buffer.from(match![2]!, 'base64'))) {
    refuse(`the signature is not coordinator ${coordinatorKey.data}'s over this body`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    refuse('the body is not JSON');
  }
  const payload = AlertPayloadSchema.safeParse(parsed);
  if (!payload.success) refuse(`the body is not an alert: ${payload.error.issues[0]!.path.join('.')}: ${payload.error.issues[0]!.message}`);
  if (payload.data!.coordinator.key !== coordinatorKey.data) refuse('the body names another coordinator');
  return payload.data!;
}
