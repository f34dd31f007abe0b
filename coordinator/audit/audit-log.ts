/**
 * The audit log: the coordinator's source of truth (DESIGN.md section 4).
 * Every state change is one appended event, hash-chained to the one before
 * (chain.ts), applied to the state in the same transaction; signed
 * checkpoints let an export be verified offline.
 *
 * `AuditLog` is what the rest of the coordinator relies on; SqliteAuditLog
 * keeps it in the coordinator's SQLite database, beside the state tables,
 * so one SQLite transaction covers an event and its state change. Another
 * backend (PostgreSQL) must give the same guarantees with its own
 * transaction around the same steps, and produce the same chain bytes.
 */
import type Database from 'better-sqlite3';
import { canonicalJson } from '../../protocol/canonical-json.js';
import { formatHlc, HlcClock, parseHlc } from '../../protocol/hlc.js';
import type { Identity } from '../../protocol/identity.js';
import type { CoordinatorDatabase } from '../db/database.js';
import * as schema from '../db/schema.js';
import type { Actor } from '../domain/commands.js';
import { AuditEventSchema, type Action, type AuditEvent, type EventDraft, type FollowUp } from '../domain/events.js';
import { ChainVerifier, checkpointMessage, encodedEventHash, GENESIS_HASH, type ChainPosition, type ChainReport, type Checkpoint } from './chain.js';

/** Audit rows read at once by exports and verification (~25 ms of verifying). */
const STORED_EVENT_PAGE = 1000;

/**
 * A command's decision: the event, the caller's result, and optionally
 * `publish`, which makes something visible outside the coordinator's
 * database (the castore committing pushed store paths). It runs inside
 * the event's transaction, after the event is appended and applied: an
 * event that does not validate or apply is never published, and a publish
 * that throws rolls the event back. Nothing becomes visible without its
 * event; see docs/security.md for the one window left (a crash between
 * the castore's commit and the log's, microseconds apart).
 */
export interface Decision<R> {
  draft: EventDraft;
  result: R;
  publish?: () => void;
  /** Events the first entails, appended and applied after it, in order, in the same transaction (events.ts FollowUp). */
  followUps?: readonly FollowUp[];
}

/** An appended event and the result its command decided. */
export interface Appended<R> {
  /** The command's first event. */
  event: AuditEvent;
  /** Every event appended, the first and its follow-ups, in seq order. */
  events: AuditEvent[];
  result: R;
}

export interface AuditLog {
  /** The seq of the last appended event (0: the log is empty). */
  readonly lastSeq: number;

  /**
   * Appends one event, atomically with everything it changes. In one
   * transaction, serialised with every other append: `decide` runs (it sees
   * the state the event will apply to) and returns a decision, or undefined
   * for "nothing to record" (then nothing happens); the event is built and
   * chained to the head (seq + 1, prevHash, a fresh HLC, its hash over the
   * canonical encoding); `apply` applies it to the state; it is stored; the
   * decision's follow-ups are appended and applied the same way, each in
   * turn; the decision's `publish` runs; every `checkpointEvery` events a
   * signed checkpoint of the new head is stored too.
   *
   * Guarantee: the event, its state change and whatever `publish` makes
   * visible commit together, or none of them does. A throw from any step
   * rolls all of them back, leaves the head where it was and reaches the
   * caller. When append returns, the transaction has committed: the event is
   * durable and every later reader sees it.
   */
  append<R>(actor: Actor, decide: () => Decision<R> | undefined, apply: (event: AuditEvent) => void): Appended<R> | undefined;

  /** A fresh HLC timestamp of the log's clock (later than every event appended). */
  tickHlc(): string;

  /** Signs and stores a checkpoint of the head now (none while the log is empty). */
  checkpoint(): Checkpoint | undefined;

  /** Every signed checkpoint, in seq order. */
  checkpoints(): Checkpoint[];

  /** Events in seq order after `afterSeq`, read a page at a time and validated (AuditEventSchema). */
  events(afterSeq?: number): Generator<AuditEvent>;

  /**
   * Up to `limit` events with `afterSeq < seq <= throughSeq`, in seq order,
   * as stored, without schema validation: verification must see a tampered
   * row as it is (and report it), not fail to parse it.
   */
  storedEvents(afterSeq: number, throughSeq: number, limit: number): AuditEvent[];

  /** The first event of `action` (e.g. `coordinator.init`), as stored, if any. */
  firstOf(action: Action): AuditEvent | undefined;

  /**
   * Verifies the whole chain and the checkpoint signatures. Other work runs
   * between pages; concurrent calls share one run; events appended while
   * it runs are verified too.
   */
  verify(): Promise<ChainReport>;

  /**
   * Verifies the events after `after` (a position an earlier run reached),
   * the same way and in pages: what a periodic check costs is what was
   * appended since. Returns the report and the position reached (where the
   * next run resumes). Trusts the prefix up to `after`; verify() re-checks
   * it.
   */
  verifyAfter(after: ChainPosition): Promise<{ report: ChainReport; reached: ChainPosition }>;
}

export interface SqliteAuditLogOptions {
  /** Sign a checkpoint every this many events (default 1000). */
  checkpointEvery?: number;
  now: () => number;
}

type EventRow = typeof schema.auditEvents.$inferSelect;

/** The audit log in the coordinator's SQLite database (tables audit_events and audit_checkpoints). */
export class SqliteAuditLog implements AuditLog {
  private head: { seq: number; hash: string };
  private readonly clock: HlcClock;
  private readonly now: () => number;
  private readonly checkpointEvery: number;
  /** The verification in progress, shared by concurrent callers. */
  private verifying: Promise<ChainReport> | undefined;
  private readonly statements: {
    insertEvent: Database.Statement<[number, string, number, string, string, string, string, string, string | null, string, string]>;
    insertCheckpoint: Database.Statement<[number, string, string, number]>;
    storedEvents: Database.Statement<[number, number, number], EventRow>;
    firstOf: Database.Statement<[string], EventRow>;
  };
  /** append's transaction (BEGIN IMMEDIATE … COMMIT), built once. */
  private readonly transact: <R>(actor: Actor, decide: () => Decision<R> | undefined, apply: (event: AuditEvent) => void) => Appended<R> | undefined;

  constructor(
    private readonly database: CoordinatorDatabase,
    private readonly identity: Identity,
    options: SqliteAuditLogOptions,
  ) {
    const sqlite = database.sqlite;
    this.now = options.now;
    this.checkpointEvery = options.checkpointEvery ?? 1000;
    const columns =
      'seq, hlc, wall_time AS wallTime, actor_key AS actorKey, actor_role AS actorRole, action, subject, payload, request_signature AS requestSignature, prev_hash AS prevHash, hash';
    this.statements = {
      insertEvent: sqlite.prepare(
        'INSERT INTO audit_events (seq, hlc, wall_time, actor_key, actor_role, action, subject, payload, request_signature, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      insertCheckpoint: sqlite.prepare('INSERT INTO audit_checkpoints (seq, hash, signature, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING'),
      storedEvents: sqlite.prepare(`SELECT ${columns} FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`),
      firstOf: sqlite.prepare(`SELECT ${columns} FROM audit_events WHERE action = ? ORDER BY seq LIMIT 1`),
    };
    const transaction = sqlite.transaction(<R>(actor: Actor, decide: () => Decision<R> | undefined, apply: (event: AuditEvent) => void) => {
      const decided = decide();
      if (!decided) return undefined;
      const head = this.head;
      try {
        const self: Actor = { keyId: this.identity.keyId, role: 'coordinator', requestSignature: null };
        const events = [this.appendInTransaction(actor, decided.draft, apply)];
        for (const followUp of decided.followUps ?? []) events.push(this.appendInTransaction(followUp.by === 'coordinator' ? self : actor, followUp.draft, apply));
        decided.publish?.();
        return { event: events[0]!, events, result: decided.result };
      } catch (error) {
        // The transaction rolls back: so does the head this log keeps in memory.
        this.head = head;
        throw error;
      }
    });
    this.transact = <R>(actor: Actor, decide: () => Decision<R> | undefined, apply: (event: AuditEvent) => void) =>
      transaction.immediate(actor, decide, apply) as Appended<R> | undefined;
    const tail = sqlite.prepare<[], { seq: number; hash: string; hlc: string }>('SELECT seq, hash, hlc FROM audit_events ORDER BY seq DESC LIMIT 1').get();
    this.head = tail ? { seq: tail.seq, hash: tail.hash } : { seq: 0, hash: GENESIS_HASH };
    this.clock = new HlcClock(identity.keyId.slice(0, 8), this.now);
    if (tail) this.clock.receive(parseHlc(tail.hlc));
  }

  get lastSeq(): number {
    return this.head.seq;
  }

  append<R>(actor: Actor, decide: () => Decision<R> | undefined, apply: (event: AuditEvent) => void): Appended<R> | undefined {
    return this.transact(actor, decide, apply);
  }

  tickHlc(): string {
    return formatHlc(this.clock.tick());
  }

  /** Must run inside append's transaction, whose rollback restores the head on a throw. */
  private appendInTransaction(actor: Actor, draft: EventDraft, apply: (event: AuditEvent) => void): AuditEvent {
    // The payload's canonical JSON, encoded once: it is what is hashed and stored, and
    // the event carries it parsed back, so the reducer applies exactly what is replayed.
    const payloadJson = canonicalJson(draft.payload);
    const fields = {
      seq: this.head.seq + 1,
      hlc: formatHlc(this.clock.tick()),
      wallTime: this.now(),
      actorKey: actor.keyId,
      actorRole: actor.role,
      action: draft.action,
      subject: draft.subject,
      requestSignature: actor.requestSignature ?? null,
      prevHash: this.head.hash,
    };
    const hash = encodedEventHash(fields, payloadJson);
    const event: AuditEvent = {
      seq: fields.seq,
      hlc: fields.hlc,
      wallTime: fields.wallTime,
      actorKey: fields.actorKey,
      actorRole: fields.actorRole,
      action: fields.action,
      subject: fields.subject,
      payload: JSON.parse(payloadJson) as unknown,
      requestSignature: fields.requestSignature,
      prevHash: fields.prevHash,
      hash,
    };
    apply(event);
    const { seq, hlc, wallTime, actorKey, actorRole, action, subject, requestSignature, prevHash } = fields;
    this.statements.insertEvent.run(seq, hlc, wallTime, actorKey, actorRole, action, subject, payloadJson, requestSignature, prevHash, hash);
    this.head = { seq: event.seq, hash: event.hash };
    if (event.seq % this.checkpointEvery === 0) this.writeCheckpoint();
    return event;
  }

  private writeCheckpoint(): Checkpoint {
    const { seq, hash } = this.head;
    const signature = Buffer.from(this.identity.sign(checkpointMessage(seq, hash))).toString('base64');
    this.statements.insertCheckpoint.run(seq, hash, signature, this.now());
    return { seq, hash, signature };
  }

  checkpoint(): Checkpoint | undefined {
    if (this.head.seq === 0) return undefined;
    return this.database.sqlite.transaction(() => this.writeCheckpoint()).immediate();
  }

  checkpoints(): Checkpoint[] {
    const table = schema.auditCheckpoints;
    return this.database.db.select({ seq: table.seq, hash: table.hash, signature: table.signature }).from(table).orderBy(table.seq).all();
  }

  *events(afterSeq = 0): Generator<AuditEvent> {
    for (const page of this.storedEventPages(afterSeq)) for (const event of page) yield AuditEventSchema.parse(event);
  }

  storedEvents(afterSeq: number, throughSeq: number, limit: number): AuditEvent[] {
    return this.statements.storedEvents.all(afterSeq, throughSeq, limit).map(storedEvent);
  }

  firstOf(action: Action): AuditEvent | undefined {
    const row = this.statements.firstOf.get(action);
    return row && storedEvent(row);
  }

  verify(): Promise<ChainReport> {
    // At ~40,000 events a second, verifying a large log in one go would stop the coordinator
    // for seconds, at the call of any reader: hence pages, with other requests served between them.
    this.verifying ??= this.verifyInPages().finally(() => {
      this.verifying = undefined;
    });
    return this.verifying;
  }

  verifyAfter(after: ChainPosition): Promise<{ report: ChainReport; reached: ChainPosition }> {
    return this.verifyInPagesFrom(after);
  }

  private async verifyInPages(): Promise<ChainReport> {
    return (await this.verifyInPagesFrom(undefined)).report;
  }

  private async verifyInPagesFrom(after: ChainPosition | undefined): Promise<{ report: ChainReport; reached: ChainPosition }> {
    const verifier = new ChainVerifier(this.checkpoints(), this.identity.publicKey, after);
    const done = () => ({ report: verifier.finish(), reached: verifier.position() });
    for (const page of this.storedEventPages(after?.seq ?? 0)) {
      for (const event of page) if (!verifier.push(event)) return done();
      await new Promise((resolve) => setImmediate(resolve));
    }
    return done();
  }

  /**
   * Every event after `afterSeq`, as stored, a page at a time: no statement
   * stays open while the caller holds the generator (an export streams for
   * as long as its reader takes), because better-sqlite3 refuses every
   * other statement on the connection while one is iterating.
   */
  private *storedEventPages(afterSeq = 0): Generator<AuditEvent[]> {
    for (let after = afterSeq; ; ) {
      const page = this.storedEvents(after, Number.MAX_SAFE_INTEGER, STORED_EVENT_PAGE);
      if (page.length > 0) yield page;
      if (page.length < STORED_EVENT_PAGE) return;
      after = page.at(-1)!.seq;
    }
  }
}

/** A row as an event, its payload parsed if it parses (a tampered row is shown as it is). */
function storedEvent(row: EventRow): AuditEvent {
  let payload: unknown;
  try {
    payload = JSON.parse(row.payload);
  } catch {
    payload = row.payload;
  }
  return { ...row, payload } as AuditEvent;
}
