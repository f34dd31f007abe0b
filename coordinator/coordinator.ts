/**
 * The coordinator's state and how it changes: the state store, and command
 * execution (`execute`, `record`), each command's event appended to the
 * audit log in one transaction with its state change (audit/audit-log.ts).
 * The other parts it is handed, built once by `open`: the database and the
 * castore, presence (db/agent-presence.ts), the event bus
 * (audit/event-bus.ts), storage maintenance (db/storage-maintenance.ts)
 * and the TLS material (tls/tls-files.ts). Serving it is start.ts's job.
 *
 * The command path runs on statements prepared once (in SqliteAuditLog and
 * SqliteStateStore), encodes each payload's canonical JSON once, and keeps
 * WAL checkpoints out of the commands' transactions (see db/database.ts).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { LocalCastore } from '../castore/index.js';
import { createIdentityFile, loadIdentity, type Identity } from '../protocol/identity.js';
import { openCoordinatorDatabase, type CoordinatorDatabase } from './db/database.js';
import { StorageMaintenance, type StorageMaintenanceOptions } from './db/storage-maintenance.js';
import { AgentPresence, DEFAULT_PRESENCE_THRESHOLDS, type PresenceThresholds } from './db/agent-presence.js';
import { SqliteAuditLog, type AuditLog, type Decision } from './audit/audit-log.js';
import type { ChainReport, Checkpoint } from './audit/chain.js';
import { EventBus } from './audit/event-bus.js';
import type { Actor, CommandContext } from './domain/commands.js';
import type { AuditEvent, DraftWithFollowUps, EventDraft } from './domain/events.js';
import { applyEvent, replayLog, type ReplayReport } from './domain/reducer.js';
import { SqliteStateStore } from './domain/sqlite-state.js';
import { TlsFiles } from './tls/tls-files.js';
import { DEFAULT_HEALTH_EVENT_LIMIT, type HealthEventLimit } from './api/health-reports.js';
import { alertDeliveryOptions, type AlertDeliveryOptions } from './api/alert-delivery.js';
import type { TlsCertificate } from '../protocol/self-signed-certificate.js';
import type { RetentionOptions } from './retention.js';

export interface CoordinatorOptions extends StorageMaintenanceOptions {
  /** Sign a checkpoint every this many events (default 1000). */
  checkpointEvery?: number;
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
  /**
   * Where the QUIC data plane listens, once it does (advertised by `info`;
   * default: nowhere). startCoordinator (start.ts) gives it.
   */
  quicPort?: () => number | null;
  now?: () => number;
  /** When agents not holding a watch turn stale, then offline (default DEFAULT_PRESENCE_THRESHOLDS). */
  presence?: Partial<PresenceThresholds>;
  /** How many health events one agent may have recorded, in how long (default DEFAULT_HEALTH_EVENT_LIMIT). */
  healthEvents?: Partial<HealthEventLimit>;
  /** How alerts are delivered and the audit chain checked for them (default DEFAULT_ALERT_DELIVERY, api/alert-delivery.ts). */
  alerts?: Partial<AlertDeliveryOptions>;
  /** What `ferry gc` keeps when it does not say (retention.ts: DEFAULT_KEEP_CONFIGS, DEFAULT_GC_GRACE_SECONDS). */
  retention?: RetentionOptions;
}

/** What a coordinator is made of; `Coordinator.open` builds each once. */
interface CoordinatorParts {
  dataDir: string;
  now: () => number;
  identity: Identity;
  database: CoordinatorDatabase;
  castore: LocalCastore;
  audit: AuditLog;
  presence: AgentPresence;
  commits: EventBus;
  maintenance: StorageMaintenance;
  tls: TlsCertificate;
}

type Decide<R> = (context: CommandContext) => Decision<R> | undefined;

export class Coordinator {
  readonly dataDir: string;
  readonly identity: Identity;
  readonly database: CoordinatorDatabase;
  readonly castore: LocalCastore;
  /** The hash-chained log every state change is an event of. */
  readonly audit: AuditLog;
  readonly state: SqliteStateStore;
  /** When each agent was last heard from (coalesced heartbeats, not audit events). */
  readonly presence: AgentPresence;
  /** Each event, once committed (what held watches wait on). */
  readonly commits: EventBus;
  /** WAL checkpoints, outside the commands' transactions. */
  readonly maintenance: StorageMaintenance;
  /** The TLS certificate of the QUIC listener and the HTTPS port (self-signed, pinned by clients; created on first use). */
  readonly tls: TlsCertificate;
  readonly now: () => number;
  /** CoordinatorOptions.wireCompression, as given. */
  readonly wireCompression: boolean | { cacheBytes?: number; refineLevel?: number | null };
  private readonly advertisedQuicPort: () => number | null;
  /** CoordinatorOptions.healthEvents with its defaults (api/health-reports.ts). */
  readonly healthEventLimit: HealthEventLimit;
  /** CoordinatorOptions.alerts with its defaults (api/alert-delivery.ts). */
  readonly alertDelivery: AlertDeliveryOptions;
  /** CoordinatorOptions.retention, as given (retention.ts applies the defaults). */
  readonly retention: RetentionOptions;

  /** Set by `close`: held requests (an agent's watch) answer instead of reading a closed database. */
  closed = false;

  private readonly closeHooks: (() => void)[] = [];

  private constructor(parts: CoordinatorParts, options: CoordinatorOptions) {
    this.dataDir = parts.dataDir;
    this.identity = parts.identity;
    this.database = parts.database;
    this.castore = parts.castore;
    this.audit = parts.audit;
    this.presence = parts.presence;
    this.commits = parts.commits;
    this.maintenance = parts.maintenance;
    this.tls = parts.tls;
    this.state = new SqliteStateStore(parts.database.db);
    this.now = parts.now;
    this.wireCompression = options.wireCompression ?? true;
    this.advertisedQuicPort = options.quicPort ?? (() => null);
    this.healthEventLimit = { ...DEFAULT_HEALTH_EVENT_LIMIT, ...options.healthEvents };
    this.alertDelivery = alertDeliveryOptions(options.alerts);
    this.retention = options.retention ?? {};
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

  /** Opens a coordinator data directory, creating its key and database if needed, and builds each part once. */
  static open(dataDir: string, options: CoordinatorOptions = {}): Coordinator {
    const paths = Coordinator.paths(dataDir);
    const identity = existsSync(paths.key) ? loadIdentity(paths.key) : createIdentityFile(paths.key);
    const database = openCoordinatorDatabase(paths.database);
    const now = options.now ?? Date.now;
    return new Coordinator(
      {
        dataDir,
        now,
        identity,
        database,
        castore: LocalCastore.open(paths.castore),
        audit: new SqliteAuditLog(database, identity, { checkpointEvery: options.checkpointEvery, now }),
        presence: new AgentPresence(database.sqlite, now, { ...DEFAULT_PRESENCE_THRESHOLDS, ...options.presence }),
        commits: new EventBus(),
        maintenance: new StorageMaintenance(database.sqlite, options),
        tls: new TlsFiles({ certificate: paths.tlsCertificate, key: paths.tlsKey }),
      },
      options,
    );
  }

  /** The UDP port of the QUIC data plane while it listens (advertised by `info`), else null. */
  get quicPort(): number | null {
    return this.advertisedQuicPort();
  }

  /** Runs `hook` when the coordinator closes (background work that must stop with it). */
  onClose(hook: () => void): void {
    this.closeHooks.push(hook);
  }

  /** Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const hook of this.closeHooks.splice(0)) hook();
    this.presence.close();
    this.maintenance.close();
    this.database.sqlite.close();
    this.castore.close();
  }

  /** The name given at `coordinator init` (from the first event; read once it exists). */
  get name(): string {
    if (this.initName !== undefined) return this.initName;
    const first = this.audit.firstOf('coordinator.init');
    if (!first) return path.basename(this.dataDir);
    this.initName = (first.payload as { name: string }).name;
    return this.initName;
  }
  private initName: string | undefined;

  /**
   * Set by a coordinator GC while it decides and sweeps (retention.ts): the
   * commands that would make a config needed again are refused meanwhile.
   */
  collectingGarbage = false;

  /** The context a command is checked in: current state, the actor, the clock, the castore. */
  commandContext(actor: Actor): CommandContext {
    return {
      state: this.state,
      actor,
      now: this.now(),
      collectingGarbage: this.collectingGarbage,
      all: (table) => this.state.all(table),
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
   * its event, atomically (AuditLog.append): the checks see the state the
   * event applies to, and the decision's `publish` (if any) commits with the
   * event or not at all. `decide` may return undefined for "nothing changed"
   * (no event). After the commit, the event bus hears of the event, then
   * storage maintenance counts it.
   */
  execute<R>(actor: Actor, decide: Decide<R>): { event: AuditEvent; events: AuditEvent[]; result: R } | undefined {
    const done = this.audit.append(actor, () => decide(this.commandContext(actor)), (event) => applyEvent(this.state, event));
    if (done) {
      for (const event of done.events) {
        this.commits.publish(event);
        this.maintenance.afterCommit();
      }
    }
    return done;
  }

  /**
   * Records a command that needs no result: its event, or its event and the
   * follow-ups it entails (rule placements); returns the first event.
   */
  record(actor: Actor, decide: (context: CommandContext) => EventDraft | DraftWithFollowUps | undefined): AuditEvent | undefined {
    return this.execute(actor, (context) => {
      const decided = decide(context);
      if (!decided) return undefined;
      return 'followUps' in decided ? { draft: decided.draft, followUps: decided.followUps, result: undefined } : { draft: decided, result: undefined };
    })?.event;
  }

  /**
   * Replays this coordinator's log (read back and validated) into `store`
   * with the live reducer, e.g. a SqliteStateStore over an empty database:
   * the state it rebuilds equals the live state tables row by row.
   */
  replayInto(store: Parameters<typeof replayLog>[1]): ReplayReport {
    return replayLog(this.audit.events(), store);
  }

  // The audit log's reads, by the names most callers (API, CLI, tests) use.

  get lastSeq(): number {
    return this.audit.lastSeq;
  }

  /** A fresh HLC timestamp of this coordinator's clock. */
  tickHlc(): string {
    return this.audit.tickHlc();
  }

  /** Signs a checkpoint of the current head now (e.g. at shutdown or before an export). */
  checkpoint(): Checkpoint | undefined {
    return this.audit.checkpoint();
  }

  checkpoints(): Checkpoint[] {
    return this.audit.checkpoints();
  }

  /** Events in seq order after `afterSeq`, streamed from the database and validated. */
  events(afterSeq = 0): Generator<AuditEvent> {
    return this.audit.events(afterSeq);
  }

  /** AuditLog.verify: the whole chain and the checkpoint signatures, in pages, one run shared by concurrent callers. */
  verifyAudit(): Promise<ChainReport> {
    return this.audit.verify();
  }
}
