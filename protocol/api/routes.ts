/**
 * The coordinator's HTTP API, described: one table of routes, as the data
 * plane has one table of operations (data-protocol.ts).
 *
 * Participants: admins, operators and viewers (the CLI), pipelines
 * (pushers), agents, and anyone for `info`. Each route names its method
 * and path (`:name` is a path parameter), who may call it, its input and
 * its output, and the error codes it answers beyond those of any request
 * (INVALID, BAD_JSON, JSON_TOO_DEEP, BODY_TOO_LARGE, INTERNAL, SHUTTING_DOWN,
 * and for a signed route the authentication codes: errors.ts).
 *
 * Requests: every route but `info` is signed (request-signing.ts). The
 * input is one object: the path parameters, the query and the JSON body
 * (POST) merged, validated strictly. Replies: JSON, `201` for a POST, else
 * `200`; an error is ErrorBodySchema with its code's status.
 *
 * Access is documentation of what the coordinator enforces, never the
 * enforcement: the coordinator decides from its own state (the key's role
 * and status, an agent's own id: coordinator/api/actors.ts). The
 * coordinator routes this table (coordinator/api/http.ts, handlers in
 * operations.ts), the client calls it by name
 * (`client.call('agents.show', { agentId })`, http-client.ts) and checks
 * each reply against `output`; a test checks that both sides route
 * exactly these.
 *
 * Example: `GET /v1/agents/<id>` → `{"id":"<id>","name":"gw-1",…,"facts":{…}}`;
 * `POST /v1/graphs/edge/rollback` `{}` → 201 `{"graph":"edge","from":"…","to":"…","seq":42}`.
 *
 * Not JSON, so described apart (API_STREAMS): the audit export (JSON
 * lines), the TLS certificate (PEM), the data plane's HTTP fallback
 * (frames, data-protocol.ts) and the metrics (Prometheus text). Mounted beside them, with descriptions of
 * their own: the Nix binary cache (`/nix-cache`, docs/nix-cache.md) and
 * the audit viewer (`/viewer`, docs/viewer.md), whose JSON routes are
 * VIEWER_ROUTES (viewer-routes.ts).
 */
import { z } from 'zod';
import { ConfigIdSchema, GraphNameSchema, WatchQuerySchema, DesiredAnswerSchema } from '../config.js';
import { DesiredChallengeSchema } from '../coordinator-proofs.js';
import type { ErrorCode } from '../errors.js';
import { KeyIdSchema } from '../identity.js';
import { RelayPrefetchAnswerSchema, RelayPrefetchQuerySchema } from '../relay-prefetch.js';
import { ActionSchema, AuditEventSchema, ChainReportSchema } from './audit.js';
import { ConfigDiffInput, ConfigDiffSchema } from './config-diff.js';
import { ParamLayerViewSchema, SetParamsInput, UnsetParamsInput } from './params.js';
import { SecretDetailSchema, SecretRefInput, SecretSetSchema, SecretViewSchema, SetSecretInput } from './secrets.js';
import type { Role } from './fleet.js';
import {
  AddAlertInput,
  AddRuleInput,
  LabelAgentsInput,
  MoveRuleInput,
  RuleRefInput,
  AssignRelayInput,
  RelayEnrollInput,
  RelayRefInput,
  RelayUpstreamInput,
  AddKeyInput,
  AgentActivitySchema,
  CreateTokenInput,
  EnrollInput,
  GcInput,
  PAGE_INPUT,
  ReportFactsInput,
  ReportHealthInput,
  RemoveAlertInput,
  ReportStatusInput,
  RevokeKeyInput,
  RolloutRefInput,
  SetRolloutPolicyInput,
  SubmitConfigInput,
} from './inputs.js';
import {
  AlertAddedSchema,
  RelayEnrolledSchema,
  RelayListEntrySchema,
  RuleViewSchema,
  FleetChangeSchema,
  AlertViewSchema,
  AgentDetailSchema,
  AgentFactsSchema,
  AgentViewSchema,
  ConfigViewSchema,
  EnrolledSchema,
  GcReportSchema,
  GraphLogSchema,
  GraphViewSchema,
  HealthReportAnswerSchema,
  InfoSchema,
  KeyViewSchema,
  RecordedSchema,
  RolledBackSchema,
  RolloutViewSchema,
  SubmittedSchema,
  TokenCreatedSchema,
  TokenViewSchema,
  WatchAnswerSchema,
} from './views.js';

/** Who may call a route: these roles; anyone whose request is signed by any key (enrollment); or anyone. */
export type ApiAccess = readonly Role[] | 'self-signed' | 'public';

export interface ApiRoute<I extends z.ZodType = z.ZodType, O extends z.ZodType = z.ZodType> {
  method: 'GET' | 'POST';
  path: `/v1/${string}`;
  access: ApiAccess;
  input: I;
  output: O;
  /** The codes this route answers beyond those of any request (see the module comment). */
  errors: readonly ErrorCode[];
}

function route<I extends z.ZodType, O extends z.ZodType>(description: ApiRoute<I, O>): ApiRoute<I, O> {
  return description;
}

/** Codes of the one enum (errors.ts): a typo does not compile. Plain arrays, not a sub-enum per route (ErrorCodeSchema.extract): building those cost every CLI command ~10-20 ms of start-up here, and nothing parses with them. */
const errors = (...codes: [ErrorCode, ...ErrorCode[]]): readonly ErrorCode[] => codes;

const READERS = ['admin', 'operator', 'viewer'] as const;
const DEPLOYERS = ['admin', 'operator'] as const;
const agentId = { agentId: KeyIdSchema };
const noInput = z.strictObject({});

export const API_ROUTES = {
  info: route({ method: 'GET', path: '/v1/info', access: 'public', input: noInput, output: InfoSchema, errors: [] }),
  enroll: route({ method: 'POST', path: '/v1/enroll', access: 'self-signed', input: EnrollInput, output: EnrolledSchema, errors: errors('BAD_TOKEN', 'CONFLICT') }),

  'keys.add': route({ method: 'POST', path: '/v1/keys', access: ['admin'], input: AddKeyInput, output: RecordedSchema, errors: errors('CONFLICT') }),
  'keys.list': route({ method: 'GET', path: '/v1/keys', access: READERS, input: z.strictObject(PAGE_INPUT), output: z.strictObject({ keys: z.array(KeyViewSchema), next: z.string().nullable() }), errors: [] }),
  'keys.revoke': route({ method: 'POST', path: '/v1/keys/:keyId/revoke', access: ['admin'], input: RevokeKeyInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),

  'tokens.create': route({ method: 'POST', path: '/v1/tokens', access: DEPLOYERS, input: CreateTokenInput, output: TokenCreatedSchema, errors: [] }),
  'tokens.list': route({ method: 'GET', path: '/v1/tokens', access: DEPLOYERS, input: z.strictObject(PAGE_INPUT), output: z.strictObject({ tokens: z.array(TokenViewSchema), next: z.string().nullable() }), errors: [] }),
  // The id is checked by the command (NOT_FOUND for one that is no token's), not by its format here.
  'tokens.revoke': route({ method: 'POST', path: '/v1/tokens/:tokenId/revoke', access: DEPLOYERS, input: z.strictObject({ tokenId: z.string() }), output: RecordedSchema, errors: errors('NOT_FOUND') }),

  'agents.list': route({
    method: 'GET',
    path: '/v1/agents',
    access: READERS,
    /** `where`: selector clauses (docs/coordinator.md "Selectors"), several ANDed. */
    input: z.strictObject({ ...PAGE_INPUT, where: z.union([z.string(), z.array(z.string())]).optional() }),
    output: z.strictObject({ agents: z.array(AgentViewSchema), next: z.string().nullable() }),
    errors: [],
  }),
  // An agent may read itself, even while it waits for approval.
  'agents.show': route({ method: 'GET', path: '/v1/agents/:agentId', access: [...READERS, 'agent'], input: z.strictObject(agentId), output: AgentDetailSchema, errors: errors('NOT_FOUND', 'FORBIDDEN') }),
  'agents.facts': route({
    method: 'GET',
    path: '/v1/agents/:agentId/facts',
    access: [...READERS, 'agent'],
    input: z.strictObject({ ...agentId, history: z.enum(['0', '1', 'true', 'false']).optional() }),
    output: AgentFactsSchema,
    errors: errors('NOT_FOUND', 'FORBIDDEN'),
  }),
  'agents.approve': route({ method: 'POST', path: '/v1/agents/:agentId/approve', access: DEPLOYERS, input: z.strictObject(agentId), output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'agents.reject': route({ method: 'POST', path: '/v1/agents/:agentId/reject', access: DEPLOYERS, input: z.strictObject(agentId), output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'agents.revoke': route({ method: 'POST', path: '/v1/agents/:agentId/revoke', access: DEPLOYERS, input: z.strictObject(agentId), output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'agents.assign': route({
    method: 'POST',
    path: '/v1/agents/:agentId/assign',
    access: DEPLOYERS,
    /** `stop` (with graph null): run the deactivate command and leave no generation active (inputs.ts AssignAgentInput). */
    input: z.strictObject({ ...agentId, graph: GraphNameSchema.nullable(), stop: z.boolean().optional() }),
    output: RecordedSchema,
    errors: errors('NOT_FOUND', 'CONFLICT'),
  }),
  /** Clears the configs the agent refused (one that failed once), through its signed desired answer: it tries its desired config again. */
  'agents.retry': route({ method: 'POST', path: '/v1/agents/:agentId/retry', access: DEPLOYERS, input: z.strictObject(agentId), output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  /** Return an operator-assigned agent to rule control (`agents assign AGENT --rules`): placed at once where the rules put it. */
  'agents.follow-rules': route({ method: 'POST', path: '/v1/agents/:agentId/rules', access: DEPLOYERS, input: z.strictObject(agentId), output: FleetChangeSchema, errors: errors('NOT_FOUND') }),
  /** Set and unset operator labels of named agents or of those `where` selects; the rules re-place them in the same transaction. */
  'agents.label': route({ method: 'POST', path: '/v1/agents/label', access: DEPLOYERS, input: LabelAgentsInput, output: FleetChangeSchema, errors: errors('NOT_FOUND') }),
  'agents.pin': route({
    method: 'POST',
    path: '/v1/agents/:agentId/pin',
    access: DEPLOYERS,
    input: z.strictObject({ ...agentId, configId: ConfigIdSchema.nullable() }),
    output: RecordedSchema,
    errors: errors('NOT_FOUND'),
  }),

  // An agent's own routes: each also tells the coordinator the agent is alive.
  'agent.facts': route({ method: 'POST', path: '/v1/agent/facts', access: ['agent'], input: ReportFactsInput, output: z.strictObject({ changed: z.boolean() }), errors: [] }),
  'agent.status': route({ method: 'POST', path: '/v1/agent/status', access: ['agent'], input: ReportStatusInput, output: RecordedSchema, errors: errors('NOT_FOUND') }),
  // Signed by the coordinator for the agent and its challenge (coordinator-proofs.ts): the agent checks the proof before the schema.
  'agent.desired': route({ method: 'GET', path: '/v1/agent/desired', access: ['agent'], input: z.strictObject({ challenge: DesiredChallengeSchema.optional() }), output: DesiredAnswerSchema, errors: [] }),
  /** Held until the desired config differs from `known`, or `wait` seconds (config.ts WatchQuerySchema). */
  'agent.watch': route({ method: 'GET', path: '/v1/agent/watch', access: ['agent'], input: WatchQuerySchema, output: WatchAnswerSchema, errors: errors('TOO_MANY_WATCHES', 'REVOKED') }),
  /** Recorded as agent.health unless unchanged, or deferred by the per-agent rate limit (then `retryAfterMs`: send the health it has then). */
  'agent.health': route({ method: 'POST', path: '/v1/agent/health', access: ['agent'], input: ReportHealthInput, output: HealthReportAnswerSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'agent.activity': route({ method: 'POST', path: '/v1/agent/activity', access: ['agent'], input: AgentActivitySchema, output: z.strictObject({ ok: z.literal(true) }), errors: [] }),

  'graphs.list': route({ method: 'GET', path: '/v1/graphs', access: READERS, input: noInput, output: z.strictObject({ graphs: z.array(GraphViewSchema) }), errors: [] }),
  'graphs.show': route({ method: 'GET', path: '/v1/graphs/:graph', access: READERS, input: z.strictObject({ graph: GraphNameSchema, limit: PAGE_INPUT.limit }), output: GraphLogSchema, errors: errors('NOT_FOUND') }),
  'graphs.submit': route({
    method: 'POST',
    path: '/v1/graphs/:graph/configs',
    access: DEPLOYERS,
    input: z.strictObject({ graph: GraphNameSchema, ...SubmitConfigInput.shape }),
    output: SubmittedSchema,
    errors: errors('HEAD_MOVED', 'BAD_SIGNATURE', 'MISSING_STORE_PATH', 'NOT_FOUND', 'CONFLICT'),
  }),
  'graphs.rollback': route({
    method: 'POST',
    path: '/v1/graphs/:graph/rollback',
    access: DEPLOYERS,
    input: z.strictObject({ graph: GraphNameSchema, to: ConfigIdSchema.optional() }),
    output: RolledBackSchema,
    errors: errors('NOT_FOUND', 'CONFLICT'),
  }),
  // Staged rollouts (docs/coordinator.md): a graph's policy, and its rollout's state and controls.
  'rollouts.policy': route({ method: 'POST', path: '/v1/graphs/:graph/rollout/policy', access: DEPLOYERS, input: SetRolloutPolicyInput, output: RecordedSchema, errors: errors('CONFLICT') }),
  'rollouts.show': route({ method: 'GET', path: '/v1/graphs/:graph/rollout', access: READERS, input: RolloutRefInput, output: RolloutViewSchema, errors: errors('NOT_FOUND') }),
  'rollouts.pause': route({ method: 'POST', path: '/v1/graphs/:graph/rollout/pause', access: DEPLOYERS, input: RolloutRefInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'rollouts.resume': route({ method: 'POST', path: '/v1/graphs/:graph/rollout/resume', access: DEPLOYERS, input: RolloutRefInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'rollouts.abort': route({ method: 'POST', path: '/v1/graphs/:graph/rollout/abort', access: DEPLOYERS, input: RolloutRefInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'configs.show': route({ method: 'GET', path: '/v1/configs/:configId', access: READERS, input: z.strictObject({ configId: ConfigIdSchema }), output: ConfigViewSchema, errors: errors('NOT_FOUND') }),
  /** Closure diff (config-diff.ts): `from` defaults to the config's first parent. The viewer's `viewer.configDiff` is the same operation. */
  'configs.diff': route({ method: 'GET', path: '/v1/configs/:configId/diff', access: READERS, input: ConfigDiffInput, output: ConfigDiffSchema, errors: errors('NOT_FOUND', 'STORE_PATH_NOT_FOUND') }),

  // Webhooks. Listing shows URLs, which often hold the receiver's secret: admins and operators only (the log and
  // the viewer show only their origin and digest); changing them is the admins' (each change is audited).
  'alerts.add': route({ method: 'POST', path: '/v1/alerts', access: ['admin'], input: AddAlertInput, output: AlertAddedSchema, errors: errors('CONFLICT') }),
  'alerts.list': route({ method: 'GET', path: '/v1/alerts', access: DEPLOYERS, input: noInput, output: z.strictObject({ alerts: z.array(AlertViewSchema) }), errors: [] }),
  'alerts.remove': route({ method: 'POST', path: '/v1/alerts/:alertId/remove', access: ['admin'], input: RemoveAlertInput, output: RecordedSchema, errors: errors('NOT_FOUND') }),

  // Site relays (docs/relays.md): a relay enrolls itself with a relay token; operators decide which agents use it.
  'relays.enroll': route({ method: 'POST', path: '/v1/relays/enroll', access: 'self-signed', input: RelayEnrollInput, output: RelayEnrolledSchema, errors: errors('BAD_TOKEN', 'CONFLICT') }),
  'relays.list': route({ method: 'GET', path: '/v1/relays', access: READERS, input: noInput, output: z.strictObject({ relays: z.array(RelayListEntrySchema) }), errors: [] }),
  'relays.assign': route({ method: 'POST', path: '/v1/relays/:relayId/assign', access: DEPLOYERS, input: AssignRelayInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'relays.revoke': route({ method: 'POST', path: '/v1/relays/:relayId/revoke', access: DEPLOYERS, input: RelayRefInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  /** Where a relay fetches from before the coordinator: another relay, or none (relay-access.ts). */
  'relays.upstream': route({ method: 'POST', path: '/v1/relays/:relayId/upstream', access: DEPLOYERS, input: RelayUpstreamInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  /** A relay's own: held until the closures its agents are to run differ from `known`, or `wait` seconds (relay-prefetch.ts). */
  'relay.prefetch': route({ method: 'GET', path: '/v1/relay/prefetch', access: ['relay'], input: RelayPrefetchQuerySchema, output: RelayPrefetchAnswerSchema, errors: errors('TOO_MANY_WATCHES', 'REVOKED') }),

  // Secrets (docs/secrets.md): only ciphertext, encrypted and decrypted on the admin's machine. Admins only: setting one
  // decides what machines run with, and listing names who holds which.
  'secrets.set': route({ method: 'POST', path: '/v1/secrets/:name', access: ['admin'], input: SetSecretInput, output: SecretSetSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'secrets.list': route({ method: 'GET', path: '/v1/secrets', access: ['admin'], input: noInput, output: z.strictObject({ secrets: z.array(SecretViewSchema) }), errors: [] }),
  'secrets.show': route({ method: 'GET', path: '/v1/secrets/:name', access: ['admin'], input: SecretRefInput, output: SecretDetailSchema, errors: errors('NOT_FOUND') }),
  'secrets.remove': route({ method: 'POST', path: '/v1/secrets/:name/remove', access: ['admin'], input: SecretRefInput, output: RecordedSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),

  // Per-machine parameters (docs/secrets.md): non-secret values in layers, resolved into each agent's desired answer.
  'params.list': route({ method: 'GET', path: '/v1/params', access: READERS, input: noInput, output: z.strictObject({ layers: z.array(ParamLayerViewSchema) }), errors: [] }),
  'params.set': route({ method: 'POST', path: '/v1/params', access: DEPLOYERS, input: SetParamsInput, output: RecordedSchema, errors: errors('NOT_FOUND') }),
  'params.unset': route({ method: 'POST', path: '/v1/params/unset', access: DEPLOYERS, input: UnsetParamsInput, output: RecordedSchema, errors: errors('NOT_FOUND') }),

  // Targeting rules (docs/coordinator.md "Rules"): ordered, first match wins, applied by the coordinator to every agent under rule control.
  'rules.list': route({ method: 'GET', path: '/v1/rules', access: READERS, input: noInput, output: z.strictObject({ rules: z.array(RuleViewSchema) }), errors: [] }),
  'rules.add': route({ method: 'POST', path: '/v1/rules', access: DEPLOYERS, input: AddRuleInput, output: FleetChangeSchema, errors: errors('NOT_FOUND', 'CONFLICT') }),
  'rules.remove': route({ method: 'POST', path: '/v1/rules/:name/remove', access: DEPLOYERS, input: RuleRefInput, output: FleetChangeSchema, errors: errors('NOT_FOUND') }),
  'rules.move': route({ method: 'POST', path: '/v1/rules/:name/move', access: DEPLOYERS, input: MoveRuleInput, output: FleetChangeSchema, errors: errors('NOT_FOUND') }),

  'audit.events': route({
    method: 'GET',
    path: '/v1/audit/events',
    access: READERS,
    input: z.strictObject({
      ...PAGE_INPUT,
      after: z.coerce.number().int().min(0).default(0),
      action: ActionSchema.optional(),
      actor: z.string().max(128).optional(),
      subject: z.string().max(256).optional(),
    }),
    output: z.strictObject({ events: z.array(AuditEventSchema), next: z.number().int().nullable() }),
    errors: [],
  }),
  /** The coordinator's garbage collection (coordinator/retention.ts): admins only, recorded as store.gc unless a dry run. */
  gc: route({ method: 'POST', path: '/v1/gc', access: ['admin'], input: GcInput, output: GcReportSchema, errors: errors('GC_CONFLICT') }),
  'audit.verify': route({ method: 'GET', path: '/v1/audit/verify', access: READERS, input: noInput, output: ChainReportSchema, errors: [] }),
} satisfies Record<string, ApiRoute>;

export type ApiRouteName = keyof typeof API_ROUTES;
export type ApiInput<N extends ApiRouteName> = z.input<(typeof API_ROUTES)[N]['input']>;
export type ApiOutput<N extends ApiRouteName> = z.output<(typeof API_ROUTES)[N]['output']>;

/** A route whose reply is not one JSON document: described by its content type, read with the client's `send`. */
export interface ApiStream {
  method: 'GET' | 'POST';
  path: `/v1/${string}`;
  /** 'per-request': each request names an operation with its own access (data-protocol.ts DATA_ACCESS). */
  access: ApiAccess | 'per-request';
  reply: string;
}

export const API_STREAMS = {
  /** The whole log and its checkpoints as JSON lines (coordinator/audit/export.ts); `ferry audit verify --offline` reads it. */
  'audit.export': { method: 'GET', path: '/v1/audit/export', access: READERS, reply: 'application/x-ndjson' },
  /** Its certificate: clients check it against the fingerprint they pinned before trusting it for QUIC. */
  'tls.certificate': { method: 'GET', path: '/v1/tls-certificate', access: 'public', reply: 'application/x-pem-file' },
  /** The data plane over HTTP: a request frame in, reply frames out (data-protocol.ts, framing.ts). */
  data: { method: 'POST', path: '/v1/data', access: 'per-request', reply: 'application/x-ferry-frames' },
  /**
   * Prometheus metrics, for a scraper that cannot sign requests: HTTP Basic
   * credentials derived from a reader's key (`ferry metrics credentials`;
   * coordinator/api/key-credentials.ts), checked like a signed request's key.
   */
  metrics: { method: 'GET', path: '/v1/metrics', access: READERS, reply: 'text/plain; version=0.0.4' },
} as const satisfies Record<string, ApiStream>;

export type ApiStreamName = keyof typeof API_STREAMS;

/**
 * The path of route `path` with its `:name` parameters filled from
 * `input` (URI-encoded), and what is left of the input. Throws TypeError
 * for a parameter the input lacks.
 */
export function fillPath(path: string, input: Record<string, unknown>): { path: string; rest: Record<string, unknown> } {
  const rest = { ...input };
  const filled = path.replace(/:([A-Za-z]+)/g, (_match, name: string) => {
    const value = rest[name];
    if (value === undefined || value === null) throw new TypeError(`${path}: the input has no '${name}'`);
    delete rest[name];
    return encodeURIComponent(String(value));
  });
  return { path: filled, rest };
}

/** The field the first issue of `error` is about (an unknown key names itself), and its message. */
export function firstIssue(error: z.ZodError): { field: string; message: string } {
  const issue = error.issues[0]!;
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
  return { field: path.map(String).join('.') || '(the reply)', message: issue.message };
}
