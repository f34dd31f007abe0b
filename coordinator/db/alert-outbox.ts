/**
 * The alerts' outbox: deliveries still to make, how each alert's went, the
 * alerts' URLs and the dispatcher's bookkeeping (db/schema.ts
 * alert_deliveries, alert_outcomes, alert_endpoints, alert_dispatch).
 * Operational, not audit state: the log says which alerts exist and what
 * happened; this says what was sent about it. It is persistent, so a
 * delivery waiting for its retry survives a restart or a crash.
 *
 * Bounded: at most `maxPendingPerAlert` deliveries wait per alert; queueing
 * beyond drops that alert's oldest and counts them (`dropped`, shown by
 * `ferry alerts ls`), so a dead receiver costs a fixed amount of disk, and
 * the others' deliveries are not affected.
 */
import type Database from 'better-sqlite3';
import type { AlertDeliveryStatus } from '../../protocol/api/views.js';

/** A delivery to queue: its alert, its payload's id (one delivery per alert and happening) and its body. */
export interface QueuedDelivery {
  alertId: string;
  deliveryKey: string;
  body: string;
}

/** A queued delivery, as the dispatcher reads it when it is due. */
export interface DueDelivery extends QueuedDelivery {
  id: number;
  attempts: number;
  createdAt: number;
  nextAttemptAt: number;
}

/** The last attempt of a delivery: its time, the receiver's status (null: no answer) and the error, if any. */
export interface Attempt {
  at: number;
  status: number | null;
  error: string | null;
}

/** Pending deliveries per alert by default (~1 KiB each). */
export const DEFAULT_MAX_PENDING_PER_ALERT = 1000;

const NO_OUTCOME: Omit<AlertDeliveryStatus, 'pending'> = { lastAttemptAt: null, lastOutcome: null, lastStatus: null, lastError: null, delivered: 0, failed: 0, dropped: 0 };

interface OutcomeRow {
  id: string;
  last_attempt_at: number | null;
  last_outcome: AlertDeliveryStatus['lastOutcome'];
  last_status: number | null;
  last_error: string | null;
  delivered: number;
  failed: number;
  dropped: number;
}

export class AlertOutbox {
  private readonly statements;
  private readonly queueAll: (deliveries: readonly QueuedDelivery[], now: number, cursor: number | undefined) => number;
  private readonly finishOne: (delivery: DueDelivery, outcome: 'delivered' | 'failed', attempt: Attempt) => void;

  constructor(
    private readonly sqlite: Database.Database,
    readonly maxPendingPerAlert = DEFAULT_MAX_PENDING_PER_ALERT,
  ) {
    if (!(Number.isInteger(maxPendingPerAlert) && maxPendingPerAlert >= 1)) throw new RangeError(`alert outbox: ${maxPendingPerAlert} pending deliveries per alert; needs at least 1`);
    this.statements = {
      endpoint: sqlite.prepare<[string], { url: string }>('SELECT url FROM alert_endpoints WHERE id = ?'),
      putEndpoint: sqlite.prepare<[string, string]>('INSERT INTO alert_endpoints (id, url) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET url = excluded.url'),
      deleteEndpoint: sqlite.prepare<[string]>('DELETE FROM alert_endpoints WHERE id = ?'),
      insert: sqlite.prepare<[string, string, string, number, number]>(
        'INSERT INTO alert_deliveries (alert_id, delivery_key, body, attempts, created_at, next_attempt_at) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (delivery_key) DO NOTHING',
      ),
      pendingOf: sqlite.prepare<[string], { n: number }>('SELECT count(*) AS n FROM alert_deliveries WHERE alert_id = ?'),
      pendingAll: sqlite.prepare<[], { alert_id: string; n: number }>('SELECT alert_id, count(*) AS n FROM alert_deliveries GROUP BY alert_id'),
      dropOldest: sqlite.prepare<[string, number]>('DELETE FROM alert_deliveries WHERE id IN (SELECT id FROM alert_deliveries WHERE alert_id = ? ORDER BY id LIMIT ?)'),
      due: sqlite.prepare<[number, number], { id: number; alert_id: string; delivery_key: string; body: string; attempts: number; created_at: number; next_attempt_at: number }>(
        // The oldest due delivery of each alert: one alert's backlog never hides another's.
        `SELECT id, alert_id, delivery_key, body, attempts, created_at, next_attempt_at FROM alert_deliveries
         WHERE id IN (SELECT min(id) FROM alert_deliveries WHERE next_attempt_at <= ? GROUP BY alert_id) ORDER BY next_attempt_at, id LIMIT ?`,
      ),
      nextDue: sqlite.prepare<[], { at: number | null }>('SELECT min(next_attempt_at) AS at FROM alert_deliveries'),
      reschedule: sqlite.prepare<[number, number, string | null, number]>('UPDATE alert_deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?'),
      remove: sqlite.prepare<[number]>('DELETE FROM alert_deliveries WHERE id = ?'),
      discard: sqlite.prepare<[string]>('DELETE FROM alert_deliveries WHERE alert_id = ?'),
      outcome: sqlite.prepare<[string], OutcomeRow>('SELECT * FROM alert_outcomes WHERE id = ?'),
      outcomes: sqlite.prepare<[], OutcomeRow>('SELECT * FROM alert_outcomes'),
      note: sqlite.prepare<[string, number | null, string | null, number | null, string | null, number, number, number]>(
        `INSERT INTO alert_outcomes (id, last_attempt_at, last_outcome, last_status, last_error, delivered, failed, dropped) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET
           last_attempt_at = coalesce(excluded.last_attempt_at, last_attempt_at),
           last_outcome = coalesce(excluded.last_outcome, last_outcome),
           last_status = CASE WHEN excluded.last_attempt_at IS NULL THEN last_status ELSE excluded.last_status END,
           last_error = CASE WHEN excluded.last_attempt_at IS NULL THEN last_error ELSE excluded.last_error END,
           delivered = delivered + excluded.delivered, failed = failed + excluded.failed, dropped = dropped + excluded.dropped`,
      ),
      dispatch: sqlite.prepare<[string], { seq: number; note: string | null }>('SELECT seq, note FROM alert_dispatch WHERE id = ?'),
      putDispatch: sqlite.prepare<[string, number, string | null]>('INSERT INTO alert_dispatch (id, seq, note) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, note = excluded.note'),
    };
    const { insert, pendingOf, dropOldest, note, putDispatch, reschedule, remove } = this.statements;
    this.queueAll = sqlite.transaction((deliveries: readonly QueuedDelivery[], now: number, cursor: number | undefined) => {
      let queued = 0;
      const touched = new Set<string>();
      for (const delivery of deliveries) {
        queued += insert.run(delivery.alertId, delivery.deliveryKey, delivery.body, now, now).changes;
        touched.add(delivery.alertId);
      }
      for (const alertId of touched) {
        const over = pendingOf.get(alertId)!.n - this.maxPendingPerAlert;
        if (over > 0) {
          dropOldest.run(alertId, over);
          note.run(alertId, null, null, null, null, 0, 0, over);
        }
      }
      if (cursor !== undefined) putDispatch.run('cursor', cursor, null);
      return queued;
    });
    this.finishOne = sqlite.transaction((delivery: DueDelivery, outcome: 'delivered' | 'failed', attempt: Attempt) => {
      remove.run(delivery.id);
      note.run(delivery.alertId, attempt.at, outcome, attempt.status, attempt.error, outcome === 'delivered' ? 1 : 0, outcome === 'failed' ? 1 : 0, 0);
    });
    this.retryOne = sqlite.transaction((delivery: DueDelivery, nextAttemptAt: number, attempt: Attempt) => {
      reschedule.run(delivery.attempts + 1, nextAttemptAt, attempt.error, delivery.id);
      note.run(delivery.alertId, attempt.at, 'retrying', attempt.status, attempt.error, 0, 0, 0);
    });
  }

  private readonly retryOne: (delivery: DueDelivery, nextAttemptAt: number, attempt: Attempt) => void;

  /** The URL of alert `alertId`, or undefined (removed, or a database rebuilt from an export). */
  endpoint(alertId: string): string | undefined {
    return this.statements.endpoint.get(alertId)?.url;
  }

  /** Keeps alert `alertId`'s URL: call inside its alert.add's transaction (Decision.publish). */
  putEndpoint(alertId: string, url: string): void {
    this.statements.putEndpoint.run(alertId, url);
  }

  /** Forgets alert `alertId`'s URL and drops its queued deliveries: call inside its alert.remove's transaction. */
  removeAlert(alertId: string): void {
    this.statements.deleteEndpoint.run(alertId);
    this.statements.discard.run(alertId);
  }

  /**
   * Queues `deliveries` (one already queued under the same key is kept as
   * it is) and, with them, moves the dispatcher's cursor to `cursor`, in
   * one transaction: after a crash, the log is read again from the cursor,
   * and what was queued before it is not queued twice. Trims each alert to
   * maxPendingPerAlert, dropping (and counting) its oldest. Returns how many
   * were queued.
   */
  queue(deliveries: readonly QueuedDelivery[], now: number, cursor?: number): number {
    return this.queueAll(deliveries, now, cursor);
  }

  /** Up to `limit` deliveries due at `now`, at most one per alert (its oldest due), the longest waiting first. */
  due(now: number, limit: number): DueDelivery[] {
    return this.statements.due.all(now, limit).map((row) => ({
      id: row.id,
      alertId: row.alert_id,
      deliveryKey: row.delivery_key,
      body: row.body,
      attempts: row.attempts,
      createdAt: row.created_at,
      nextAttemptAt: row.next_attempt_at,
    }));
  }

  /** When the next delivery is due (ms), or null when none waits. */
  nextDue(): number | null {
    return this.statements.nextDue.get()?.at ?? null;
  }

  /** The delivery was delivered: it leaves the outbox, the alert's outcome says so. */
  delivered(delivery: DueDelivery, attempt: Attempt): void {
    this.finishOne(delivery, 'delivered', attempt);
  }

  /** The delivery was given up (its attempts or its age ran out): it leaves the outbox, counted as failed. */
  failed(delivery: DueDelivery, attempt: Attempt): void {
    this.finishOne(delivery, 'failed', attempt);
  }

  /** The attempt failed and another follows at `nextAttemptAt`. */
  retry(delivery: DueDelivery, nextAttemptAt: number, attempt: Attempt): void {
    this.retryOne(delivery, nextAttemptAt, attempt);
  }

  /** Drops every queued delivery of alerts not in `active` (removed while the coordinator was down, say). */
  discardAllBut(active: ReadonlySet<string>): void {
    for (const { alert_id } of this.statements.pendingAll.all()) if (!active.has(alert_id)) this.statements.discard.run(alert_id);
  }

  /** How alert `alertId`'s deliveries went, with how many wait. */
  status(alertId: string): AlertDeliveryStatus {
    const row = this.statements.outcome.get(alertId);
    const pending = this.statements.pendingOf.get(alertId)!.n;
    if (!row) return { ...NO_OUTCOME, pending };
    return {
      pending,
      lastAttemptAt: row.last_attempt_at,
      lastOutcome: row.last_outcome,
      lastStatus: row.last_status,
      lastError: row.last_error,
      delivered: row.delivered,
      failed: row.failed,
      dropped: row.dropped,
    };
  }

  /** The last event seq alerts were queued for (undefined: never; the dispatcher starts from the log's head). */
  cursor(): number | undefined {
    return this.statements.dispatch.get('cursor')?.seq;
  }

  /** Moves the cursor without queueing (events that concern no alert). */
  setCursor(seq: number): void {
    this.statements.putDispatch.run('cursor', seq, null);
  }

  /** The audit break last alerted (its first bad seq and reason), if any. */
  alertedBreak(): { seq: number; reason: string } | undefined {
    const row = this.statements.dispatch.get('audit-break');
    return row ? { seq: row.seq, reason: row.note ?? '' } : undefined;
  }

  /** Queues the alerts of an audit break and remembers it, in one transaction: a break is alerted once. */
  queueBreak(deliveries: readonly QueuedDelivery[], now: number, brokenAt: { seq: number; reason: string }): void {
    this.sqlite.transaction(() => {
      this.queueAll(deliveries, now, undefined);
      this.statements.putDispatch.run('audit-break', brokenAt.seq, brokenAt.reason);
    }).immediate();
  }
}
