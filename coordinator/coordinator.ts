/**
 * The coordinator's core: its key, database, castore and audit log. Every
 * state change goes through `record`: one transaction appends one chained
 * event and applies it with the reducer, or nothing happens.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Castore } from '../castore/index.js';
import { canonicalJson } from '../protocol/canonical-json.js';
import { formatHlc, HlcClock, parseHlc } from '../protocol/hlc.js';
import { createIdentityFile, loadIdentity, type Identity } from '../protocol/identity.js';
import { openCoordinatorDatabase, type CoordinatorDatabase } from './db/database.js';
import * as schema from './db/schema.js';
import { checkpointMessage, eventHash, GENESIS_HASH, verifyChain, type ChainReport, type Checkpoint } from './audit/chain.js';
import type { Actor, CommandContext } from './domain/commands.js';
import { AuditEventSchema, type AuditEvent, type EventDraft } from './domain/events.js';
import { applyEvent } from './domain/reducer.js';
import { createSelfSignedCertificate, type TlsCertificate } from './tls/self-signed-certificate.js';
import { certificateFingerprint } from '../protocol/tls-pinning.js';
import { SqliteStateStore } from './domain/sqlite-state.js';

export interface CoordinatorOptions {
  /** Sign a checkpoint every this many events (default 1000). */
  checkpointEvery?: number;
  now?: () => number;
}

type EventRow = typeof schema.auditEvents.$inferSelect;

export class Coordinator {
  readonly state: SqliteStateStore;
  private readonly clock: HlcClock;
  private head: { seq: number; hash: string };
  private readonly checkpointEvery: number;
  readonly now: () => number;

  private constructor(
    readonly dataDir: string,
    readonly identity: Identity,
    readonly database: CoordinatorDatabase,
    readonly castore: Castore,
    options: CoordinatorOptions,
  ) {
    this.state = new SqliteStateStore(database.db);
    this.now = options.now ?? Date.now;
    this.checkpointEvery = options.checkpointEvery ?? 1000;
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
    return new Coordinator(dataDir, identity, openCoordinatorDatabase(paths.database), Castore.open(paths.castore), options);
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

  close(): void {
    this.database.sqlite.close();
    this.castore.close();
  }

  get lastSeq(): number {
    return this.head.seq;
  }

  /** The name given at `coordinator init` (from the first event). */
  get name(): string {
    const first = this.database.sqlite.prepare<[], { payload: string }>("SELECT payload FROM audit_events WHERE action = 'coordinator.init' ORDER BY seq LIMIT 1").get();
    return first ? (JSON.parse(first.payload) as { name: string }).name : path.basename(this.dataDir);
  }

  /** A fresh HLC timestamp of this coordinator's clock. */
  tickHlc(): string {
    return formatHlc(this.clock.tick());
  }

  /** Records that an agent was heard from (heartbeats are not audit events). */
  touchPresence(agentId: string): void {
    this.database.sqlite
      .prepare('INSERT INTO agent_presence (id, last_seen) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen')
      .run(agentId, this.now());
  }

  presence(agentId: string): number | null {
    return this.database.sqlite.prepare<[string], { last_seen: number }>('SELECT last_seen FROM agent_presence WHERE id = ?').get(agentId)?.last_seen ?? null;
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
   * its event, atomically: the checks see the state the event applies to.
   * `decide` may return undefined for "nothing changed" (no event).
   */
  execute<R>(actor: Actor, decide: (context: CommandContext) => { draft: EventDraft; result: R } | undefined): { event: AuditEvent; result: R } | undefined {
    return this.database.sqlite
      .transaction(() => {
        const decided = decide(this.commandContext(actor));
        if (!decided) return undefined;
        return { event: this.appendAndApply(actor, decided.draft), result: decided.result };
      })
      .immediate();
  }

  /** Records one event for a command that needs no result. */
  record(actor: Actor, decide: (context: CommandContext) => EventDraft | undefined): AuditEvent | undefined {
    return this.execute(actor, (context) => {
      const draft = decide(context);
      return draft ? { draft, result: undefined } : undefined;
    })?.event;
  }

  /** Must run inside a transaction. */
  private appendAndApply(actor: Actor, draft: EventDraft): AuditEvent {
    const unhashed = {
      seq: this.head.seq + 1,
      hlc: formatHlc(this.clock.tick()),
      wallTime: this.now(),
      actorKey: actor.keyId,
      actorRole: actor.role,
      action: draft.action,
      subject: draft.subject,
      // Round-trip through canonical JSON: what is hashed is exactly what is stored and replayed.
      payload: JSON.parse(canonicalJson(draft.payload)) as unknown,
      requestSignature: actor.requestSignature ?? null,
      prevHash: this.head.hash,
    };
    const event: AuditEvent = { ...unhashed, hash: eventHash(unhashed) };
    applyEvent(this.state, event);
    this.database.db.insert(schema.auditEvents).values({ ...event, payload: canonicalJson(event.payload) }).run();
    this.head = { seq: event.seq, hash: event.hash };
    if (event.seq % this.checkpointEvery === 0) this.writeCheckpoint();
    return event;
  }

  private writeCheckpoint(): Checkpoint {
    const { seq, hash } = this.head;
    const signature = Buffer.from(this.identity.sign(checkpointMessage(seq, hash))).toString('base64');
    this.database.db.insert(schema.auditCheckpoints).values({ seq, hash, signature, createdAt: this.now() }).onConflictDoNothing().run();
    return { seq, hash, signature };
  }

  /** Signs a checkpoint of the current head now (e.g. at shutdown or before an export). */
  checkpoint(): Checkpoint | undefined {
    if (this.head.seq === 0) return undefined;
    return this.database.sqlite.transaction(() => this.writeCheckpoint()).immediate();
  }

  /** Events in seq order after `afterSeq`, streamed from the database and validated. */
  *events(afterSeq = 0): Generator<AuditEvent> {
    for (const event of this.rawEvents(afterSeq)) yield AuditEventSchema.parse(event);
  }

  checkpoints(): Checkpoint[] {
    return this.database.db.select({ seq: schema.auditCheckpoints.seq, hash: schema.auditCheckpoints.hash, signature: schema.auditCheckpoints.signature }).from(schema.auditCheckpoints).orderBy(schema.auditCheckpoints.seq).all();
  }

  verifyAudit(): ChainReport {
    return verifyChain(this.rawEvents(), this.checkpoints(), this.identity.publicKey);
  }

  /**
   * Events as stored, without schema validation: verification must see a
   * tampered row as it is (and report it), not fail to parse it.
   */
  private *rawEvents(afterSeq = 0): Generator<AuditEvent> {
    const rows = this.database.sqlite
      .prepare<[number], EventRow>(
        'SELECT seq, hlc, wall_time AS wallTime, actor_key AS actorKey, actor_role AS actorRole, action, subject, payload, request_signature AS requestSignature, prev_hash AS prevHash, hash FROM audit_events WHERE seq > ? ORDER BY seq',
      )
      .iterate(afterSeq);
    for (const row of rows) {
      let payload: unknown;
      try {
        payload = JSON.parse(row.payload);
      } catch {
        payload = row.payload;
      }
      yield { ...row, payload } as AuditEvent;
    }
  }
}
