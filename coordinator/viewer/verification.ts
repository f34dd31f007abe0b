/**
 * The viewer's verification status: the chain report of the whole log
 * (verifyChain through the coordinator or the export verifier), kept and
 * re-checked when the log grew or the report got old, and what it means for
 * one event (verified and covered by a signed checkpoint, the first broken
 * one, after the break, or appended since the last check). Also checks what
 * an event carries that can be checked on its own: a config's author
 * signature.
 */
import { configId, configSigningMessage } from '../domain/commands.js';
import { ConfigBodySchema, type AuditEvent } from '../domain/events.js';
import type { Checkpoint } from '../audit/chain.js';
import type { EventVerification, VerificationStatus } from '../../protocol/api/viewer-views.js';
import { ed25519Verify } from '../../protocol/ed25519.js';
import { KeyIdSchema, publicKeyOf } from '../../protocol/identity.js';
import type { LogSource } from './log-source.js';

export interface VerificationOptions {
  /**
   * Re-check a grown log at most this often (default 10 s), and never more
   * often than 20 times the last check took: the check reads the whole log
   * (seconds of CPU at 100,000 events, in pages between which the coordinator
   * serves others), so it may take at most ~5% of the coordinator's time.
   */
  minIntervalMs?: number;
  /** Re-check an unchanged log after this long (default 5 min, or 60 times the last check), to notice rows edited in place. */
  maxAgeMs?: number;
  now?: () => number;
}

export class VerificationCache {
  private report: VerificationStatus | undefined;
  private readonly minIntervalMs: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;

  constructor(
    private readonly source: LogSource,
    options: VerificationOptions = {},
  ) {
    this.minIntervalMs = options.minIntervalMs ?? 10_000;
    this.maxAgeMs = options.maxAgeMs ?? 5 * 60_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * The status, re-verified first when `force`, when there is none yet, when
   * the log grew and the last check is older than minIntervalMs, or when it
   * is older than maxAgeMs. Verification reads the whole log.
   */
  async status(force = false): Promise<VerificationStatus> {
    const lastSeq = this.source.lastSeq();
    const previous = this.report;
    const age = previous ? this.now() - previous.checkedAt : Infinity;
    const minInterval = Math.max(this.minIntervalMs, 20 * (previous?.durationMs ?? 0));
    const maxAge = Math.max(this.maxAgeMs, 60 * (previous?.durationMs ?? 0));
    const stale = !previous || force || age >= maxAge || (previous.checkedThrough !== lastSeq && age >= minInterval);
    if (stale && (this.source.mode === 'live' || !previous)) {
      const started = performance.now();
      const checkpoints: Checkpoint[] = this.source.checkpoints();
      const report = await this.source.verify();
      this.report = { ...report, checkedAt: this.now(), checkedThrough: lastSeq, lastSeq, durationMs: Math.round(performance.now() - started), checkpointSeqs: checkpoints.map((c) => c.seq) };
    } else if (previous) {
      this.report = { ...previous, lastSeq };
    }
    return this.report!;
  }

  /** The last status without re-checking (undefined before the first check). */
  peek(): VerificationStatus | undefined {
    return this.report;
  }
}

/** What the chain report says about event `seq`. */
export function eventVerification(report: VerificationStatus, seq: number): EventVerification {
  if (report.firstBad) {
    if (seq === report.firstBad.seq) return { state: 'broken', reason: report.firstBad.reason };
    if (seq > report.firstBad.seq) return { state: 'after-break', brokenAt: report.firstBad.seq };
  }
  if (seq > report.verifiedThrough) return { state: 'unchecked' };
  const covering = report.checkpointSeqs.find((checkpoint) => checkpoint >= seq && checkpoint <= report.verifiedThrough);
  return { state: 'verified', coveredByCheckpoint: covering ?? null };
}

/** For config.submit: whether the config id matches its body and the author's signature verifies. */
export function configSignatureStatus(event: AuditEvent): { author: string; valid: boolean; reason: string } | null {
  if (event.action !== 'config.submit') return null;
  const payload = event.payload as { id?: unknown; body?: unknown; signature?: unknown };
  const body = ConfigBodySchema.safeParse(payload.body);
  if (!body.success) return { author: '', valid: false, reason: 'the config body is not valid' };
  const author = body.data.author;
  const id = configId(body.data);
  if (payload.id !== id) return { author, valid: false, reason: 'the config id does not match its body' };
  const key = KeyIdSchema.safeParse(author);
  if (!key.success || typeof payload.signature !== 'string') return { author, valid: false, reason: 'no usable author key or signature' };
  const valid = ed25519Verify(publicKeyOf(key.data), configSigningMessage(id), Buffer.from(payload.signature, 'base64'));
  return { author, valid, reason: valid ? "signed by its author's key" : "the signature is not the author's" };
}
