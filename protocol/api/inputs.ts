/**
 * What the HTTP API's operations take: one zod schema per input, strict
 * (an unknown field is refused, INVALID naming it). The route table
 * (routes.ts) names them; the coordinator's commands parse the same
 * schemas again (coordinator/domain/commands.ts), since a command can be
 * called without the API.
 *
 * Inputs merge a route's query, JSON body and path parameters into one
 * object, so a query value arrives as a string: numbers that may travel
 * in a query are coerced.
 */
import { z } from 'zod';
import { refineActivationEnvironment } from '../activation-environment.js';
import { ConfigBodySchema, ConfigIdSchema, GraphNameSchema } from '../config.js';
import { KeyIdSchema } from '../identity.js';
import { AlertIdSchema, AlertKindSchema, AlertUrlSchema, ALERT_KINDS, MAX_ALERT_WHERE, MAX_ALERT_WHERE_LENGTH } from '../alerts.js';
import { FingerprintSchema, RelayUrlSchema } from '../relays.js';
import { RolloutPolicySchema } from '../rollout-policy.js';
import { MAX_RULES, RuleNameSchema, RuleWhereSchema } from '../rules.js';
import { MAX_WHERE_CLAUSE_LENGTH, MAX_WHERE_CLAUSES } from '../where.js';
import { FactsSchema, HealthSchema, LabelKeySchema, LabelsSchema, PhaseSchema, ReportSourceSchema, RoleSchema } from './fleet.js';

export const AddKeyInput = z.strictObject({ keyId: KeyIdSchema, role: RoleSchema.exclude(['agent', 'relay']), label: z.string().max(256).default('') });

export const RevokeKeyInput = z.strictObject({ keyId: KeyIdSchema });

export const CreateTokenInput = z
  .strictObject({
  ttlSeconds: z.number().int().min(60).max(365 * 24 * 3600).default(24 * 3600),
  uses: z.number().int().min(1).max(1_000_000).default(1),
  autoApprove: z.boolean().default(false),
  label: z.string().max(256).default(''),
  labels: LabelsSchema.default({}),
  /** A token that enrolls site relays (`ferry tokens create --relay`), never agents; an agent token never enrolls a relay. */
  relay: z.boolean().default(false),
  /** An agent enrolling with it follows this graph at once (an explicit assignment, as `agents assign`), pinned to `pin` if given. */
  follow: GraphNameSchema.optional(),
  pin: ConfigIdSchema.optional(),
  /** A rule the token's labels must match now: its agents are placed by the rules, as every agent under rule control. */
  rule: RuleNameSchema.optional(),
})
  .refine((token) => token.pin === undefined || token.follow !== undefined, { path: ['pin'], message: 'pin needs follow (the graph the config is in)' })
  .refine((token) => token.rule === undefined || token.follow === undefined, { path: ['rule'], message: 'name a graph (follow) or a rule, not both' })
  .refine((token) => !token.relay || (token.follow === undefined && token.rule === undefined), { path: ['relay'], message: 'a relay token places no agent (no follow, no rule)' });

/**
 * A targeting rule to add (`ferry rules add NAME --where … --follow GRAPH
 * [--pin CONFIG] [--before RULE | --position N]`): `where` names operator
 * labels only (the coordinator's parser checks the syntax); none: every
 * agent. Appended last unless `before` or `position` (0: first) says where.
 */
export const AddRuleInput = z
  .strictObject({
    name: RuleNameSchema,
    where: RuleWhereSchema,
    follow: GraphNameSchema,
    pin: ConfigIdSchema.nullable().default(null),
    before: RuleNameSchema.optional(),
    position: z.number().int().min(0).max(MAX_RULES).optional(),
  })
  .refine((rule) => rule.before === undefined || rule.position === undefined, { path: ['before'], message: 'give before or position, not both' });

export const RuleRefInput = z.strictObject({ name: RuleNameSchema });

/** Moves a rule: before another one, or to a position (0: tried first). */
export const MoveRuleInput = z
  .strictObject({ name: RuleNameSchema, before: RuleNameSchema.optional(), position: z.number().int().min(0).max(MAX_RULES).optional() })
  .refine((move) => (move.before === undefined) !== (move.position === undefined), { path: ['before'], message: 'give before or position (one of them)' });

/** Agents one `agents label` may name (a `--where` selection is not bounded by this: it is the fleet's size). */
export const MAX_LABEL_AGENTS = 1000;

/**
 * Sets and removes operator labels (`ferry agents label AGENT…|--where …
 * --set k=v --unset k`): of the named agents, or of those `where` selects
 * now (one of them); at least one change, and a key is set or unset, not both.
 */
export const LabelAgentsInput = z
  .strictObject({
    agentIds: z.array(KeyIdSchema).min(1).max(MAX_LABEL_AGENTS).optional(),
    where: z.array(z.string().max(MAX_WHERE_CLAUSE_LENGTH)).min(1).max(MAX_WHERE_CLAUSES).optional(),
    set: LabelsSchema.default({}),
    unset: z.array(LabelKeySchema).max(64).default([]),
  })
  .refine((input) => (input.agentIds === undefined) !== (input.where === undefined), { path: ['agentIds'], message: 'name agents (agentIds) or select them (where), one of the two' })
  .refine((input) => Object.keys(input.set).length + input.unset.length > 0, { path: ['set'], message: 'nothing to change: set or unset a label' })
  .refine((input) => !input.unset.some((key) => Object.hasOwn(input.set, key)), { path: ['unset'], message: 'a label is both set and unset' });

export const RevokeTokenInput = z.strictObject({ tokenId: z.string().regex(/^[0-9a-f]{16}$/) });

export const EnrollInput = z.strictObject({
  token: z.string().regex(/^[0-9a-f]{16}\.[A-Za-z0-9_-]{16,64}$/, 'a bootstrap token'),
  name: z.string().min(1).max(253),
  type: z.string().min(1).max(64).default('generic'),
  facts: FactsSchema,
});

export const AgentRefInput = z.strictObject({ agentId: z.string() });

export const ReportFactsInput = z.strictObject({ facts: FactsSchema });

/**
 * `stop` (only with `graph: null`): the agent runs its config's deactivate
 * command and leaves no generation active (phase `stopped`). Absent, as
 * before stops existed: `--none` only stops deployments, what runs stays.
 */
export const AssignAgentInput = z
  .strictObject({ agentId: z.string(), graph: GraphNameSchema.nullable(), stop: z.boolean().optional() })
  .refine((input) => input.stop !== true || input.graph === null, { path: ['stop'], message: 'stop needs graph null (agents assign … --none --stop)' });

/** The most configs per graph a coordinator GC may be told to keep. */
export const MAX_KEEP_CONFIGS = 10_000;

/**
 * `ferry gc`: what the coordinator's garbage collection keeps
 * (coordinator/retention.ts). `keepConfigs`: the newest configs kept per
 * graph (default: the coordinator's `--keep-configs`).
 */
export const GcInput = z.strictObject({
  dryRun: z.boolean().default(false),
  keepConfigs: z.number().int().min(1).max(MAX_KEEP_CONFIGS).optional(),
});

export const PinAgentInput = z.strictObject({ agentId: z.string(), configId: ConfigIdSchema.nullable() });

export const ReportStatusInput = z
  .strictObject({
    configId: ConfigIdSchema.nullable(),
    phase: PhaseSchema,
    error: z.string().max(8192).nullable().default(null),
    /** 'bundle': the config came from an offline bundle (`ferry agent apply-bundle`); recorded in the audit event. */
    source: ReportSourceSchema.optional(),
    /** With `source`: --force overrode the agent's refusal of the bundle. */
    forced: z.boolean().optional(),
    /** With `rolled-back`: the config it runs again (null: none). Recorded in the audit event. */
    running: ConfigIdSchema.nullable().optional(),
  })
  .refine((report) => report.forced === undefined || report.source !== undefined, { path: ['forced'], message: 'forced is only said of a bundle (source)' })
  .refine((report) => report.running === undefined || report.phase === 'rolled-back', { path: ['running'], message: 'running is only said of a rolled-back report' });

/**
 * A submission. Its body is checked beyond ConfigBodySchema (which also
 * replays old logs): the activation environment may not set a key that
 * changes how the command's programs load or run, nor one the agent sets
 * itself (protocol/activation-environment.ts) — refused with a 400 naming
 * the key, e.g. `body.activation.environment.LD_PRELOAD: LD_PRELOAD is refused: …`.
 */
export const SubmitConfigInput = z.strictObject({
  body: ConfigBodySchema.superRefine((body, context) => refineActivationEnvironment(body.activation.environment, context, ['activation', 'environment'])),
  signature: z.string().max(128),
  force: z.boolean().default(false),
});

/**
 * A webhook to register (`ferry alerts add`): its URL (alerts.ts
 * alertUrlProblem says what is refused), the kinds it hears about (at
 * least one, each once) and `--where` clauses selecting the agents it is
 * about (their syntax is checked by the coordinator, which parses them).
 */
export const AddAlertInput = z.strictObject({
  url: AlertUrlSchema,
  on: z
    .array(AlertKindSchema)
    .min(1, `name at least one kind (${ALERT_KINDS.join(', ')})`)
    .max(ALERT_KINDS.length)
    .refine((kinds) => new Set(kinds).size === kinds.length, 'a kind is named twice'),
  where: z.array(z.string().max(MAX_ALERT_WHERE_LENGTH, `a --where clause is at most ${MAX_ALERT_WHERE_LENGTH} characters`)).max(MAX_ALERT_WHERE, `at most ${MAX_ALERT_WHERE} --where clauses`).default([]),
});

export const RemoveAlertInput = z.strictObject({ alertId: AlertIdSchema });

export const RollbackGraphInput = z.strictObject({ graph: GraphNameSchema, to: ConfigIdSchema.optional() });

/** `ferry rollout policy GRAPH …`: the graph's staged-rollout policy (null: none). */
export const SetRolloutPolicyInput = z.strictObject({ graph: GraphNameSchema, policy: RolloutPolicySchema.nullable() });

/** `ferry rollout pause|resume|abort GRAPH`. */
export const RolloutRefInput = z.strictObject({ graph: GraphNameSchema });


/** A page of a listing: at most `limit` items after the id `after`. */
export const PAGE_INPUT = { limit: z.coerce.number().int().min(1).max(1000).default(100), after: z.string().max(128).optional() };

/**
 * What an agent is doing right now (`POST /v1/agent/activity`): fetch
 * progress and its recent local events. Volatile: the coordinator keeps it
 * in memory only (coordinator/api/agent-activity.ts).
 */
/**
 * An agent's health transition (`POST /v1/agent/health`): the config it
 * runs, how it fares, why (the check's reason and the tail of its output),
 * and how many transitions it went through since the coordinator last
 * recorded one (those the rate limit deferred and that settled back).
 */
export const ReportHealthInput = z.strictObject({
  configId: ConfigIdSchema,
  health: HealthSchema,
  reason: z.string().max(8192).nullable().default(null),
  suppressed: z.number().int().nonnegative().max(1_000_000).default(0),
});

export const AgentActivitySchema = z.strictObject({
  phase: z.string().max(32),
  configId: z.string().max(64).nullable(),
  bytesDone: z.number().int().nonnegative(),
  bytesTotal: z.number().int().nonnegative(),
  objectsDone: z.number().int().nonnegative(),
  objectsTotal: z.number().int().nonnegative(),
  events: z
    .array(z.strictObject({ at: z.number().int(), kind: z.string().max(32), message: z.string().max(2048), configId: z.string().max(64).nullable().optional() }))
    .max(50),
});

/** A site relay enrolling (`ferry relay enroll`): a relay token, its name, where agents reach it and its certificate's fingerprint. */
export const RelayEnrollInput = z.strictObject({
  token: z.string().regex(/^[0-9a-f]{16}\.[A-Za-z0-9_-]{16,64}$/, 'a bootstrap token'),
  name: z.string().min(1).max(253),
  url: RelayUrlSchema,
  fingerprint: FingerprintSchema,
});

/**
 * Which agents use a relay (`ferry relays assign RELAY --where labels.site=barn-3`):
 * clauses on operator labels and agent fields only (a relay reads what its
 * agents may read, so the agents' own word, facts, must not select them);
 * none: the relay serves nobody.
 */
export const AssignRelayInput = z.strictObject({ relayId: KeyIdSchema, where: z.array(z.string().max(MAX_ALERT_WHERE_LENGTH)).max(MAX_ALERT_WHERE).default([]) });

export const RelayRefInput = z.strictObject({ relayId: KeyIdSchema });

/**
 * Where a relay fetches from before the coordinator (`ferry relays upstream
 * RELAY UPSTREAM|none`): another enrolled relay, or null (the coordinator only).
 */
export const RelayUpstreamInput = z.strictObject({ relayId: KeyIdSchema, upstream: KeyIdSchema.nullable() });
