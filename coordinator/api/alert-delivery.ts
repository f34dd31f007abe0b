/**
 * One delivery attempt of an alert (a signed POST, with a timeout) and
 * the retry policy around it: exponential backoff with jitter, capped, for
 * at most `maxAttempts` attempts or `maxAgeMs`, whichever ends first.
 * The dispatcher (alert-dispatcher.ts) runs them; the outbox
 * (db/alert-outbox.ts) remembers where each delivery stands.
 */

/** How alerts are delivered (CoordinatorOptions.alerts; defaults DEFAULT_ALERT_DELIVERY). */
export interface AlertDeliveryOptions {
  /** Attempts in flight at once, over all alerts (each alert has at most one). */
  concurrency: number;
  /** How long one POST may take, connecting and answering included. */
  timeoutMs: number;
  /** The first retry's delay; each later one doubles, up to maxDelayMs (each then jittered to 50-100%). */
  baseDelayMs: number;
  maxDelayMs: number;
  /** A delivery is given up (failed) after this many attempts, or once it is this old. */
  maxAttempts: number;
  maxAgeMs: number;
  /** Deliveries waiting per alert; beyond, its oldest are dropped and counted. */
  maxPendingPerAlert: number;
  /** How often due deliveries are looked for (and the outbox's cursor saved). */
  pollMs: number;
  /** How often the audit chain is verified (from where the last check got to), for `audit-broken`. */
  auditCheckMs: number;
  /** Every this many checks, the whole chain is verified again (an edit of an already verified event). */
  fullAuditCheckEvery: number;
}

/**
 * Four at once, 10 s each: a hung receiver holds one slot for 10 s. Retries
 * after ~1 s, 2 s, 4 s… up to 10 minutes apart, 15 attempts (about an hour
 * and a half of trying) within a day.
 */
export const DEFAULT_ALERT_DELIVERY: AlertDeliveryOptions = {
  concurrency: 4,
  timeoutMs: 10_000,
  baseDelayMs: 1000,
  maxDelayMs: 10 * 60_000,
  maxAttempts: 15,
  maxAgeMs: 24 * 3600_000,
  maxPendingPerAlert: 1000,
  pollMs: 1000,
  auditCheckMs: 60_000,
  fullAuditCheckEvery: 60,
};

/** Options with their defaults; refuses (RangeError) values that cannot work, at start-up. */
export function alertDeliveryOptions(given: Partial<AlertDeliveryOptions> = {}): AlertDeliveryOptions {
  const options = { ...DEFAULT_ALERT_DELIVERY, ...given };
  for (const [name, value] of Object.entries(options)) {
    if (!(Number.isFinite(value) && value >= 1)) throw new RangeError(`alert delivery: ${name} is ${value}; it must be at least 1`);
  }
  if (options.maxDelayMs < options.baseDelayMs) throw new RangeError(`alert delivery: maxDelayMs (${options.maxDelayMs}) is below baseDelayMs (${options.baseDelayMs})`);
  return options;
}

/** The delay before the next attempt of a delivery that failed `attempts` times: base·2^(attempts-1), capped, jittered to 50-100%. */
export function retryDelay(attempts: number, options: Pick<AlertDeliveryOptions, 'baseDelayMs' | 'maxDelayMs'>, random: () => number = Math.random): number {
  const exponential = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** Math.min(Math.max(attempts - 1, 0), 40));
  return Math.round(exponential * (0.5 + random() / 2));
}

/** What one attempt got: the receiver's status (null: no answer) and, unless delivered, why not. */
export interface AttemptResult {
  status: number | null;
  error: string | null;
}

const MAX_ERROR_LENGTH = 512;

/**
 * POSTs `body` to `url` with `headers` (the signature's), and waits at most
 * `timeoutMs` for the answer's status; `signal` aborts it earlier (the
 * coordinator closing). Never throws. A 2xx is delivered (error null);
 * anything else is an error, a redirect included: it is not followed, so a
 * receiver cannot send the coordinator's requests elsewhere. The answer's
 * body is not read.
 */
export async function postAlert(url: string, body: string, headers: Record<string, string>, timeoutMs: number, signal: AbortSignal): Promise<AttemptResult> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      body,
      headers: { ...headers, 'content-type': 'application/json', 'user-agent': 'ferry-coordinator' },
      redirect: 'manual',
      signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    });
    await response.body?.cancel().catch(() => undefined);
    if (response.status >= 200 && response.status < 300) return { status: response.status, error: null };
    const redirect = response.status >= 300 && response.status < 400 ? ' (redirects are not followed)' : '';
    return { status: response.status, error: `HTTP ${response.status}${redirect}` };
  } catch (error) {
    const reason = error instanceof Error && error.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : describe(error);
    return { status: null, error: reason.slice(0, MAX_ERROR_LENGTH) };
  }
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch's TypeError says only "fetch failed"; its cause says what (ECONNREFUSED 127.0.0.1:9).
  const cause = (error as { cause?: unknown }).cause;
  return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
}
