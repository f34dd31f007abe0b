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
import { integer, sqliteTable, text, index } from 'drizzle-orm/sqlite-core';
import type { ConfigId } from '../../protocol/config.js';
import type { AgentStatus, Health, Phase, RecordedPresence, Role } from '../../protocol/api/fleet.js';
import type { SignedConfigBody } from '../../protocol/api/views.js';

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
  /** The last recorded health of `healthConfig` (agent.health), reset when the agent reports another config active. */
  health: text('health').$type<Health>(),
  healthReason: text('health_reason'),
  healthConfig: text('health_config').$type<ConfigId>(),
  /** Wall time (ms) of the last agent.health event: what its rate limit counts from. */
  healthAt: integer('health_at'),
  /** The last agent.presence event's presence (null: none yet). */
  recordedPresence: text('recorded_presence').$type<RecordedPresence>(),
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
