/**
 * The coordinator's SQLite schema (drizzle). Two kinds of tables:
 * - the audit log (`audit_events`, `audit_checkpoints`): append-only, the
 *   source of truth;
 * - state tables, derived from the log by the reducer (domain/reducer.ts):
 *   replaying the log into an empty database rebuilds them exactly.
 * Plus bookkeeping that is deliberately not audited (nonces, last-seen).
 *
 * Every state table has a single text primary key `id`, so one generic
 * StateStore serves them all. This file imports nothing local at run time
 * (drizzle-kit loads it on its own); branded column types are type-only.
 */
import { blob, integer, sqliteTable, text, index, uniqueIndex } from 'drizzle-orm/sqlite-core';
import type { ConfigId } from '../../protocol/config.js';
import type { AgentStatus, Health, Phase, RecordedPresence, Role } from '../../protocol/api/fleet.js';
import type { SignedConfigBody } from '../../protocol/api/views.js';
import type { AlertKind } from '../../protocol/alerts.js';
import type { RolloutPolicy, RolloutStatus } from '../../protocol/rollout-policy.js';

export const auditEvents = sqliteTable('audit_events', {
  seq: integer('seq').primaryKey(),
  hlc: text('hlc').notNull(),
  wallTime: integer('wall_time').notNull(),
  actorKey: text('actor_key').notNull(),
  actorRole: text('actor_role').notNull(),
  action: text('action').notNull(),
  subject: text('subject').notNull(),
  /** Canonical JSON of the payload. */
  payload: text('payload').notNull(),
  requestSignature: text('request_signature'),
  prevHash: text('prev_hash').notNull(),
  hash: text('hash').notNull(),
}, (table) => [index('audit_events_action').on(table.action), index('audit_events_subject').on(table.subject)]);

export const auditCheckpoints = sqliteTable('audit_checkpoints', {
  seq: integer('seq').primaryKey(),
  hash: text('hash').notNull(),
  /** base64 ed25519 signature by the coordinator key over `ferry-checkpoint-v1\n<seq>\n<hash>`. */
  signature: text('signature').notNull(),
  createdAt: integer('created_at').notNull(),
});

export const keys = sqliteTable('keys', {
  id: text('id').primaryKey(),
  role: text('role').$type<Role>().notNull(),
  label: text('label').notNull(),
  revoked: integer('revoked', { mode: 'boolean' }).notNull(),
  addedSeq: integer('added_seq').notNull(),
  /** The `key.revoke` event that revoked it (null while active): a refused re-add names it. */
  revokedSeq: integer('revoked_seq'),
});

export const tokens = sqliteTable('tokens', {
  id: text('id').primaryKey(),
  secretHash: text('secret_hash').notNull(),
  label: text('label').notNull(),
  expiresAt: integer('expires_at').notNull(),
  usesLeft: integer('uses_left').notNull(),
  autoApprove: integer('auto_approve', { mode: 'boolean' }).notNull(),
  labels: text('labels', { mode: 'json' }).$type<Record<string, string>>().notNull(),
  revoked: integer('revoked', { mode: 'boolean' }).notNull(),
  createdSeq: integer('created_seq').notNull(),
  /** A relay token (enrolls site relays, never agents). */
  relay: integer('relay', { mode: 'boolean' }).notNull().default(false),
  /** What an agent enrolling with it is placed on at once (docs/coordinator.md "Rules"): a graph (an explicit assignment, with `pin`), or a rule it was checked against. */
  follow: text('follow'),
  pin: text('pin').$type<ConfigId>(),
  rule: text('rule'),
});

export const agents = sqliteTable('agents', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  type: text('type').notNull(),
  status: text('status').$type<AgentStatus>().notNull(),
  labels: text('labels', { mode: 'json' }).$type<Record<string, string>>().notNull(),
  tokenId: text('token_id').notNull(),
  factsRevision: integer('facts_revision').notNull(),
  system: text('system'),
  desiredGraph: text('desired_graph'),
  pinnedConfig: text('pinned_config').$type<ConfigId>(),
  currentConfig: text('current_config').$type<ConfigId>(),
  phase: text('phase').$type<Phase>(),
  lastError: text('last_error'),
  /**
   * Who places the agent (docs/coordinator.md "Rules"): `rules` (the first
   * rule its labels match; none: it follows nothing) or `manual` (an
   * operator's own `agents assign`/`pin`, which rules leave alone).
   */
  control: text('control').$type<'rules' | 'manual'>().notNull().default('rules'),
  /** The rule whose placement it has (null: manual, or no rule matches). */
  rule: text('rule'),
  /** The last recorded health of `healthConfig` (agent.health), reset when the agent reports another config active. */
  health: text('health').$type<Health>(),
  healthReason: text('health_reason'),
  healthConfig: text('health_config').$type<ConfigId>(),
  /** Wall time (ms) of the last agent.health event: what its rate limit counts from. */
  healthAt: integer('health_at'),
  /** The last agent.presence event's presence (null: none yet). */
  recordedPresence: text('recorded_presence').$type<RecordedPresence>(),
  /** The seq of its last agent.retry (null: none), handed to the agent in its signed desired answer. */
  retrySeq: integer('retry_seq'),
  /** An agent.assign with stop, not followed by another assignment or a pin. */
  stopRequested: integer('stop_requested', { mode: 'boolean' }).notNull().default(false),
  enrolledSeq: integer('enrolled_seq').notNull(),
  updatedSeq: integer('updated_seq').notNull(),
});

export const agentFacts = sqliteTable('agent_facts', {
  /** `<agent id>#<revision>`. */
  id: text('id').primaryKey(),
  agentId: text('agent_id').notNull(),
  revision: integer('revision').notNull(),
  facts: text('facts', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
  hlc: text('hlc').notNull(),
  seq: integer('seq').notNull(),
}, (table) => [index('agent_facts_agent').on(table.agentId)]);

export const graphs = sqliteTable('graphs', {
  id: text('id').primaryKey(),
  head: text('head').$type<ConfigId>().notNull(),
  updatedSeq: integer('updated_seq').notNull(),
});

export const configs = sqliteTable('configs', {
  id: text('id').$type<ConfigId>().primaryKey(),
  graph: text('graph').notNull(),
  parents: text('parents', { mode: 'json' }).$type<ConfigId[]>().notNull(),
  /** The signed config body (canonical fields: targets, activation, health, message, author, hlc…). */
  body: text('body', { mode: 'json' }).$type<SignedConfigBody>().notNull(),
  forced: integer('forced', { mode: 'boolean' }).notNull(),
  seq: integer('seq').notNull(),
}, (table) => [index('configs_graph').on(table.graph)]);

/**
 * Staged rollouts (docs/coordinator.md "Staged rollouts"), one row per
 * graph: its policy (rollout.policy) and its latest rollout, started by a
 * config.submit to a graph with a policy and driven by the rollout.* events.
 * The counters count the rollout's release rows by outcome, kept by the
 * reducer, so `rollout status` and the driver read one row.
 */
export const rollouts = sqliteTable('rollouts', {
  /** The graph's name. */
  id: text('id').primaryKey(),
  policy: text('policy', { mode: 'json' }).$type<RolloutPolicy>(),
  /** The config being rolled out (null: none yet). */
  configId: text('config_id').$type<ConfigId>(),
  /** What agents not released run meanwhile: the head before it (null: nothing, the graph's first config). */
  base: text('base').$type<ConfigId>(),
  status: text('status').$type<RolloutStatus>(),
  /** The batch released last (0-based; -1: none yet). */
  batch: integer('batch').notNull(),
  /** Agents released once that batch is fully out (cumulative). */
  target: integer('target').notNull(),
  released: integer('released').notNull(),
  active: integer('active').notNull(),
  failed: integer('failed').notNull(),
  /** Failures an operator accepted by resuming a halted rollout: the threshold counts the ones after. */
  acceptedFailures: integer('accepted_failures').notNull(),
  /** Wall time (ms) the current batch settled (every released agent active or failed); null while it has not. */
  settledAt: integer('settled_at'),
  /** Why it halted or ended (halt, abort, rollback), else null. */
  reason: text('reason'),
  startedSeq: integer('started_seq'),
  updatedSeq: integer('updated_seq').notNull(),
});

/**
 * One row per agent a rollout released (`<config id>:<agent id>`) and how
 * it went for that agent there: pending, active (reported it active) or
 * failed (failed, rolled back, or degraded; sticky for the rollout).
 */
export const rolloutReleases = sqliteTable('rollout_releases', {
  id: text('id').primaryKey(),
  graph: text('graph').notNull(),
  configId: text('config_id').$type<ConfigId>().notNull(),
  agentId: text('agent_id').notNull(),
  batch: integer('batch').notNull(),
  outcome: text('outcome').$type<'pending' | 'active' | 'failed'>().notNull(),
  seq: integer('seq').notNull(),
}, (table) => [index('rollout_releases_config').on(table.configId)]);

/**
 * Webhooks (`ferry alerts add`): state, from alert.add / alert.remove.
 * The URL itself is not here nor in the log (viewers read the log, and a
 * webhook URL often holds its secret): only its origin and a digest of it;
 * the URL is in alert_endpoints.
 */
export const alerts = sqliteTable('alerts', {
  id: text('id').primaryKey(),
  kinds: text('kinds', { mode: 'json' }).$type<AlertKind[]>().notNull(),
  /** `--where` clauses (coordinator/api/queries.ts parseWhere), as given. */
  where: text('where', { mode: 'json' }).$type<string[]>().notNull(),
  /** The URL's origin (`https://hooks.example.com:8443`). */
  target: text('target').notNull(),
  /** SHA-256 (hex) of the whole URL: says which URL was registered without showing it. */
  urlDigest: text('url_digest').notNull(),
  removed: integer('removed', { mode: 'boolean' }).notNull(),
  createdSeq: integer('created_seq').notNull(),
  removedSeq: integer('removed_seq'),
});

/**
 * Targeting rules (`ferry rules add`; docs/coordinator.md "Rules"): the
 * first rule (lowest position) whose `--where` matches an agent's labels
 * places it. A removed rule keeps its row (`removed`, position -1): state
 * rows are never deleted, and the name may be added again.
 */
export const rules = sqliteTable('rules', {
  id: text('id').primaryKey(),
  /** `labels.*` clauses (coordinator/domain/selectors.ts), as given; empty: every agent. */
  where: text('where', { mode: 'json' }).$type<string[]>().notNull(),
  follow: text('follow').notNull(),
  pin: text('pin').$type<ConfigId>(),
  /** 0 is tried first. */
  position: integer('position').notNull(),
  removed: integer('removed', { mode: 'boolean' }).notNull(),
  createdSeq: integer('created_seq').notNull(),
  updatedSeq: integer('updated_seq').notNull(),
});

/**
 * Per-machine parameters (docs/secrets.md): one row per layer, from
 * param.set / param.unset. `id` is protocol/api/params.ts paramLayerId;
 * `layer` the layer as given. Groups are applied in `createdSeq` order.
 */
export const params = sqliteTable('params', {
  id: text('id').primaryKey(),
  layer: text('layer', { mode: 'json' }).$type<{ graph: string } | { where: string[] } | { agent: string }>().notNull(),
  values: text('values', { mode: 'json' }).$type<Record<string, string>>().notNull(),
  createdSeq: integer('created_seq').notNull(),
  updatedSeq: integer('updated_seq').notNull(),
});

/**
 * Site relays (docs/relays.md): enrolled with a relay token, assigned to
 * agents by `--where` clauses (relay.assign). Their key id is their id, as
 * for agents; they are not agents (no facts, no desired config).
 */
export const relays = sqliteTable('relays', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  tokenId: text('token_id').notNull(),
  /** Where agents reach it (https://host:port) and its certificate's SHA-256, which agents pin. */
  url: text('url').notNull(),
  fingerprint: text('fingerprint').notNull(),
  /** `--where` clauses (coordinator/api/queries.ts parseWhere) selecting the agents that use it; empty: none. */
  where: text('where', { mode: 'json' }).$type<string[]>().notNull(),
  status: text('status').$type<'enrolled' | 'revoked'>().notNull(),
  /** The relay it fetches from before the coordinator (relay.upstream; null: the coordinator only). */
  upstream: text('upstream'),
  enrolledSeq: integer('enrolled_seq').notNull(),
  updatedSeq: integer('updated_seq').notNull(),
});

/**
 * Secrets (docs/secrets.md): state, from secret.set / secret.remove. Each
 * row is a secret's latest version: who it is encrypted to and the
 * SHA-256 of its ciphertext. The ciphertext is in secret_ciphertexts.
 */
export const secrets = sqliteTable('secrets', {
  /** The secret's name. */
  id: text('id').primaryKey(),
  version: integer('version').notNull(),
  /** Agent ids it is encrypted to (the setter's key is a recipient too, recorded apart). */
  recipients: text('recipients', { mode: 'json' }).$type<string[]>().notNull(),
  setter: text('setter').notNull(),
  /** How the agents were selected: `--where` clauses (resolved again by rekey) or a fixed list. */
  selector: text('selector', { mode: 'json' }).$type<{ where: string[] } | { agents: string[] }>().notNull(),
  ciphertextSha256: text('ciphertext_sha256').notNull(),
  ciphertextBytes: integer('ciphertext_bytes').notNull(),
  removed: integer('removed', { mode: 'boolean' }).notNull(),
  updatedSeq: integer('updated_seq').notNull(),
});

/**
 * Each secret's latest ciphertext, written in the transaction of its
 * secret.set (deleted with secret.remove). Not in the log (an export
 * carries no ciphertext: only its digest) and not audit state: replay does
 * not rebuild it, so a database rebuilt from an export knows every
 * secret's versions and recipients but must have each set again.
 */
export const secretCiphertexts = sqliteTable('secret_ciphertexts', {
  /** The secret's name. */
  id: text('id').primaryKey(),
  version: integer('version').notNull(),
  sha256: text('sha256').notNull(),
  ciphertext: blob('ciphertext', { mode: 'buffer' }).notNull(),
});

/**
 * Each alert's URL, written in the transaction of its alert.add (and
 * deleted with alert.remove); not audit state: replay does not rebuild it,
 * so a database rebuilt from an export has alerts without URLs (and says
 * so) rather than a log that hands webhook secrets to every viewer.
 */
export const alertEndpoints = sqliteTable('alert_endpoints', {
  id: text('id').primaryKey(),
  url: text('url').notNull(),
});

/** The alerts' outbox (coordinator/alerts/): one row per alert still to deliver; operational, not audited. */
export const alertDeliveries = sqliteTable('alert_deliveries', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  alertId: text('alert_id').notNull(),
  /** The payload's id (`<alertId>:<kind>:<seq>`): one delivery per alert and happening. */
  deliveryKey: text('delivery_key').notNull(),
  /** The JSON body, fixed when queued: every attempt sends (and signs) the same bytes. */
  body: text('body').notNull(),
  attempts: integer('attempts').notNull(),
  createdAt: integer('created_at').notNull(),
  nextAttemptAt: integer('next_attempt_at').notNull(),
  lastError: text('last_error'),
}, (table) => [uniqueIndex('alert_deliveries_key').on(table.deliveryKey), index('alert_deliveries_due').on(table.nextAttemptAt), index('alert_deliveries_alert').on(table.alertId)]);

/** How each alert's deliveries went (what `ferry alerts ls` shows); operational. */
export const alertOutcomes = sqliteTable('alert_outcomes', {
  id: text('id').primaryKey(),
  lastAttemptAt: integer('last_attempt_at'),
  /** The last attempt's outcome: delivered, retrying (it failed, another follows) or failed (given up). */
  lastOutcome: text('last_outcome').$type<'delivered' | 'retrying' | 'failed'>(),
  /** The receiver's HTTP status at the last attempt (null: no answer). */
  lastStatus: integer('last_status'),
  lastError: text('last_error'),
  delivered: integer('delivered').notNull(),
  failed: integer('failed').notNull(),
  /** Deliveries dropped unsent because the alert's outbox was full (oldest first). */
  dropped: integer('dropped').notNull(),
});

/** The alert dispatcher's bookkeeping: `cursor` (the last event seq it queued alerts for), `audit-break` (the break it alerted). */
export const alertDispatch = sqliteTable('alert_dispatch', {
  id: text('id').primaryKey(),
  seq: integer('seq').notNull(),
  note: text('note'),
});

/** Request nonces seen recently (replay protection); not audited. */
export const nonces = sqliteTable('nonces', {
  id: text('id').primaryKey(),
  expiresAt: integer('expires_at').notNull(),
});

/** Heartbeats: not audit events (DESIGN.md section 4). */
export const agentPresence = sqliteTable('agent_presence', {
  id: text('id').primaryKey(),
  lastSeen: integer('last_seen').notNull(),
});
