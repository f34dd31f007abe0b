/**
 * Alerts, from the log to the receivers. `AlertDispatcher` (built by
 * start.ts) follows the audit log and queues one delivery per registered
 * alert that hears of what happened, then delivers the queue.
 *
 * - What is alerted is derived from the log by seq: the dispatcher keeps a
 *   cursor (the last seq it queued alerts for, saved with what it queued,
 *   db/alert-outbox.ts) and reads the events after it that can concern an
 *   alert, after each commit and at start. A crash between an event's
 *   commit and its alert's queueing loses nothing: the next start reads
 *   from the cursor again. An alert hears only of events after its own
 *   alert.add.
 * - `--where` clauses are applied to the agent as the state has it when
 *   the alert is queued (normally right after the event).
 * - `audit-broken` has no event (a broken chain cannot record itself): the
 *   chain is verified at start, then every `auditCheckMs` from where the
 *   last check got to, and all of it every `fullAuditCheckEvery` checks; a
 *   break is alerted once (the outbox remembers the last one alerted).
 * - Delivery: at most `concurrency` POSTs at once and one per alert (a hung
 *   receiver holds one slot until its timeout, never another alert's
 *   turn), each signed at its attempt (protocol/alerts.ts), retried with
 *   backoff (alert-delivery.ts) from the outbox, so across restarts too.
 */
import { FerryError } from '../../protocol/errors.js';
import type { AlertKind } from '../../protocol/alerts.js';
import { signAlert, type AlertPayload } from '../../protocol/alerts.js';
import type { KeyId } from '../../protocol/identity.js';
import type { Coordinator } from '../coordinator.js';
import { GENESIS_HASH, type ChainPosition } from '../audit/chain.js';
import type { ChainReport } from '../audit/chain.js';
import { AlertOutbox, type DueDelivery, type QueuedDelivery } from '../db/alert-outbox.js';
import type { AlertRow } from '../domain/state.js';
import { postAlert, retryDelay, type AlertDeliveryOptions } from './alert-delivery.js';
import { agentMatches, parseWhere, type WhereClause } from './queries.js';

const outboxes = new WeakMap<Coordinator, AlertOutbox>();

/** The coordinator's alert outbox (built on first use): the dispatcher's, and what `alerts.*` operations read and write. */
export function alertOutbox(coordinator: Coordinator): AlertOutbox {
  let outbox = outboxes.get(coordinator);
  if (!outbox) {
    outbox = new AlertOutbox(coordinator.database.sqlite, coordinator.alertDelivery.maxPendingPerAlert);
    outboxes.set(coordinator, outbox);
  }
  return outbox;
}

/** The actions whose events can be alerted, each with the kind it is when it is one. */
const KIND_OF: Record<string, (payload: Record<string, unknown>) => AlertKind | undefined> = {
  'agent.report': (p) => (p['phase'] === 'rolled-back' ? 'rolled-back' : undefined),
  'agent.health': (p) => (p['health'] === 'degraded' ? 'degraded' : undefined),
  'agent.presence': (p) => (p['presence'] === 'offline' ? 'offline' : undefined),
};
const ALERTED_ACTIONS = Object.keys(KIND_OF);

/** Events read per query while catching up. */
const CATCH_UP_PAGE = 500;

interface ActiveAlert {
  id: string;
  kinds: ReadonlySet<AlertKind>;
  /** Parsed `--where` clauses; null when they no longer parse (then the alert matches no agent). */
  where: WhereClause[] | null;
  createdSeq: number;
}

interface EventRow {
  seq: number;
  action: string;
  payload: string;
  wall_time: number;
}

export class AlertDispatcher {
  readonly options: AlertDeliveryOptions;
  private readonly outbox: AlertOutbox;
  private active: ActiveAlert[] = [];
  private alertsChanged = true;
  /** The last seq alerts were queued for, and what of it the outbox has saved. */
  private cursor: number;
  private savedCursor: number;
  private catchUpScheduled = false;
  private readonly inFlight = new Map<string, AbortController>();
  private readonly pollTimer: NodeJS.Timeout;
  private readonly auditTimer: NodeJS.Timeout;
  private readonly relevantEvents;
  /** Where the chain verified so far (undefined: check all of it next time). */
  private verified: ChainPosition | undefined;
  private auditChecks = 0;
  private auditCheck: Promise<ChainReport | undefined> | undefined;
  private closed = false;

  constructor(private readonly coordinator: Coordinator) {
    this.options = coordinator.alertDelivery;
    this.outbox = alertOutbox(coordinator);
    const sqlite = coordinator.database.sqlite;
    // Constants of this module, not input: inlined, so the query uses the action index as one IN list.
    const actions = ALERTED_ACTIONS.map((action) => `'${action}'`).join(', ');
    this.relevantEvents = sqlite.prepare<[number, number, number], EventRow>(
      `SELECT seq, action, payload, wall_time FROM audit_events WHERE action IN (${actions}) AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
    );
    this.reloadAlerts();
    this.outbox.discardAllBut(new Set(this.active.map((alert) => alert.id)));
    const saved = this.outbox.cursor();
    this.cursor = saved ?? coordinator.lastSeq;
    if (saved === undefined) this.outbox.setCursor(this.cursor);
    this.savedCursor = this.cursor;

    coordinator.commits.subscribe((event) => {
      if (event.action === 'alert.add' || event.action === 'alert.remove') this.alertsChanged = true;
      else if (!(event.action in KIND_OF)) return;
      this.scheduleCatchUp();
    });
    this.pollTimer = setInterval(() => this.tick(), this.options.pollMs);
    this.pollTimer.unref();
    this.auditTimer = setInterval(() => void this.checkAudit(), this.options.auditCheckMs);
    this.auditTimer.unref();
    coordinator.onClose(() => this.close());
    this.scheduleCatchUp();
    setImmediate(() => void this.checkAudit());
  }

  /** Queues what the log holds after the cursor, then delivers what is due. Never throws (the next tick tries again). */
  catchUp(): void {
    this.catchUpScheduled = false;
    if (this.closed || this.coordinator.closed) return;
    try {
      if (this.alertsChanged) this.reloadAlerts();
      const head = this.coordinator.lastSeq;
      if (this.active.length === 0) this.cursor = head;
      while (this.cursor < head) {
        const rows = this.relevantEvents.all(this.cursor, head, CATCH_UP_PAGE);
        const reached = rows.length < CATCH_UP_PAGE ? head : rows.at(-1)!.seq;
        const deliveries = rows.flatMap((row) => this.deliveriesOf(row));
        if (deliveries.length > 0) {
          this.outbox.queue(deliveries, this.coordinator.now(), reached);
          this.savedCursor = reached;
        }
        this.cursor = reached;
      }
    } catch {
      // A busy or closing database: the cursor stays, the next tick reads again.
    }
    this.pump();
  }

  /**
   * Verifies the audit chain (from where the last check got to, or all of
   * it: at start, after a break, every fullAuditCheckEvery checks) and
   * queues `audit-broken` alerts for a break not alerted yet. Concurrent
   * calls share one check. Resolves to the report (undefined if closed).
   */
  checkAudit(): Promise<ChainReport | undefined> {
    this.auditCheck ??= this.runAuditCheck().finally(() => {
      this.auditCheck = undefined;
    });
    return this.auditCheck;
  }

  private async runAuditCheck(): Promise<ChainReport | undefined> {
    if (this.closed || this.coordinator.closed) return undefined;
    const full = this.verified === undefined || ++this.auditChecks % this.options.fullAuditCheckEvery === 0;
    let checked;
    try {
      checked = await this.coordinator.audit.verifyAfter(full ? { seq: 0, hash: GENESIS_HASH } : this.verified!);
    } catch {
      return undefined;
    }
    if (this.closed || this.coordinator.closed) return undefined;
    const { report, reached } = checked;
    if (report.ok) {
      this.verified = reached;
      return report;
    }
    this.verified = undefined;
    try {
      this.alertBreak(report.firstBad!);
    } catch {
      // Queued at the next check, which finds the same break.
    }
    return report;
  }

  private alertBreak(firstBad: { seq: number; reason: string }): void {
    const known = this.outbox.alertedBreak();
    if (known && known.seq === firstBad.seq && known.reason === firstBad.reason) return;
    if (this.alertsChanged) this.reloadAlerts();
    const listeners = this.active.filter((alert) => alert.kinds.has('audit-broken'));
    // Remembered only once someone heard of it: an alert added later still hears of a break that stays.
    if (listeners.length === 0) return;
    const now = this.coordinator.now();
    const deliveries = listeners.map((alert) =>
      this.delivery(alert, {
        kind: 'audit-broken',
        seq: firstBad.seq,
        action: null,
        agent: null,
        config: null,
        reason: firstBad.reason,
        time: now,
      }),
    );
    this.outbox.queueBreak(deliveries, now, firstBad);
    this.pump();
  }

  /** Starts the due deliveries there is room for (one per alert at most). */
  pump(): void {
    if (this.closed || this.coordinator.closed) return;
    const room = this.options.concurrency - this.inFlight.size;
    if (room <= 0) return;
    let due: DueDelivery[];
    try {
      due = this.outbox.due(this.coordinator.now(), room + this.inFlight.size);
    } catch {
      return;
    }
    let started = 0;
    for (const delivery of due) {
      if (started >= room) break;
      if (this.inFlight.has(delivery.alertId)) continue;
      started++;
      void this.attempt(delivery);
    }
  }

  private async attempt(delivery: DueDelivery): Promise<void> {
    const controller = new AbortController();
    this.inFlight.set(delivery.alertId, controller);
    const at = this.coordinator.now();
    let result;
    try {
      const url = this.outbox.endpoint(delivery.alertId);
      if (url === undefined) {
        result = { status: null, error: 'this database has no URL for the alert (rebuilt from an export? add it again)' };
      } else {
        result = await postAlert(url, delivery.body, signAlert(this.coordinator.identity, delivery.body, at), this.options.timeoutMs, controller.signal);
      }
    } finally {
      this.inFlight.delete(delivery.alertId);
    }
    if (this.closed || this.coordinator.closed) return;
    try {
      const attempt = { at, ...result };
      const attempts = delivery.attempts + 1;
      if (result.error === null) this.outbox.delivered(delivery, attempt);
      else if (attempts >= this.options.maxAttempts || at - delivery.createdAt >= this.options.maxAgeMs || this.outbox.endpoint(delivery.alertId) === undefined) {
        this.outbox.failed(delivery, attempt);
      } else this.outbox.retry(delivery, at + retryDelay(attempts, this.options), attempt);
    } catch {
      // The delivery stays as it was and is tried again (its receiver may get it twice: the payload's id says so).
    }
    setImmediate(() => this.pump());
  }

  private tick(): void {
    if (this.closed || this.coordinator.closed) return;
    this.catchUp();
    if (this.cursor !== this.savedCursor && !this.coordinator.database.sqlite.inTransaction) {
      try {
        this.outbox.setCursor(this.cursor);
        this.savedCursor = this.cursor;
      } catch {
        // Saved at the next tick; until then a crash only makes the dispatcher read a few events again.
      }
    }
  }

  private scheduleCatchUp(): void {
    if (this.catchUpScheduled) return;
    this.catchUpScheduled = true;
    setImmediate(() => this.catchUp());
  }

  private reloadAlerts(): void {
    this.alertsChanged = false;
    this.active = this.coordinator.state
      .all('alerts')
      .filter((row) => !row.removed)
      .map((row: AlertRow) => ({ id: row.id, kinds: new Set(row.kinds), where: parsedWhere(row.where), createdSeq: row.createdSeq }));
  }

  /** The deliveries one event makes: one per active alert that hears of its kind, registered before it, whose --where matches its agent. */
  private deliveriesOf(row: EventRow): QueuedDelivery[] {
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(row.payload) as Record<string, unknown>;
    } catch {
      return [];
    }
    const kind = KIND_OF[row.action]?.(payload);
    if (!kind) return [];
    const agentId = String(payload['agentId']);
    const state = this.coordinator.state;
    const agent = state.get('agents', agentId);
    const presenceOf = (id: string) => this.coordinator.presence.presenceOf(id);
    const listeners = this.active.filter(
      (alert) => alert.kinds.has(kind) && alert.createdSeq < row.seq && alert.where !== null && (alert.where.length === 0 || (agent !== undefined && agentMatches(state, agent, alert.where, presenceOf))),
    );
    if (listeners.length === 0) return [];
    const lastSeen = payload['lastSeen'];
    const reason =
      kind === 'offline'
        ? typeof lastSeen === 'number'
          ? `not heard from since ${new Date(lastSeen).toISOString()}`
          : 'not heard from since the coordinator started'
        : ((kind === 'rolled-back' ? payload['error'] : payload['reason']) as string | null | undefined) ?? null;
    const config = (kind === 'offline' ? agent?.currentConfig : payload['configId']) as string | null | undefined;
    return listeners.map((alert) =>
      this.delivery(alert, {
        kind,
        seq: row.seq,
        action: row.action,
        agent: { id: agentId as KeyId, name: agent?.name ?? agentId },
        config: config ?? null,
        reason,
        time: row.wall_time,
      }),
    );
  }

  private delivery(alert: ActiveAlert, what: Omit<AlertPayload, 'id' | 'alertId' | 'coordinator'>): QueuedDelivery {
    const deliveryKey = `${alert.id}:${what.kind}:${what.seq}`;
    const payload: AlertPayload = {
      id: deliveryKey,
      alertId: alert.id as AlertPayload['alertId'],
      ...what,
      coordinator: { name: this.coordinator.name, key: this.coordinator.identity.keyId },
    };
    return { alertId: alert.id, deliveryKey, body: JSON.stringify(payload) };
  }

  private close(): void {
    if (this.closed) return;
    clearInterval(this.pollTimer);
    clearInterval(this.auditTimer);
    for (const controller of this.inFlight.values()) controller.abort();
    if (this.cursor !== this.savedCursor) {
      try {
        this.outbox.setCursor(this.cursor);
      } catch {
        // Read again at the next start.
      }
    }
    this.closed = true;
  }
}

function parsedWhere(clauses: readonly string[]): WhereClause[] | null {
  try {
    return parseWhere(clauses);
  } catch (error) {
    if (error instanceof FerryError) return null;
    throw error;
  }
}

