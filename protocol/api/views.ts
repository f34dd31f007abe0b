/**
 * What the HTTP API's operations answer: one zod schema per reply. The
 * coordinator controls these shapes, so they are strict (a field the
 * schema does not name is refused): the client checks every reply against
 * its route's output (api/routes.ts, CoordinatorHttpClient.call), and the
 * coordinator checks its own replies in tests, so a drift fails a test
 * rather than a client in the field. The one exception is InfoSchema
 * (see there).
 *
 * Stored rows are shown as they are kept (coordinator/db/schema.ts):
 * text columns the reducer fills from validated events are checked as the
 * events that wrote them are, ids by their own schemas.
 */
import { z } from 'zod';
import { ConfigBodySchema, ConfigIdSchema, DesiredAnswerSchema, GraphNameSchema, WatchUnchangedSchema } from '../config.js';
import { HlcStringSchema } from '../hlc.js';
import { KeyIdSchema } from '../identity.js';
import { AgentActivitySchema } from './inputs.js';
import { AlertIdSchema, AlertKindSchema } from '../alerts.js';
import { RolloutPolicySchema, RolloutStatusSchema } from '../rollout-policy.js';
import { AgentStatusSchema, HealthSchema, LabelsSchema, PhaseSchema, RecordedPresenceSchema, RoleSchema } from './fleet.js';
import { RuleNameSchema } from '../rules.js';
import { EffectiveParamSchema } from './params.js';

/** Whether an agent is there: holding a watch or heard from lately, quiet for a while, or gone. */
export const PresenceSchema = z.enum(['online', 'stale', 'offline']);
export type Presence = z.infer<typeof PresenceSchema>;

const SeqSchema = z.number().int().min(1);

/** The audit event a command recorded (null: nothing changed, so nothing was recorded). */
export const RecordedSchema = z.strictObject({ seq: SeqSchema.nullable() });

/**
 * The answer to an agent's health report: recorded (its event's seq),
 * unchanged (what the coordinator already holds), or deferred by the
 * per-agent rate limit: the agent sends the health it has after
 * `retryAfterMs`, counting the transitions in between as suppressed.
 */
export const HealthReportAnswerSchema = z.strictObject({
  outcome: z.enum(['recorded', 'unchanged', 'deferred']),
  seq: SeqSchema.nullable(),
  retryAfterMs: z.number().int().nonnegative().nullable(),
});

/**
 * `GET /v1/info`, public. Not strict: it is the one reply every client
 * reads before it knows the coordinator's version (an agent checks the key,
 * `openDataClient` the data plane), so a field a newer coordinator adds is
 * dropped here rather than refused; the fields named are checked all the
 * same.
 */
export const InfoSchema = z.object({
  name: z.string(),
  coordinatorKey: KeyIdSchema,
  version: z.string(),
  lastSeq: z.number().int().nonnegative(),
  tlsFingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  quicPort: z.number().int().min(1).max(65535).nullable(),
  /** Encodings its data plane sends and accepts; absent from coordinators before wire compression. */
  wireEncodings: z.array(z.string()).optional(),
});

export const EnrolledSchema = z.strictObject({
  agentId: KeyIdSchema,
  status: AgentStatusSchema,
  seq: SeqSchema.nullable(),
});

export const KeyViewSchema = z.strictObject({
  id: KeyIdSchema,
  role: RoleSchema,
  label: z.string(),
  revoked: z.boolean(),
  addedSeq: SeqSchema,
  revokedSeq: SeqSchema.nullable(),
});

const TokenIdSchema = z.string().regex(/^[0-9a-f]{16}$/);

/** A bootstrap token without its secret (only its hash is stored; the token itself is shown once, on creation). */
export const TokenViewSchema = z.strictObject({
  id: TokenIdSchema,
  label: z.string(),
  expiresAt: z.number().int(),
  usesLeft: z.number().int().nonnegative(),
  autoApprove: z.boolean(),
  labels: LabelsSchema,
  revoked: z.boolean(),
  createdSeq: SeqSchema,
  /** A relay token: enrolls site relays, never agents. */
  relay: z.boolean(),
  /** What an agent enrolling with it is placed on: a graph (with a pin), or the rule its labels were checked against. */
  follow: GraphNameSchema.nullable(),
  pin: ConfigIdSchema.nullable(),
  rule: RuleNameSchema.nullable(),
  expired: z.boolean(),
});

/** A targeting rule (`GET /v1/rules`), in order: `position` 0 is tried first. */
export const RuleViewSchema = z.strictObject({
  id: RuleNameSchema,
  where: z.array(z.string()),
  follow: GraphNameSchema,
  pin: ConfigIdSchema.nullable(),
  position: z.number().int(),
  removed: z.boolean(),
  createdSeq: SeqSchema,
  updatedSeq: SeqSchema,
});
export type RuleView = z.infer<typeof RuleViewSchema>;

/** What a fleet-control change recorded: its first event's seq (null: nothing changed), agents relabelled, agents the rules placed anew. */
export const FleetChangeSchema = z.strictObject({ seq: SeqSchema.nullable(), relabelled: z.number().int().nonnegative(), placed: z.number().int().nonnegative() });
export type FleetChange = z.infer<typeof FleetChangeSchema>;

/** A site relay (`GET /v1/relays`): where agents reach it, what it pins, which agents use it. */
export const RelayViewSchema = z.strictObject({
  id: KeyIdSchema,
  name: z.string(),
  tokenId: TokenIdSchema,
  url: z.string(),
  fingerprint: z.string(),
  where: z.array(z.string()),
  status: z.enum(['enrolled', 'revoked']),
  /** The relay it fetches from before the coordinator (null: the coordinator only). */
  upstream: z.string().nullable(),
  enrolledSeq: SeqSchema,
  updatedSeq: SeqSchema,
});
export type RelayView = z.infer<typeof RelayViewSchema>;

/**
 * What agents reported of a relay recently (coordinator/api/relay-reports.ts):
 * derived from the `relay`, `relay-failed` and `relay-dropped` events of
 * their activity, which the coordinator keeps in memory (since it started,
 * and at most the last 50 events of each agent). The agents' word: counts,
 * for an operator to look closer, never a decision.
 */
export const RelayReportsSchema = z.strictObject({
  /** Agents that fetched through it, and that reported it failing or dropped it, in the window. */
  agentsServed: z.number().int().nonnegative(),
  failures: z.number().int().nonnegative(),
  drops: z.number().int().nonnegative(),
  lastFailure: z.strictObject({ agentId: KeyIdSchema, at: z.number().int(), message: z.string() }).nullable(),
});
export type RelayReports = z.infer<typeof RelayReportsSchema>;

/** A relay as `relays.list` shows it: its row and what its agents reported of it. */
export const RelayListEntrySchema = RelayViewSchema.extend({ reports: RelayReportsSchema });

export const RelayEnrolledSchema = z.strictObject({ relayId: KeyIdSchema, seq: SeqSchema });

export const TokenCreatedSchema = z.strictObject({
  tokenId: TokenIdSchema,
  /** `<token id>.<secret>`: shown this once. */
  token: z.string(),
  expiresAt: z.number().int(),
  seq: SeqSchema.nullable(),
});

/** An agent as the API shows it (agents.list; agents.show adds its facts): the row, its desired config, presence and activity. */
export const AgentViewSchema = z.strictObject({
  id: KeyIdSchema,
  name: z.string(),
  type: z.string(),
  status: AgentStatusSchema,
  labels: LabelsSchema,
  tokenId: z.string(),
  factsRevision: z.number().int().nonnegative(),
  system: z.string().nullable(),
  desiredGraph: GraphNameSchema.nullable(),
  pinnedConfig: ConfigIdSchema.nullable(),
  currentConfig: ConfigIdSchema.nullable(),
  phase: PhaseSchema.nullable(),
  lastError: z.string().nullable(),
  /** How `healthConfig` fares under its periodic check (null: not checked, or another config runs). */
  health: HealthSchema.nullable(),
  healthReason: z.string().nullable(),
  healthConfig: ConfigIdSchema.nullable(),
  /** When its health was last recorded (ms since the epoch). */
  healthAt: z.number().int().nullable(),
  /** Its presence as last recorded in the audit log (agent.presence); `presence` is the one derived now. */
  recordedPresence: RecordedPresenceSchema.nullable(),
  /** Who places it: the rules (first match) or an operator's own assign/pin (docs/coordinator.md "Rules"). */
  control: z.enum(['rules', 'manual']),
  /** The rule whose placement it has (null: manual, or no rule matches). */
  rule: RuleNameSchema.nullable(),
  enrolledSeq: SeqSchema,
  updatedSeq: SeqSchema,
  /** The seq of its last `agents retry` (null: none): the agent takes up a later one than it saw. */
  retrySeq: SeqSchema.nullable(),
  /** Told to stop (`agents assign … --none --stop`) and not assigned or pinned since. */
  stopRequested: z.boolean(),
  /** The config it should run: its pin, else its graph's head, else none. */
  desiredConfig: ConfigIdSchema.nullable(),
  /** When it was last heard from (ms since the epoch), or never. */
  lastSeen: z.number().int().nullable(),
  /** Online (holding a watch, or heard from lately), stale or offline: docs/coordinator.md, "Presence". */
  presence: PresenceSchema,
  /** What it said it is doing, with when (in memory only: lost on a coordinator restart). */
  activity: AgentActivitySchema.extend({ at: z.number().int() }).nullable(),
});
export type AgentView = z.infer<typeof AgentViewSchema>;

/**
 * What a coordinator GC kept and removed (`ferry gc`, coordinator/retention.ts).
 * `keptConfigsDigest`: SHA-256 of the sorted kept config ids, one per line,
 * also in the store.gc event, so what a GC kept can be checked later.
 */
export const GcReportSchema = z.strictObject({
  dryRun: z.boolean(),
  keepConfigs: z.number().int().min(1),
  graceSeconds: z.number().int().nonnegative(),
  keptConfigs: z.array(ConfigIdSchema),
  keptConfigsDigest: z.string().regex(/^[0-9a-f]{64}$/),
  keptStorePaths: z.number().int().nonnegative(),
  /** Of those, kept only because they were registered within the grace period (a push not yet submitted as a config). */
  recentStorePaths: z.number().int().nonnegative(),
  removedStorePaths: z.array(z.string()),
  removedBlobs: z.number().int().nonnegative(),
  removedBlobBytes: z.number().int().nonnegative(),
  removedDirectories: z.number().int().nonnegative(),
  seq: SeqSchema.nullable(),
});
export type GcReportView = z.infer<typeof GcReportSchema>;

/** An agent's facts as reported (free-form beyond the well-known fields: fleet.ts FactsSchema). */
const StoredFactsSchema = z.record(z.string(), z.unknown());

/** One agent in full: its latest facts and its effective parameters, each with the layer it came from (docs/secrets.md). */
export const AgentDetailSchema = AgentViewSchema.extend({ facts: StoredFactsSchema, params: z.array(EffectiveParamSchema) });

export const AgentFactsSchema = z.strictObject({
  agentId: KeyIdSchema,
  revisions: z.array(z.strictObject({ revision: z.number().int().min(1), hlc: HlcStringSchema, seq: SeqSchema, facts: StoredFactsSchema })),
});

export const GraphViewSchema = z.strictObject({ id: GraphNameSchema, head: ConfigIdSchema, updatedSeq: SeqSchema });

/** A graph's rollouts row as stored (coordinator/db/schema.ts rollouts): its policy and its latest rollout. */
export const RolloutRowSchema = z.strictObject({
  id: GraphNameSchema,
  policy: RolloutPolicySchema.nullable(),
  configId: ConfigIdSchema.nullable(),
  base: ConfigIdSchema.nullable(),
  status: RolloutStatusSchema.nullable(),
  batch: z.number().int().min(-1),
  target: z.number().int().nonnegative(),
  released: z.number().int().nonnegative(),
  active: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  acceptedFailures: z.number().int().nonnegative(),
  settledAt: z.number().int().nullable(),
  reason: z.string().nullable(),
  startedSeq: SeqSchema.nullable(),
  updatedSeq: SeqSchema,
});

/** `ferry rollout status` (`GET /v1/graphs/:graph/rollout`): the row, with what is derived from it now. */
export const RolloutViewSchema = RolloutRowSchema.extend({
  /** Batches in the policy. */
  batches: z.number().int().nonnegative(),
  /** Released agents that reported neither active nor a failure yet. */
  pending: z.number().int().nonnegative(),
  /** When the coordinator takes the next step by itself (ms); null: not running, or waiting for reports. */
  nextStepAt: z.number().int().nullable(),
  /** The graph's head now. */
  head: ConfigIdSchema.nullable(),
});
export type RolloutView = z.infer<typeof RolloutViewSchema>;

/** How the agents that should run a config are doing. */
export const ConfigSummarySchema = z.strictObject({
  succeeded: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  pending: z.number().int().nonnegative(),
  unreported: z.number().int().nonnegative(),
});
export type ConfigSummary = z.infer<typeof ConfigSummarySchema>;

/** A config's body as the coordinator keeps it: with its author's signature (base64 ed25519 over configSigningMessage). */
export const SignedConfigBodySchema = ConfigBodySchema.extend({ signature: z.string().max(128) });
export type SignedConfigBody = z.infer<typeof SignedConfigBodySchema>;

/** A config as recorded (its signed body, whether it was forced past a moved head) with how its rollout goes. */
export const ConfigViewSchema = z.strictObject({
  id: ConfigIdSchema,
  graph: GraphNameSchema,
  parents: z.array(ConfigIdSchema),
  body: SignedConfigBodySchema,
  forced: z.boolean(),
  seq: SeqSchema,
  summary: ConfigSummarySchema,
});
export type ConfigView = z.infer<typeof ConfigViewSchema>;

export const GraphLogSchema = z.strictObject({
  graph: GraphNameSchema,
  head: ConfigIdSchema,
  /** Newest first. */
  configs: z.array(ConfigViewSchema.extend({ head: z.boolean() })),
});

export const SubmittedSchema = z.strictObject({
  configId: ConfigIdSchema,
  forced: z.boolean(),
  previousHead: ConfigIdSchema.nullable(),
  seq: SeqSchema,
});

export const RolledBackSchema = z.strictObject({ graph: GraphNameSchema, from: ConfigIdSchema, to: ConfigIdSchema, seq: SeqSchema });

/**
 * A watch's reply: the signed desired answer once the desired config
 * changed, or word that it did not. Unchanged first: its `unchanged: true`
 * tells it apart.
 */
export const WatchAnswerSchema = z.union([WatchUnchangedSchema, DesiredAnswerSchema]);

/** How an alert's deliveries went (the coordinator's outbox: coordinator/db/alert-outbox.ts). */
export const AlertDeliveryStatusSchema = z.strictObject({
  /** Deliveries queued and not yet delivered or given up. */
  pending: z.number().int().nonnegative(),
  lastAttemptAt: z.number().int().nullable(),
  /** The last attempt: delivered, retrying (it failed and is tried again) or failed (given up after its attempts). */
  lastOutcome: z.enum(['delivered', 'retrying', 'failed']).nullable(),
  /** The receiver's HTTP status at the last attempt (null: it did not answer). */
  lastStatus: z.number().int().nullable(),
  lastError: z.string().nullable(),
  delivered: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  /** Dropped unsent because this alert's outbox was full (the oldest go first). */
  dropped: z.number().int().nonnegative(),
});
export type AlertDeliveryStatus = z.infer<typeof AlertDeliveryStatusSchema>;

/** A registered webhook (`GET /v1/alerts`, admins and operators: the URL may hold the receiver's secret). */
export const AlertViewSchema = z.strictObject({
  id: AlertIdSchema,
  /** The URL (null: this database does not have it, e.g. rebuilt from an export, which never holds URLs). */
  url: z.string().nullable(),
  /** The URL's origin, as the audit log records it. */
  target: z.string(),
  urlDigest: z.string(),
  kinds: z.array(AlertKindSchema),
  where: z.array(z.string()),
  createdSeq: SeqSchema,
  delivery: AlertDeliveryStatusSchema,
});
export type AlertView = z.infer<typeof AlertViewSchema>;

export const AlertAddedSchema = z.strictObject({ alertId: AlertIdSchema, seq: SeqSchema });
