/**
 * Audit events: the only way state changes. Each action has a zod schema
 * for its payload; the same schemas validate commands on the way in and
 * events on replay (an exported log is untrusted input too).
 */
import { z } from 'zod';
import { HlcStringSchema } from '../../protocol/hlc.js';
import { KeyIdSchema } from '../../protocol/identity.js';
import { jsonBoundsViolation, MAX_FACTS_DEPTH, MAX_FACTS_JSON_LENGTH, MAX_STORED_JSON_DEPTH, stringifyJson } from '../../protocol/json-bounds.js';
import { StorePathSchema } from '../../protocol/store-path-info.js';
import { MAX_REGISTER_PATHS } from '../../protocol/data-protocol.js';
import { ConfigBodySchema, ConfigIdSchema, GraphNameSchema, SystemSchema } from '../../protocol/config.js';

export const RoleSchema = z.enum(['admin', 'operator', 'pusher', 'viewer', 'agent']);
export type Role = z.infer<typeof RoleSchema>;
/** Who an event is attributed to: a key's role, or the coordinator itself. */
export const ActorRoleSchema = z.union([RoleSchema, z.literal('coordinator')]);
export type ActorRole = z.infer<typeof ActorRoleSchema>;

const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._\/-]{0,62}$/;
export const LabelsSchema = z
  .record(z.string().regex(LABEL_KEY, 'label keys are 1-63 of [A-Za-z0-9._/-]'), z.string().max(256))
  .refine((labels) => Object.keys(labels).length <= 64, 'at most 64 labels');


/** The fields of an agent's facts: a few well-known ones, validated, plus custom ones (free-form JSON). */
const FactsFieldsSchema = z
  .object({
    system: SystemSchema,
    hostname: z.string().min(1).max(253),
    os: z.string().max(256).optional(),
    kernel: z.string().max(256).optional(),
    cpus: z.number().int().min(1).max(4096).optional(),
    memoryBytes: z.number().int().nonnegative().optional(),
    diskBytes: z.number().int().nonnegative().optional(),
    machineId: z.string().max(64).optional(),
    addresses: z.array(z.string().max(64)).max(64).optional(),
    agentVersion: z.string().max(64).optional(),
    labels: LabelsSchema.optional(),
  })
  .catchall(z.unknown());

/**
 * What is wrong with the bounds of `facts`, if anything: nesting first,
 * with the iterative check (stops at maxDepth), then the size, measured by
 * encoding them, which is safe only once the depth is known to be bounded.
 */
function factsBoundsIssue(facts: Record<string, unknown>, maxDepth: number): string | undefined {
  const violation = jsonBoundsViolation(facts, { maxDepth });
  if (violation) return violation.message;
  if (stringifyJson(facts).length > MAX_FACTS_JSON_LENGTH) return `facts are limited to ${MAX_FACTS_JSON_LENGTH / 1024} KiB of JSON`;
  return undefined;
}

/** Facts as an agent reports them (enrollment, facts reports): at most MAX_FACTS_DEPTH deep and MAX_FACTS_JSON_LENGTH of JSON. */
export const FactsSchema = FactsFieldsSchema.superRefine((facts, context) => {
  const issue = factsBoundsIssue(facts, MAX_FACTS_DEPTH);
  if (issue) context.addIssue({ code: 'custom', message: issue });
});

/**
 * Facts as events record them (agent.enroll, agent.facts), checked on
 * replay and in exported logs: the same fields and size, nested up to
 * MAX_STORED_JSON_DEPTH rather than MAX_FACTS_DEPTH, because logs recorded
 * before that bound hold deeper facts, and a log must always replay.
 */
export const RecordedFactsSchema = FactsFieldsSchema.superRefine((facts, context) => {
  const issue = factsBoundsIssue(facts, MAX_STORED_JSON_DEPTH);
  if (issue) context.addIssue({ code: 'custom', message: issue });
});
export type Facts = z.infer<typeof FactsSchema>;

// Configs are a wire type (the agent receives them): one schema, in protocol/.
export { ActivationSchema, ConfigBodySchema, ConfigIdSchema, GraphNameSchema, HealthCheckSchema, SystemSchema, type ConfigBody, type ConfigId } from '../../protocol/config.js';

export const PhaseSchema = z.enum(['pending', 'fetching', 'activating', 'active', 'failed', 'rolled-back']);
/** Where an agent got the config it reports on, when not from the coordinator's desired answer. */
export const ReportSourceSchema = z.literal('bundle');

const agentRef = { agentId: KeyIdSchema };

export const EVENT_PAYLOADS = {
  'coordinator.init': z.strictObject({ name: z.string().min(1).max(128), coordinatorKey: KeyIdSchema }),
  'key.add': z.strictObject({ keyId: KeyIdSchema, role: RoleSchema, label: z.string().max(256) }),
  'key.revoke': z.strictObject({ keyId: KeyIdSchema }),
  'token.create': z.strictObject({
    tokenId: z.string().regex(/^[0-9a-f]{16}$/),
    secretHash: z.string().regex(/^[0-9a-f]{64}$/),
    label: z.string().max(256),
    expiresAt: z.number().int(),
    uses: z.number().int().min(1).max(1_000_000),
    autoApprove: z.boolean(),
    labels: LabelsSchema,
  }),
  'token.revoke': z.strictObject({ tokenId: z.string().regex(/^[0-9a-f]{16}$/) }),
  'agent.enroll': z.strictObject({
    ...agentRef,
    name: z.string().min(1).max(253),
    type: z.string().min(1).max(64),
    tokenId: z.string().regex(/^[0-9a-f]{16}$/),
    facts: RecordedFactsSchema,
    labels: LabelsSchema,
    status: z.enum(['enrolling', 'enrolled']),
  }),
  'agent.approve': z.strictObject(agentRef),
  'agent.reject': z.strictObject(agentRef),
  'agent.revoke': z.strictObject(agentRef),
  'agent.facts': z.strictObject({ ...agentRef, facts: RecordedFactsSchema, hlc: HlcStringSchema }),
  'agent.assign': z.strictObject({ ...agentRef, graph: GraphNameSchema.nullable() }),
  'agent.pin': z.strictObject({ ...agentRef, configId: ConfigIdSchema.nullable() }),
  'agent.report': z.strictObject({
    ...agentRef,
    configId: ConfigIdSchema.nullable(),
    phase: PhaseSchema,
    error: z.string().max(8192).nullable(),
    /** Present when the agent got the config from an offline bundle (absent in reports of configs it fetched, and in older logs). */
    source: ReportSourceSchema.optional(),
    /** With `source`: the agent's operator forced the bundle past a refusal (a config older than the one it ran). */
    forced: z.boolean().optional(),
  }),
  'config.submit': z.strictObject({
    id: ConfigIdSchema,
    body: ConfigBodySchema,
    signature: z.string().max(128),
    previousHead: ConfigIdSchema.nullable(),
    forced: z.boolean(),
  }),
  'graph.rollback': z.strictObject({ graph: GraphNameSchema, from: ConfigIdSchema, to: ConfigIdSchema }),
  /** A push: store paths (and their objects) a pipeline uploaded. The castore holds them; the log records who and what. */
  'store.push': z.strictObject({
    roots: z.array(StorePathSchema).min(1).max(1000),
    /** Every store path this push made visible (at most MAX_REGISTER_PATHS per request). */
    registered: z.array(StorePathSchema).max(MAX_REGISTER_PATHS),
    registeredCount: z.number().int().nonnegative(),
    alreadyPresent: z.number().int().nonnegative(),
    bytesSent: z.number().int().nonnegative(),
    blobsSent: z.number().int().nonnegative(),
    directoriesSent: z.number().int().nonnegative(),
  }),
} as const;

export type Action = keyof typeof EVENT_PAYLOADS;
export type PayloadOf<A extends Action> = z.infer<(typeof EVENT_PAYLOADS)[A]>;
export const ActionSchema = z.enum(Object.keys(EVENT_PAYLOADS) as [Action, ...Action[]]);

/** An event before the log numbers and chains it. */
export interface EventDraft<A extends Action = Action> {
  action: A;
  subject: string;
  payload: PayloadOf<A>;
}

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
  prevHash: z.string().regex(/^[0-9a-f]{64}$/),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
});
export type AuditEvent = z.infer<typeof AuditEventSchema>;

/** The payload of an event, validated against its action's schema. */
export function parsePayload<A extends Action>(action: A, payload: unknown): PayloadOf<A> {
  return EVENT_PAYLOADS[action].parse(payload) as PayloadOf<A>;
}
