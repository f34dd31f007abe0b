/**
 * What the audit viewer's JSON endpoints answer (viewer-routes.ts): one zod
 * schema per reply. The viewer (coordinator/viewer/), its browser script
 * and the CLI use the types inferred from these; the coordinator checks its
 * replies against them in tests, the client on every call.
 *
 * Two kinds of data, described differently:
 * - What the viewer reads from the log as stored (an event, its timeline
 *   entry). The viewer must show a row that was edited, not refuse it (its
 *   verification status says it is broken), so these are described by
 *   type, not by format: an edited row's action is any string. A column
 *   whose SQLite type was changed (text in the integer `wall_time`, a blob)
 *   is not described, and is refused by the client.
 * - What replay made of it (the fleet at a position, the rows an event
 *   changed). Only the reducer writes those, from events it validated, so
 *   they carry the formats of the API's own schemas (views.ts, fleet.ts).
 *   Ids the viewer holds as plain strings are checked by format without
 *   their brand (`KeyIdSchema.in`).
 *
 * Strict objects throughout: the coordinator controls every shape. Free-form
 * by nature, and so unchecked: facts, an event's payload, a diff's field
 * values. Those are also the only parts that can nest deeper than
 * MAX_VIEWER_JSON_DEPTH, where the viewer puts a placeholder string
 * (protocol/json-bounds.ts clipJsonDepth).
 */
import { z } from 'zod';
import { ConfigIdSchema, GraphNameSchema } from '../config.js';
import { HlcStringSchema } from '../hlc.js';
import { KeyIdSchema } from '../identity.js';
import { AlertIdSchema } from '../alerts.js';
import { ActionSchema, ChainReportSchema } from './audit.js';
import { AgentStatusSchema, PhaseSchema } from './fleet.js';
import { AgentActivitySchema } from './inputs.js';
import { AgentViewSchema, AlertViewSchema, ConfigSummarySchema, ConfigViewSchema, GraphViewSchema, KeyViewSchema, PresenceSchema, RelayViewSchema, RolloutRowSchema, RuleViewSchema, TokenViewSchema } from './views.js';

const SeqSchema = z.number().int().min(1);
const CountSchema = z.number().int().nonnegative();
/** A position in the log: the state after that event, 0 before the first. */
const PositionSchema = z.number().int().nonnegative();
const KeyIdText = KeyIdSchema.in;
const ConfigIdText = ConfigIdSchema.in;

// --- read from the log as stored ------------------------------------------------

/** An event as the log stores it, edited or not: the envelope's fields by type (AuditEventSchema has their formats). */
export const StoredEventSchema = z.strictObject({
  seq: z.number().int(),
  hlc: z.string(),
  wallTime: z.number(),
  actorKey: z.string(),
  actorRole: z.string(),
  action: z.string(),
  subject: z.string(),
  payload: z.unknown(),
  requestSignature: z.string().nullable(),
  prevHash: z.string(),
  hash: z.string(),
});
export type StoredEvent = z.infer<typeof StoredEventSchema>;

/** One line of the timeline (coordinator/viewer/timeline.ts), built from an event as stored. */
export const TimelineEntrySchema = StoredEventSchema.pick({ seq: true, hlc: true, wallTime: true, actorKey: true, actorRole: true, action: true, subject: true }).extend({
  /** The agent the event is about (agent.* events), else null. */
  agent: z.string().nullable(),
  /** The graph the event is about (config.submit, graph.rollback, agent.assign), else null. */
  graph: z.string().nullable(),
  /** One line saying what happened. */
  summary: z.string(),
  /** For events that move a graph's head (config.submit, graph.rollback): the head before and after. */
  headMove: z.strictObject({ from: z.string().nullable(), to: z.string() }).nullable(),
});
export type TimelineEntry = z.infer<typeof TimelineEntrySchema>;

/** A page of the (filtered) timeline, in seq order. */
export const TimelinePageSchema = z.strictObject({
  entries: z.array(TimelineEntrySchema),
  /** Events matching the filter in the whole log. */
  total: CountSchema,
  /** Whether matching events exist before the first / after the last of this page. */
  hasOlder: z.boolean(),
  hasNewer: z.boolean(),
});
export type TimelinePage = z.infer<typeof TimelinePageSchema>;

/** Why replay cannot go past an event. */
export const ReplayStopSchema = z.strictObject({ seq: z.number().int(), message: z.string() });
export type ReplayStop = z.infer<typeof ReplayStopSchema>;

/** The chain report of the whole log, with when it was made (coordinator/viewer/verification.ts). */
export const VerificationStatusSchema = ChainReportSchema.extend({
  /** When the check ran (ms since the epoch) and the last seq the log had then. */
  checkedAt: z.number(),
  checkedThrough: CountSchema,
  /** The log's last seq now; events after `checkedThrough` are not verified yet. */
  lastSeq: CountSchema,
  /** How long the check took (ms). */
  durationMs: z.number().nonnegative(),
  /** The signed checkpoints known, newest last (seq only). */
  checkpointSeqs: z.array(SeqSchema),
});
export type VerificationStatus = z.infer<typeof VerificationStatusSchema>;

/** What the chain report says about one event. */
export const EventVerificationSchema = z.discriminatedUnion('state', [
  z.strictObject({ state: z.literal('verified'), coveredByCheckpoint: SeqSchema.nullable() }),
  z.strictObject({ state: z.literal('broken'), reason: z.string() }),
  z.strictObject({ state: z.literal('after-break'), brokenAt: SeqSchema }),
  z.strictObject({ state: z.literal('unchecked') }),
]);
export type EventVerification = z.infer<typeof EventVerificationSchema>;

// --- made by replay ------------------------------------------------------------------

/** The state tables' rows (coordinator/db/schema.ts), as the reducer writes them. */
const KeyRowSchema = KeyViewSchema.extend({ id: KeyIdText });
const TokenRowSchema = TokenViewSchema.omit({ expired: true }).extend({ secretHash: z.string() });
const AgentRowSchema = AgentViewSchema.omit({ desiredConfig: true, lastSeen: true, presence: true, activity: true }).extend({ id: KeyIdText });
const AgentFactsRowSchema = z.strictObject({
  /** `<agent id>#<revision>`. */
  id: z.string(),
  agentId: KeyIdText,
  revision: z.number().int().min(1),
  facts: z.record(z.string(), z.unknown()),
  hlc: HlcStringSchema,
  seq: SeqSchema,
});
const ConfigRowSchema = ConfigViewSchema.omit({ summary: true });
/** A webhook as the log records it: its origin and digest, never its URL. */
const AlertRowSchema = AlertViewSchema.omit({ url: true, delivery: true }).extend({ id: AlertIdSchema.in, removed: z.boolean(), removedSeq: SeqSchema.nullable() });
export const STATE_TABLE_NAMES = ['keys', 'tokens', 'agents', 'agentFacts', 'graphs', 'configs', 'alerts', 'relays', 'rollouts', 'rolloutReleases', 'secrets', 'rules', 'params'] as const;
const RolloutReleaseRowSchema = z.strictObject({
  id: z.string(),
  graph: GraphNameSchema,
  configId: ConfigIdSchema,
  agentId: KeyIdText,
  batch: z.number().int().nonnegative(),
  outcome: z.enum(['pending', 'active', 'failed']),
  seq: SeqSchema,
});
/** A secret as the log records it: who it is encrypted to and its ciphertext's digest, never a value or a ciphertext. */
const SecretRowSchema = z.strictObject({
  id: z.string(),
  version: z.number().int(),
  recipients: z.array(KeyIdText),
  setter: KeyIdText,
  selector: z.union([z.strictObject({ where: z.array(z.string()) }), z.strictObject({ agents: z.array(KeyIdText) })]),
  ciphertextSha256: z.string(),
  ciphertextBytes: z.number().int(),
  removed: z.boolean(),
  updatedSeq: SeqSchema,
});
/** A layer of per-machine parameters (non-secret values, docs/secrets.md). */
const ParamRowSchema = z.strictObject({
  id: z.string(),
  layer: z.union([z.strictObject({ graph: z.string() }), z.strictObject({ where: z.array(z.string()) }), z.strictObject({ agent: KeyIdText })]),
  values: z.record(z.string(), z.string()),
  createdSeq: SeqSchema,
  updatedSeq: SeqSchema,
});
/** A row of any state table: the diff names its table beside it. */
const RelayRowSchema = RelayViewSchema.extend({ id: KeyIdText });
const StateRowSchema = z.union([KeyRowSchema, TokenRowSchema, AgentRowSchema, AgentFactsRowSchema, GraphViewSchema, ConfigRowSchema, AlertRowSchema, RelayRowSchema, RolloutRowSchema, RolloutReleaseRowSchema, SecretRowSchema, RuleViewSchema, ParamRowSchema]);
export type KeyRow = z.infer<typeof KeyRowSchema>;

export const FieldChangeSchema = z.strictObject({ field: z.string(), before: z.unknown(), after: z.unknown() });
export type FieldChange = z.infer<typeof FieldChangeSchema>;

/** A state row one event wrote, before and after (coordinator/viewer/event-diff.ts). */
export const RowChangeSchema = z.strictObject({
  table: z.enum(STATE_TABLE_NAMES),
  id: z.string(),
  /** `added`: a new row; `changed`: fields differ; `unchanged`: written with the same values. */
  kind: z.enum(['added', 'changed', 'unchanged']),
  before: StateRowSchema.nullable(),
  after: StateRowSchema,
  /** The fields that differ (every field of an added row). */
  fields: z.array(FieldChangeSchema),
});
export type RowChange = z.infer<typeof RowChangeSchema>;

/** An agent as the viewer shows it: its row (without its token) with its desired config and latest facts. */
export const FleetAgentSchema = AgentRowSchema.omit({ tokenId: true }).extend({
  /** The pin, else the head of the graph it follows. */
  desiredConfig: ConfigIdText.nullable(),
  facts: z.record(z.string(), z.unknown()).nullable(),
});
export type FleetAgent = z.infer<typeof FleetAgentSchema>;

/** A config as the viewer lists it: its row with the body's message, author and targets read out. */
export const FleetConfigSchema = z.strictObject({
  id: ConfigIdSchema,
  graph: GraphNameSchema,
  seq: SeqSchema,
  parents: z.array(ConfigIdSchema),
  forced: z.boolean(),
  message: z.string(),
  author: z.string(),
  targets: z.record(z.string(), z.string()),
  /** Whether it is its graph's head at this position. */
  head: z.boolean(),
});
export type FleetConfig = z.infer<typeof FleetConfigSchema>;

/** A config with how the enrolled agents that should run it are doing. */
export const ConfigAggregateSchema = FleetConfigSchema.extend({ summary: ConfigSummarySchema });
export type ConfigAggregate = z.infer<typeof ConfigAggregateSchema>;

/** A move of a graph's head, from its timeline entry. */
export const HeadMoveSchema = z.strictObject({ seq: z.number().int(), wallTime: z.number(), action: z.string(), from: z.string().nullable(), to: z.string() });
export type HeadMove = z.infer<typeof HeadMoveSchema>;

export const FleetGraphSchema = GraphViewSchema.extend({
  /** Configs in the graph at this position. */
  configCount: CountSchema,
  /** Its configs, newest first (limited by `historyLimit`). */
  history: z.array(FleetConfigSchema),
  /** How its head moved (submissions, rollbacks), oldest first (limited by `historyLimit`). */
  headMoves: z.array(HeadMoveSchema),
});
export type FleetGraph = z.infer<typeof FleetGraphSchema>;

/** A bootstrap token without its secret's hash. */
export const FleetTokenSchema = TokenViewSchema.omit({ expired: true });
export type FleetToken = z.infer<typeof FleetTokenSchema>;

/** The fleet at one position (coordinator/viewer/fleet-view.ts). */
export const FleetViewSchema = z.strictObject({
  counts: z.strictObject({
    keys: CountSchema,
    tokens: CountSchema,
    agents: CountSchema,
    agentFacts: CountSchema,
    graphs: CountSchema,
    configs: CountSchema,
    agentsByStatus: z.partialRecord(AgentStatusSchema, CountSchema),
  }),
  agents: z.strictObject({ total: CountSchema, matching: CountSchema, offset: CountSchema, rows: z.array(FleetAgentSchema) }),
  graphs: z.array(FleetGraphSchema),
  /** Configs some enrolled agent should run, and every graph head; newest first. */
  configs: z.strictObject({ total: CountSchema, rows: z.array(ConfigAggregateSchema) }),
  keys: z.array(KeyRowSchema),
  tokens: z.array(FleetTokenSchema),
});
export type FleetView = z.infer<typeof FleetViewSchema>;

// --- the replies -----------------------------------------------------------------------

/** `GET /viewer/api/info`: the log, how far replay reaches, and its verification. */
export const ViewerInfoSchema = z.strictObject({
  name: z.string(),
  coordinatorKey: KeyIdText,
  /** `live`: a coordinator's own log; `file`: an export served offline. */
  mode: z.enum(['live', 'file']),
  lastSeq: CountSchema,
  replayableThrough: PositionSchema,
  stoppedAt: ReplayStopSchema.nullable(),
  snapshotEvery: z.number().int().min(1),
  verification: VerificationStatusSchema,
  actions: z.array(ActionSchema),
});
export type ViewerInfo = z.infer<typeof ViewerInfoSchema>;

/** `GET /viewer/api/events/:seq`: one event with its verification status and what it changed. */
export const EventDetailSchema = z.strictObject({
  entry: TimelineEntrySchema,
  /** The event exactly as stored. */
  event: StoredEventSchema,
  /** The actor's agent name or key label, as the log recorded it (null if none). */
  actorName: z.string().nullable(),
  verification: EventVerificationSchema,
  /** Whether the request that carried the command was signed (its signature is recorded and hashed into the chain). */
  requestSignature: z.string().nullable(),
  /** For config.submit: whether the config id matches its body and its author's signature verifies. */
  configSignature: z.strictObject({ author: z.string(), valid: z.boolean(), reason: z.string() }).nullable(),
  /** The state rows the event changed, or null (with replayProblem) when replay cannot apply it. */
  diff: z.array(RowChangeSchema).nullable(),
  replayProblem: z.string().nullable(),
});
export type EventDetail = z.infer<typeof EventDetailSchema>;

/** `GET /viewer/api/state`: the fleet after one event. */
export const StateResultSchema = z.strictObject({
  /** The position: the state after this event (0: before the first). */
  seq: PositionSchema,
  /** The event at the position (null at 0). */
  position: TimelineEntrySchema.nullable(),
  lastSeq: CountSchema,
  replayableThrough: PositionSchema,
  verification: VerificationStatusSchema,
  state: FleetViewSchema,
});
export type StateResult = z.infer<typeof StateResultSchema>;

// --- the live fleet (not replayed: the coordinator's state now) ---------------------------

/** An agent's fetch progress as it last said (api/agent-activity.ts), without its recent local events: those are up to 100 KiB an agent. */
export const LiveActivitySchema = AgentActivitySchema.omit({ events: true }).extend({ at: z.number().int() });

/** An agent on the live page: what the agents API shows of it (views.ts AgentView), presence and last seen derived now. */
export const LiveAgentSchema = AgentViewSchema.pick({
  name: true,
  status: true,
  system: true,
  desiredGraph: true,
  pinnedConfig: true,
  desiredConfig: true,
  currentConfig: true,
  phase: true,
  lastError: true,
  health: true,
  healthReason: true,
  healthConfig: true,
  healthAt: true,
  recordedPresence: true,
  lastSeen: true,
  presence: true,
}).extend({ id: KeyIdText, activity: LiveActivitySchema.nullable() });
export type LiveAgent = z.infer<typeof LiveAgentSchema>;

/** Where the phases of agents stand (`none`: never reported). */
export const LivePhaseSchema = z.enum([...PhaseSchema.options, 'none']);
export type LivePhase = z.infer<typeof LivePhaseSchema>;

/** A graph's rollout now: its head and how the enrolled agents that should run it are doing. */
export const LiveGraphSchema = z.strictObject({
  id: GraphNameSchema,
  head: ConfigIdText,
  /** The head config's seq and message (empty when its row is missing). */
  headSeq: z.number().int().nonnegative(),
  headMessage: z.string(),
  updatedSeq: SeqSchema,
  /** Enrolled agents following the graph (pinned or not). */
  following: CountSchema,
  /** The head's rollout, counted as `ferry config show` counts (api/queries.ts configOutcome). */
  rollout: ConfigSummarySchema,
  /** The phases of the agents counted in `rollout`. */
  phases: z.partialRecord(LivePhaseSchema, CountSchema),
  /** Their presence and health now. */
  presence: z.partialRecord(PresenceSchema, CountSchema),
  degraded: CountSchema,
  /** Agents fetching the head, and their bytes, as their last activity reports said. */
  fetching: z.strictObject({ agents: CountSchema, bytesDone: CountSchema, bytesTotal: CountSchema }),
});
export type LiveGraph = z.infer<typeof LiveGraphSchema>;

/** `GET /viewer/api/live` and each message of the live stream: the fleet now, a page of its agents. */
export const LiveFleetSchema = z.strictObject({
  /** The audit log's last seq when this was computed, and when (ms since the epoch). */
  seq: CountSchema,
  at: z.number().int(),
  /** When agents not holding a watch turn stale, then offline (the coordinator's settings). */
  thresholds: z.strictObject({ staleAfterMs: z.number().int().positive(), offlineAfterMs: z.number().int().positive() }),
  counts: z.strictObject({
    agents: CountSchema,
    byStatus: z.partialRecord(AgentStatusSchema, CountSchema),
    /** Enrolled agents only: the others are not expected to call. */
    byPresence: z.partialRecord(PresenceSchema, CountSchema),
    byHealth: z.strictObject({ healthy: CountSchema, degraded: CountSchema, unchecked: CountSchema }),
  }),
  /** Graphs by name; at most MAX_LIVE_GRAPHS of them, `total` says how many there are. */
  graphs: z.strictObject({ total: CountSchema, rows: z.array(LiveGraphSchema) }),
  /** The agents the query matches, one page of them (in enrollment order). */
  agents: z.strictObject({ total: CountSchema, matching: CountSchema, offset: CountSchema, rows: z.array(LiveAgentSchema) }),
});
export type LiveFleet = z.infer<typeof LiveFleetSchema>;
