/**
 * Audit events: the only way state changes. Each action has a zod schema
 * for its payload; the same schemas validate commands on the way in and
 * events on replay (an exported log is untrusted input too).
 */
import { z } from 'zod';
import { HlcStringSchema } from '../../protocol/hlc.js';
import { KeyIdSchema } from '../../protocol/identity.js';
import { StorePathSchema } from '../../protocol/store-path-info.js';
import { MAX_REGISTER_PATHS } from '../../protocol/data-protocol.js';
import { ConfigBodySchema, ConfigIdSchema, GraphNameSchema } from '../../protocol/config.js';
import { FingerprintSchema, RelayUrlSchema } from '../../protocol/relays.js';
import { RolloutPolicySchema } from '../../protocol/rollout-policy.js';
import { SecretNameSchema } from '../../protocol/secret-refs.js';
import { RuleNameSchema, RuleOrderSchema, RuleWhereSchema } from '../../protocol/rules.js';
import { ParamLayerSchema } from '../../protocol/api/params.js';
import { AlertIdSchema, AlertKindSchema, MAX_ALERT_WHERE, MAX_ALERT_WHERE_LENGTH } from '../../protocol/alerts.js';

export { ActorRoleSchema, FactsSchema, LabelsSchema, PhaseSchema, RecordedFactsSchema, ReportSourceSchema, RoleSchema, type ActorRole, type Facts, type Role } from '../../protocol/api/fleet.js';
import { HealthSchema, LabelsSchema, PhaseSchema, RecordedPresenceSchema, RecordedFactsSchema, ReportSourceSchema, RoleSchema } from '../../protocol/api/fleet.js';
import type { Action } from '../../protocol/api/audit.js';
export { ActionSchema, AuditEventSchema, type Action, type AuditEvent } from '../../protocol/api/audit.js';

// Configs are a wire type (the agent receives them): one schema, in protocol/.
export { ActivationSchema, ConfigBodySchema, ConfigIdSchema, GraphNameSchema, HealthCheckSchema, SystemSchema, type ConfigBody, type ConfigId } from '../../protocol/config.js';

const agentRef = { agentId: KeyIdSchema };

/** Agents one rollout.advance event names at most: ~45 KiB of ids, so an event stays small to hash, store and show. */
export const MAX_RELEASED_PER_EVENT = 1000;

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
    /** Present (true) on tokens that enroll relays; absent on agent tokens, as in logs from before relays. */
    relay: z.literal(true).optional(),
    /** What an agent enrolling with it is placed on at once (absent: nothing, as in older logs); `pin` only with `follow`. */
    follow: GraphNameSchema.optional(),
    pin: ConfigIdSchema.optional(),
    /** A rule the token's labels were checked against at creation (the rules place the agent, as any other). */
    rule: RuleNameSchema.optional(),
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
  /** `stop` (only with graph null; absent in older logs and in assignments without it): run the deactivate command, leave no generation active. */
  'agent.assign': z.strictObject({ ...agentRef, graph: GraphNameSchema.nullable(), stop: z.literal(true).optional() }),
  /** `agents retry`: the agent clears the configs it refused (one that failed once) and tries its desired config again. */
  'agent.retry': z.strictObject(agentRef),
  'agent.pin': z.strictObject({ ...agentRef, configId: ConfigIdSchema.nullable() }),
  /** An operator set an agent's labels (`agents label`): `labels` is the whole set after the change. */
  'agent.label': z.strictObject({ ...agentRef, labels: LabelsSchema }),
  /**
   * An agent placed by the rules: the first rule its labels match (`rule`;
   * null: none, it follows nothing) and what that rule says. Recorded by the
   * coordinator after the event that caused it (a rule change, a relabel,
   * an enrollment), in the same transaction; or by an operator returning
   * the agent to rule control (`agents assign --rules`).
   */
  'agent.place': z.strictObject({ ...agentRef, rule: RuleNameSchema.nullable(), graph: GraphNameSchema.nullable(), configId: ConfigIdSchema.nullable() }),
  'agent.report': z.strictObject({
    ...agentRef,
    configId: ConfigIdSchema.nullable(),
    phase: PhaseSchema,
    error: z.string().max(8192).nullable(),
    /** Present when the agent got the config from an offline bundle (absent in reports of configs it fetched, and in older logs). */
    source: ReportSourceSchema.optional(),
    /** With `source`: the agent's operator forced the bundle past a refusal (a config older than the one it ran). */
    forced: z.boolean().optional(),
    /** With `rolled-back`: the config the agent runs again (absent: it did not say, as in older logs; null: none). */
    running: ConfigIdSchema.nullable().optional(),
  }),
  /**
   * A health transition of the config an agent runs (its periodic check),
   * as the agent reported it. At most one per agent per
   * HEALTH_EVENT_INTERVAL_MS: `suppressed` counts the transitions the agent
   * went through since the previous one and were not recorded (a flapping
   * check), so the log stays bounded and still says it flapped.
   */
  'agent.health': z.strictObject({
    ...agentRef,
    configId: ConfigIdSchema,
    health: HealthSchema,
    reason: z.string().max(8192).nullable(),
    suppressed: z.number().int().nonnegative().max(1_000_000),
  }),
  /**
   * The coordinator saw an agent go offline (not heard from for its
   * offline threshold since it was last heard or since the coordinator
   * started, whichever is later) or come back.
   */
  'agent.presence': z.strictObject({ ...agentRef, presence: RecordedPresenceSchema, lastSeen: z.number().int().nullable() }),
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
  /**
   * A webhook registered (`ferry alerts add`). The URL is not recorded (it
   * often holds the receiver's secret, and viewers read the log): its
   * origin and its SHA-256 are; the URL itself is kept beside the state
   * (db/schema.ts alert_endpoints).
   */
  'alert.add': z.strictObject({
    alertId: AlertIdSchema,
    kinds: z.array(AlertKindSchema).min(1).max(AlertKindSchema.options.length),
    where: z.array(z.string().max(MAX_ALERT_WHERE_LENGTH)).max(MAX_ALERT_WHERE),
    target: z.string().max(2048),
    urlDigest: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  'alert.remove': z.strictObject({ alertId: AlertIdSchema }),
  /** A site relay enrolled with a relay token: where agents reach it, and its certificate's fingerprint (its own word: it is untrusted for integrity anyway). */
  'relay.enroll': z.strictObject({
    relayId: KeyIdSchema,
    name: z.string().min(1).max(253),
    tokenId: z.string().regex(/^[0-9a-f]{16}$/),
    url: RelayUrlSchema,
    fingerprint: FingerprintSchema,
  }),
  /** Which agents use a relay: `--where` clauses on operator labels and agent fields (none: nobody). */
  'relay.assign': z.strictObject({ relayId: KeyIdSchema, where: z.array(z.string().max(MAX_ALERT_WHERE_LENGTH)).max(MAX_ALERT_WHERE) }),
  'relay.revoke': z.strictObject({ relayId: KeyIdSchema }),
  /**
   * Where a relay fetches from before the coordinator: another relay (its
   * upstream, which then may read this relay's configs too), or null: the
   * coordinator only. Refused when it would make a cycle or a chain of more
   * than MAX_RELAY_CHAIN relays (commands.ts setRelayUpstream).
   */
  'relay.upstream': z.strictObject({ relayId: KeyIdSchema, upstream: KeyIdSchema.nullable() }),
  /**
   * A coordinator garbage collection (`ferry gc`, coordinator/retention.ts):
   * what it kept (the configs, by the digest of their sorted ids, and how
   * many) and what it removed. Recorded after the sweep; changes no fleet
   * state (the castore is not in the log, as for store.push).
   */
  'store.gc': z.strictObject({
    keepConfigs: z.number().int().min(1),
    graceSeconds: z.number().int().nonnegative(),
    keptConfigs: z.number().int().nonnegative(),
    keptConfigsDigest: z.string().regex(/^[0-9a-f]{64}$/),
    keptStorePaths: z.number().int().nonnegative(),
    removedStorePaths: z.number().int().nonnegative(),
    removedBlobs: z.number().int().nonnegative(),
    removedBlobBytes: z.number().int().nonnegative(),
    removedDirectories: z.number().int().nonnegative(),
  }),
  /** A graph's staged-rollout policy set (null: removed). Later config submissions to the graph roll out by it. */
  'rollout.policy': z.strictObject({ graph: GraphNameSchema, policy: RolloutPolicySchema.nullable() }),
  /**
   * The coordinator released the rollout's config to these agents, in batch
   * `batch`, whose target (cumulative) is `target`. The agents are named
   * (at most MAX_RELEASED_PER_EVENT: a larger batch is several events), so
   * the log says exactly which machines received it; the coordinator chose
   * them (domain/rollouts.ts releaseOrder), the reducer only records them.
   */
  'rollout.advance': z.strictObject({
    graph: GraphNameSchema,
    configId: ConfigIdSchema,
    batch: z.number().int().min(0).max(1000),
    target: z.number().int().min(0).max(10_000_000),
    agents: z.array(KeyIdSchema).max(MAX_RELEASED_PER_EVENT),
  }),
  /** Released agents' failures exceeded the policy: nobody else is released. */
  'rollout.halt': z.strictObject({ graph: GraphNameSchema, configId: ConfigIdSchema, reason: z.string().max(1024), failed: z.number().int().nonnegative(), released: z.number().int().nonnegative() }),
  'rollout.pause': z.strictObject({ graph: GraphNameSchema, configId: ConfigIdSchema }),
  /** Resumed (from paused or halted); failures so far are accepted: the threshold counts later ones. */
  'rollout.resume': z.strictObject({ graph: GraphNameSchema, configId: ConfigIdSchema, acceptedFailures: z.number().int().nonnegative() }),
  /** Ended by an operator: every agent goes back to `base` (the head returns to it). */
  'rollout.abort': z.strictObject({ graph: GraphNameSchema, configId: ConfigIdSchema, base: ConfigIdSchema.nullable() }),
  /** Every batch went out within the failure threshold: the head is everyone's. */
  'rollout.complete': z.strictObject({ graph: GraphNameSchema, configId: ConfigIdSchema, released: z.number().int().nonnegative(), failed: z.number().int().nonnegative() }),
  /**
   * A secret's new version (`ferry secrets set|rekey`, docs/secrets.md):
   * who it is encrypted to (the agents, and the setter's own key), how
   * they were selected, and the SHA-256 of the ciphertext — never the
   * value, which the coordinator never sees, nor the ciphertext, which is
   * kept beside the state (db/schema.ts secret_ciphertexts): a log an
   * auditor exports carries no secret in any form.
   */
  'secret.set': z.strictObject({
    name: SecretNameSchema,
    version: z.number().int().min(1),
    recipients: z.array(KeyIdSchema).max(1000),
    setter: KeyIdSchema,
    selector: z.union([z.strictObject({ where: z.array(z.string().max(MAX_ALERT_WHERE_LENGTH)).min(1).max(MAX_ALERT_WHERE) }), z.strictObject({ agents: z.array(KeyIdSchema).min(1).max(1000) })]),
    ciphertextSha256: z.string().regex(/^[0-9a-f]{64}$/),
    ciphertextBytes: z.number().int().min(1),
  }),
  'secret.remove': z.strictObject({ name: SecretNameSchema }),
  /** A targeting rule added; `order` is every active rule's name after it, first tried first. */
  'rule.add': z.strictObject({ name: RuleNameSchema, where: RuleWhereSchema, follow: GraphNameSchema, pin: ConfigIdSchema.nullable(), order: RuleOrderSchema }),
  'rule.remove': z.strictObject({ name: RuleNameSchema, order: RuleOrderSchema }),
  /** A rule moved: the new order. */
  'rule.move': z.strictObject({ name: RuleNameSchema, order: RuleOrderSchema }),
  /**
   * Per-machine parameters (docs/secrets.md): values set in one layer (a
   * graph's defaults, a label-selected group, one agent), merged into what
   * it holds. Non-secret by definition, so recorded in clear. Keys and
   * values are bounded at the API (protocol/params.ts); replay takes any
   * strings, so a log recorded before a bound tightened still replays.
   */
  'param.set': z.strictObject({ layer: ParamLayerSchema, values: z.record(z.string(), z.string()) }),
  /** Parameters removed from one layer. */
  'param.unset': z.strictObject({ layer: ParamLayerSchema, keys: z.array(z.string()) }),
} as const satisfies Record<Action, z.ZodType>;

export type PayloadOf<A extends Action> = z.infer<(typeof EVENT_PAYLOADS)[A]>;

/** An event before the log numbers and chains it. */
export interface EventDraft<A extends Action = Action> {
  action: A;
  subject: string;
  payload: PayloadOf<A>;
}

/**
 * An event a command's first event entails, recorded right after it in the
 * same transaction (AuditLog.append): by the requester, or by the
 * coordinator itself (`coordinator`: what the rules make of a change, e.g.
 * the agent.place events after a relabel). Decided before any of them
 * applies, so a follow-up must not depend on another's state change.
 */
export interface FollowUp {
  by: 'requester' | 'coordinator';
  draft: EventDraft;
}

/** A command's decision when it records more than one event: the first, then its follow-ups in order. */
export interface DraftWithFollowUps {
  draft: EventDraft;
  followUps: readonly FollowUp[];
}

/** The payload of an event, validated against its action's schema. */
export function parsePayload<A extends Action>(action: A, payload: unknown): PayloadOf<A> {
  return EVENT_PAYLOADS[action].parse(payload) as PayloadOf<A>;
}
