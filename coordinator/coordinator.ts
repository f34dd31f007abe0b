/**
 * The coordinator's core: its key, database, castore and audit log. Every
 * state change goes through `record`: one transaction appends one chained
 * event and applies it with the reducer, or nothing happens.
 *
 * The command path runs on statements prepared once (here and in
 * SqliteStateStore), encodes each payload's canonical JSON once, and keeps
 * WAL checkpoints out of the commands' transactions (see db/database.ts).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { LocalCastore } from '../castore/index.js';
import { canonicalJson } from '../protocol/canonical-json.js';
import { formatHlc, HlcClock, parseHlc } from '../protocol/hlc.js';
import { createIdentityFile, loadIdentity, type Identity } from '../protocol/identity.js';
import { openCoordinatorDatabase, type CoordinatorDatabase } from './db/database.js';
import { WalCheckpointer } from './db/wal-checkpointer.js';
import * as schema from './db/schema.js';
import { ChainVerifier, checkpointMessage, encodedEventHash, GENESIS_HASH, type ChainReport, type Checkpoint } from './audit/chain.js';
import type { Actor, CommandContext } from './domain/commands.js';
import { AuditEventSchema, type AuditEvent, type EventDraft } from './domain/events.js';
import { applyEvent, replayLog, type ReplayReport } from './domain/reducer.js';
import { createSelfSignedCertificate, type TlsCertificate } from './tls/self-signed-certificate.js';
import { certificateFingerprint } from '../protocol/tls-pinning.js';
import { SqliteStateStore } from './domain/sqlite-state.js';
import { AgentPresence } from './db/agent-presence.js';

export interface CoordinatorOptions {
  /** Sign a checkpoint every this many events (default 1000). */
  checkpointEvery?: number;
  /** Run a passive WAL checkpoint on the command thread after this many events (default WAL_CHECKPOINT_EVERY_EVENTS). */
  walCheckpointEvery?: number;
  /** Checkpoint the WAL in a background worker thread too (default true; see db/wal-checkpointer.ts). */
  backgroundWalCheckpoints?: boolean;
  /**
   * zstd on the data plane's wire (api/wire-compression.ts): `false` never
   * compresses, whatever clients accept (default true: clients decide, and
   * they ask for it over the network, not on loopback). `cacheBytes` bounds
   * the cache of compressed forms (default WIRE_CACHE_BYTES, 256 MiB);
   * `refineLevel` is the level prepared closure streams are compressed
   * again at in the background (default WIRE_STREAM_REFINED_LEVEL; null:
   * not refined; api/blob-stream-cache.ts).
   */
  wireCompression?: boolean | { cacheBytes?: number; refineLevel?: number | null };
  now?: () => number;
}

type EventRow = typeof schema.auditEvents.$inferSelect;

/**
 * WAL checkpoints (db/database.ts, db/wal-checkpointer.ts): a worker thread
 * checkpoints every WAL_BACKGROUND_INTERVAL_MS, started once a coordinator
 * has appended WAL_BACKGROUND_AFTER_EVENTS events (a one-off CLI command
 * never starts it); the command thread runs a passive checkpoint itself
 * after every WAL_CHECKPOINT_EVERY_EVENTS events (outside their
 * transactions), which bounds the WAL (~7 pages per event: ~110 MiB) under
 * a continuous stream; without a worker, an unref'd timer folds an idle
 * coordinator's WAL back every WAL_CHECKPOINT_INTERVAL_MS.
 */
export const WAL_CHECKPOINT_EVERY_EVENTS = 4096;
const WAL_BACKGROUND_AFTER_EVENTS = 256;
const WAL_BACKGROUND_INTERVAL_MS = 250;
const WAL_CHECKPOINT_INTERVAL_MS = 2000;
/** A checkpoint of the command thread that could not finish (the worker held the checkpoint lock, a reader an old snapshot) is retried this many events later. */
const WAL_CHECKPOINT_RETRY_EVENTS = 64;
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
}

type Decide<R> = (context: CommandContext) => Decision<R> | undefined;

export class Coordinator {
  readonly state: SqliteStateStore;
  /** When each agent was last heard from (coalesced heartbeats, not audit events). */
  readonly presence: AgentPresence;
  private readonly clock: HlcClock;
  private head: { seq: number; hash: string };
  private readonly checkpointEvery: number;
  /** The verification in progress, shared by concurrent callers. */
  private verifying: Promise<ChainReport> | undefined;
  readonly now: () => number;
  private readonly statements: {
    insertEvent: Database.Statement<[number, string, number, string, string, string, string, string, string | null, string, string]>;
    insertCheckpoint: Database.Statement<[number, string, string, number]>;
    walCheckpoint: Database.Statement<[], { busy: number; log: number; checkpointed: number }>;
    storedEvents: Database.Statement<[number, number, number], EventRow>;
  };
  /** execute's transaction (BEGIN IMMEDIATE … COMMIT), built once. */
  private readonly transact: <R>(actor: Actor, decide: Decide<R>) => { event: AuditEvent; result: R } | undefined;
  private readonly walCheckpointEvery: number;
  private eventsSinceWalCheckpoint = 0;
  private eventsSinceOpen = 0;
  private readonly walTimer: NodeJS.Timeout;
  private walCheckpointer: WalCheckpointer | undefined;
  private backgroundWalCheckpoints: boolean;

  private constructor(
    readonly dataDir: string,
    readonly identity: Identity,
    readonly database: CoordinatorDatabase,
    readonly castore: LocalCastore,
    options: CoordinatorOptions,
  ) {
    this.state = new SqliteStateStore(database.db);
    this.now = options.now ?? Date.now;
    this.presence = new AgentPresence(database.sqlite, this.now);
    this.wireCompression = options.wireCompression ?? true;
    this.checkpointEvery = options.checkpointEvery ?? 1000;
    this.walCheckpointEvery = options.walCheckpointEvery ?? WAL_CHECKPOINT_EVERY_EVENTS;
    this.backgroundWalCheckpoints = options.backgroundWalCheckpoints ?? true;
    const sqlite = database.sqlite;
    this.statements = {
      insertEvent: sqlite.prepare(
        'INSERT INTO audit_events (seq, hlc, wall_time, actor_key, actor_role, action, subject, payload, request_signature, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      insertCheckpoint: sqlite.prepare('INSERT INTO audit_checkpoints (seq, hash, signature, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING'),
      walCheckpoint: sqlite.prepare('PRAGMA wal_checkpoint(PASSIVE)'),
      storedEvents: sqlite.prepare(
        'SELECT seq, hlc, wall_time AS wallTime, actor_key AS actorKey, actor_role AS actorRole, action, subject, payload, request_signature AS requestSignature, prev_hash AS prevHash, hash ' +
          'FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?',
      ),
    };
    const transaction = sqlite.transaction(<R>(actor: Actor, decide: Decide<R>) => {
      const decided = decide(this.commandContext(actor));
      if (!decided) return undefined;
      return { event: this.appendAndApply(actor, decided.draft, decided.publish), result: decided.result };
    });
    this.transact = <R>(actor: Actor, decide: Decide<R>) => transaction.immediate(actor, decide) as { event: AuditEvent; result: R } | undefined;
    this.walTimer = setInterval(() => {
      if (this.eventsSinceWalCheckpoint > 0 && !this.walCheckpointer?.running) this.checkpointWal();
    }, WAL_CHECKPOINT_INTERVAL_MS);
    this.walTimer.unref();
    const tail = database.sqlite.prepare<[], { seq: number; hash: string; hlc: string }>('SELECT seq, hash, hlc FROM audit_events ORDER BY seq DESC LIMIT 1').get();
    this.head = tail ? { seq: tail.seq, hash: tail.hash } : { seq: 0, hash: GENESIS_HASH };
    this.clock = new HlcClock(identity.keyId.slice(0, 8), this.now);
    if (tail) this.clock.receive(parseHlc(tail.hlc));
  }

  /** Paths inside a coordinator data directory. */
  static paths(dataDir: string) {
    return {
      key: path.join(dataDir, 'coordinator.key'),
      database: path.join(dataDir, 'coordinator.db'),
      castore: path.join(dataDir, 'castore'),
      tlsCertificate: path.join(dataDir, 'tls', 'certificate.pem'),
      tlsKey: path.join(dataDir, 'tls', 'key.pem'),
    };
  }

  static exists(dataDir: string): boolean {
    return existsSync(Coordinator.paths(dataDir).key);
  }

  /** Opens a coordinator data directory, creating its key and database if needed. */
  static open(dataDir: string, options: CoordinatorOptions = {}): Coordinator {
    const paths = Coordinator.paths(dataDir);
    const identity = existsSync(paths.key) ? loadIdentity(paths.key) : createIdentityFile(paths.key);
    return new Coordinator(dataDir, identity, openCoordinatorDatabase(paths.database), LocalCastore.open(paths.castore), options);
  }

  /** The TLS certificate of the QUIC listener, created on first use (self-signed, pinned by clients). */
  get tls(): TlsCertificate {
    if (this.tlsCertificate) return this.tlsCertificate;
    const paths = Coordinator.paths(this.dataDir);
    if (!existsSync(paths.tlsCertificate)) {
      const created = createSelfSignedCertificate();
      mkdirSync(path.dirname(paths.tlsKey), { recursive: true, mode: 0o700 });
      writeFileSync(`${paths.tlsKey}.tmp`, created.privateKeyPem, { mode: 0o600 });
      renameSync(`${paths.tlsKey}.tmp`, paths.tlsKey);
      writeFileSync(`${paths.tlsCertificate}.tmp`, created.certificatePem);
      renameSync(`${paths.tlsCertificate}.tmp`, paths.tlsCertificate);
    }
    const certificatePem = readFileSync(paths.tlsCertificate, 'utf8');
    this.tlsCertificate = { certificatePem, privateKeyPem: readFileSync(paths.tlsKey, 'utf8'), fingerprint: certificateFingerprint(certificatePem) };
    return this.tlsCertificate;
  }
  private tlsCertificate: TlsCertificate | undefined;

  /** The UDP port of the QUIC data plane while it listens (advertised by `info`). */
  quicPort: number | null = null;
  /** CoordinatorOptions.wireCompression, as given. */
  readonly wireCompression: boolean | { cacheBytes?: number; refineLevel?: number | null };

  /** Set by `close`: held requests (an agent's watch) answer instead of reading a closed database. */
  closed = false;

  private readonly closeHooks: (() => void)[] = [];

  /** Runs `hook` when the coordinator closes (background work that must stop with it). */
  onClose(hook: () => void): void {
    this.closeHooks.push(hook);
  }

  /** Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const hook of this.closeHooks.splice(0)) hook();
    clearInterval(this.walTimer);
    this.presence.close();
    this.walCheckpointer?.stop();
    this.walCheckpointer = undefined;
    this.database.sqlite.close();
    this.castore.close();
  }

  get lastSeq(): number {
    return this.head.seq;
  }

  /** The name given at `coordinator init` (from the first event; read once it exists). */
  get name(): string {
    if (this.initName !== undefined) return this.initName;
    const first = this.database.sqlite.prepare<[], { payload: string }>("SELECT payload FROM audit_events WHERE action = 'coordinator.init' ORDER BY seq LIMIT 1").get();
    if (!first) return path.basename(this.dataDir);
    this.initName = (JSON.parse(first.payload) as { name: string }).name;
    return this.initName;
  }
  private initName: string | undefined;

  /** A fresh HLC timestamp of this coordinator's clock. */
  tickHlc(): string {
    return formatHlc(this.clock.tick());
  }

  /** The context a command is checked in: current state, the actor, the clock, the castore. */
  commandContext(actor: Actor): CommandContext {
    return {
      state: this.state,
      actor,
      now: this.now(),
      hasStorePathClosure: (storePath) => {
        try {
          this.castore.closure([storePath]);
          return true;
        } catch {
          return false;
        }
      },
    };
  }

  /**
   * Runs `decide` (a command: checks, then returns the event) and records
   * its event, atomically: the checks see the state the event applies to,
   * and the decision's `publish` (if any) commits with the event or not at
   * all. `decide` may return undefined for "nothing changed" (no event).
   */
  execute<R>(actor: Actor, decide: Decide<R>): { event: AuditEvent; result: R } | undefined {
    const done = this.transact(actor, decide);
    if (done) {
      for (const listener of this.commitListeners) listener(done.event);
      this.eventsSinceOpen++;
      if (++this.eventsSinceWalCheckpoint >= this.walCheckpointEvery) this.checkpointWal();
      else if (this.eventsSinceOpen >= WAL_BACKGROUND_AFTER_EVENTS && this.backgroundWalCheckpoints && !this.walCheckpointer) this.startWalCheckpointer();
    }
    return done;
  }

  private readonly commitListeners: ((event: AuditEvent) => void)[] = [];

  /**
   * Calls `listener` with each event after its transaction commits, in
   * order, synchronously (before the command's caller gets its result). A
   * listener must not throw and must not record events itself.
   */
  onCommit(listener: (event: AuditEvent) => void): void {
    this.commitListeners.push(listener);
  }

  private startWalCheckpointer(): void {
    try {
      this.walCheckpointer = new WalCheckpointer(this.database.sqlite.name, WAL_BACKGROUND_INTERVAL_MS);
    } catch {
      // No worker thread (resource limits): the command thread's own checkpoints keep the WAL bounded.
      this.backgroundWalCheckpoints = false;
    }
  }

  /** Whether a background thread is checkpointing the WAL (started after the first few hundred events). */
  get backgroundWalCheckpointing(): boolean {
    return this.walCheckpointer?.running ?? false;
  }

  /**
   * Folds the WAL back into the database file (PASSIVE: never waits for
   * readers, never blocks writers; with the worker running, only what it
   * has not copied yet). Not inside a transaction: the events are already
   * durable in the WAL; this only bounds its size. Returns whether the
   * whole WAL is now in the database file.
   */
  checkpointWal(): boolean {
    const sqlite = this.database.sqlite;
    if (!sqlite.open || sqlite.inTransaction) return false;
    let complete = false;
    try {
      const result = this.statements.walCheckpoint.get();
      // Only a complete checkpoint lets the next commit start the WAL over; otherwise try again soon.
      complete = result !== undefined && result.busy === 0 && result.checkpointed >= result.log;
    } catch {
      // Never fail a command that has committed (or a timer) over housekeeping: the WAL just stays longer.
    }
    this.eventsSinceWalCheckpoint = complete ? 0 : Math.max(0, this.walCheckpointEvery - WAL_CHECKPOINT_RETRY_EVENTS);
    return complete;
  }

  /** Records one event for a command that needs no result. */
  record(actor: Actor, decide: (context: CommandContext) => EventDraft | undefined): AuditEvent | undefined {
    return this.execute(actor, (context) => {
      const draft = decide(context);
      return draft ? { draft, result: undefined } : undefined;
    })?.event;
  }

  /** Must run inside a transaction; `publish` runs last, before the head moves (a throw leaves the head as it was). */
  private appendAndApply(actor: Actor, draft: EventDraft, publish?: () => void): AuditEvent {
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
    applyEvent(this.state, event);
    const { seq, hlc, wallTime, actorKey, actorRole, action, subject, requestSignature, prevHash } = fields;
    this.statements.insertEvent.run(seq, hlc, wallTime, actorKey, actorRole, action, subject, payloadJson, requestSignature, prevHash, hash);
    publish?.();
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

  /** Signs a checkpoint of the current head now (e.g. at shutdown or before an export). */
  checkpoint(): Checkpoint | undefined {
    if (this.head.seq === 0) return undefined;
    return this.database.sqlite.transaction(() => this.writeCheckpoint()).immediate();
  }

  /** Events in seq order after `afterSeq`, streamed from the database and validated. */
  *events(afterSeq = 0): Generator<AuditEvent> {
    for (const page of this.storedEventPages(afterSeq)) for (const event of page) yield AuditEventSchema.parse(event);
  }

  /**
   * Replays this coordinator's log (read back and validated) into `store`
   * with the live reducer, e.g. a SqliteStateStore over an empty database:
   * the state it rebuilds equals the live state tables row by row.
   */
  replayInto(store: Parameters<typeof replayLog>[1]): ReplayReport {
    return replayLog(this.events(), store);
  }

  checkpoints(): Checkpoint[] {
    return this.database.db.select({ seq: schema.auditCheckpoints.seq, hash: schema.auditCheckpoints.hash, signature: schema.auditCheckpoints.signature }).from(schema.auditCheckpoints).orderBy(schema.auditCheckpoints.seq).all();
  }

  /**
   * Verifies the whole chain and the checkpoint signatures. The log is read
   * in pages and other requests are served between them: at ~40,000
   * events a second, a large log would otherwise stop the coordinator for
   * seconds, at the call of any reader. Concurrent calls share one run;
   * events appended while it runs are verified too.
   */
  verifyAudit(): Promise<ChainReport> {
    this.verifying ??= this.verifyAuditInPages().finally(() => {
      this.verifying = undefined;
    });
    return this.verifying;
  }

  private async verifyAuditInPages(): Promise<ChainReport> {
    const verifier = new ChainVerifier(this.checkpoints(), this.identity.publicKey);
    for (const page of this.storedEventPages()) {
      for (const event of page) if (!verifier.push(event)) return verifier.finish();
      await new Promise((resolve) => setImmediate(resolve));
    }
    return verifier.finish();
  }

  /**
   * Up to `limit` events with `afterSeq < seq <= throughSeq`, in seq order,
   * as stored, without schema validation: verification must see a tampered
   * row as it is (and report it), not fail to parse it.
   */
  storedEvents(afterSeq: number, throughSeq: number, limit: number): AuditEvent[] {
    return this.statements.storedEvents.all(afterSeq, throughSeq, limit).map((row) => {
      let payload: unknown;
      try {
        payload = JSON.parse(row.payload);
      } catch {
        payload = row.payload;
      }
      return { ...row, payload } as AuditEvent;
    });
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
