/**
 * The audit log as the API shows it: an event's envelope (AuditEventSchema,
 * what `GET /v1/audit/events` lists and an export holds) and a verification
 * report (ChainReportSchema). The envelope names its action from
 * AUDIT_ACTIONS; each action's payload schema stays with the coordinator's
 * domain (coordinator/domain/events.ts: EVENT_PAYLOADS, which must name
 * exactly these actions), because replay, not the API, decides what a
 * payload may hold.
 */
import { z } from 'zod';
import { HlcStringSchema } from '../hlc.js';
import { ActorRoleSchema } from './fleet.js';

/** Every action an audit event can record, in the order the domain declares them. */
export const AUDIT_ACTIONS = [
  'coordinator.init',
  'key.add',
  'key.revoke',
  'token.create',
  'token.revoke',
  'agent.enroll',
  'agent.approve',
  'agent.reject',
  'agent.revoke',
  'agent.facts',
  'agent.assign',
  'agent.pin',
  'agent.label',
  'agent.place',
  'agent.report',
  'agent.health',
  'agent.presence',
  'config.submit',
  'graph.rollback',
  'store.push',
  'alert.add',
  'alert.remove',
  'relay.enroll',
  'relay.assign',
  'relay.revoke',
  'relay.upstream',
  'agent.retry',
  'store.gc',
  'rollout.policy',
  'rollout.advance',
  'rollout.halt',
  'rollout.pause',
  'rollout.resume',
  'rollout.abort',
  'rollout.complete',
  'secret.set',
  'secret.remove',
  'rule.add',
  'rule.remove',
  'rule.move',
  'param.set',
  'param.unset',
] as const;
export const ActionSchema = z.enum(AUDIT_ACTIONS);
export type Action = z.infer<typeof ActionSchema>;

const Blake3HexSchema = z.string().regex(/^[0-9a-f]{64}$/);

/**
 * One event of the log. `payload` is unknown here on purpose: it is
 * checked against its action's schema where the log is replayed or
 * verified (coordinator/domain/events.ts parsePayload), and the hash covers
 * it as recorded.
 */
export const AuditEventSchema = z.strictObject({
  seq: z.number().int().min(1),
  hlc: HlcStringSchema,
  wallTime: z.number().int(),
  actorKey: z.string().max(128),
  actorRole: ActorRoleSchema,
  action: ActionSchema,
  subject: z.string().max(256),
  payload: z.unknown(),
  requestSignature: z.string().max(128).nullable(),
  prevHash: Blake3HexSchema,
  hash: Blake3HexSchema,
});
export type AuditEvent = z.infer<typeof AuditEventSchema>;

/** What verifying the chain found (`GET /v1/audit/verify`, `ferry audit verify`). */
export const ChainReportSchema = z.strictObject({
  ok: z.boolean(),
  events: z.number().int().nonnegative(),
  /** The last seq whose chain (and every one before it) verified. */
  verifiedThrough: z.number().int().nonnegative(),
  lastCheckpoint: z.strictObject({ seq: z.number().int(), hash: z.string() }).nullable(),
  firstBad: z.strictObject({ seq: z.number().int(), reason: z.string() }).nullable(),
});
export type ChainReport = z.infer<typeof ChainReportSchema>;
