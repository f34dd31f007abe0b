/**
 * The coordinator's operations, independent of transport: each names the
 * roles allowed to call it, validates its input with zod (strictly: unknown
 * fields are refused), and runs against the coordinator. The HTTP API maps
 * routes onto these. (QUIC carries only the data plane: data-operations.ts,
 * whose one runDataOperation both transports call.)
 */
import { z } from 'zod';
import type { Access } from './actors.js';
import { DesiredChallengeSchema } from '../../protocol/coordinator-proofs.js';
import { WIRE_ENCODINGS } from '../../protocol/compression/wire.js';
import { KeyIdSchema } from '../../protocol/identity.js';
import { FERRY_VERSION } from '../../protocol/version.js';
import type { ChainReport } from '../audit/chain.js';
import type { Coordinator } from '../coordinator.js';
import * as commands from '../domain/commands.js';
import { FerryError } from '../../protocol/errors.js';
import type { Actor } from '../domain/commands.js';
import { ActionSchema, ConfigIdSchema, GraphNameSchema, type AuditEvent } from '../domain/events.js';
import type { AgentRow, ConfigRow } from '../domain/state.js';
import { AgentActivitySchema, agentActivities } from './agent-activity.js';
import { desiredAnswer } from './signed-answers.js';
import { desiredConfigOf, listAgents, parseWhere, summarizeConfig } from './queries.js';


export interface Operation<S extends z.ZodType = z.ZodType, O = unknown> {
  access: Access;
  input: S;
  run(coordinator: Coordinator, actor: Actor, input: z.infer<S>): O;
}

function op<S extends z.ZodType, O>(access: Access, input: S, run: (coordinator: Coordinator, actor: Actor, input: z.infer<S>) => O): Operation<S, O> {
  return { access, input, run };
}

const READERS = ['admin', 'operator', 'viewer'] as const;
const DEPLOYERS = ['admin', 'operator'] as const;
const page = { limit: z.coerce.number().int().min(1).max(1000).default(100), after: z.string().max(128).optional() };
const agentId = { agentId: KeyIdSchema };

function event(recorded: AuditEvent | undefined): { seq: number | null } {
  return { seq: recorded?.seq ?? null };
}

/** An agent as the API shows it (agents.list, agents.show without facts): the row, its desired config, presence and activity. */
export type AgentApiView = ReturnType<typeof agentView>;

function agentView(coordinator: Coordinator, agent: AgentRow) {
  const presence = coordinator.presence.lastSeen(agent.id);
  const activity = agentActivities(coordinator).get(agent.id) ?? null;
  return { ...agent, desiredConfig: desiredConfigOf(coordinator.state, agent), lastSeen: presence, activity };
}

function requireSelfOrReader(actor: Actor, target: string): void {
  if (actor.role === 'agent' ? actor.keyId !== target : !(READERS as readonly string[]).includes(actor.role)) {
    throw new FerryError('FORBIDDEN', 'an agent may only read its own state');
  }
}

export const OPERATIONS = {
  info: op('public', z.strictObject({}), (coordinator) => ({
    name: coordinator.name,
    coordinatorKey: coordinator.identity.keyId,
    version: FERRY_VERSION,
    lastSeq: coordinator.lastSeq,
    tlsFingerprint: coordinator.tls.fingerprint,
    quicPort: coordinator.quicPort,
    /** Encodings its data plane sends and accepts (clients ask only for these: an older coordinator refuses `accept`). */
    wireEncodings: coordinator.wireCompression === false ? [] : [...WIRE_ENCODINGS],
  })),

  enroll: op('self-signed', commands.EnrollInput, (coordinator, actor, input) => {
    const recorded = coordinator.record({ ...actor, role: 'agent' }, (context) => commands.enrollAgent(context, input));
    const agent = coordinator.state.get('agents', actor.keyId)!;
    return { agentId: agent.id, status: agent.status, ...event(recorded) };
  }),

  'keys.add': op(['admin'], commands.AddKeyInput, (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.addKey(context, input)))),
  'keys.list': op(READERS, z.strictObject({ ...page }), (coordinator, _actor, input) => {
    const rows = coordinator.state.all('keys').filter((row) => input.after === undefined || row.id > input.after);
    return { keys: rows.slice(0, input.limit), next: rows.length > input.limit ? rows[input.limit - 1]!.id : null };
  }),
  'keys.revoke': op(['admin'], commands.RevokeKeyInput, (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.revokeKey(context, input)))),

  'tokens.create': op(DEPLOYERS, commands.CreateTokenInput, (coordinator, actor, input) => {
    const out = coordinator.execute(actor, (context) => {
      const created = commands.createToken(context, input);
      return { draft: created.draft, result: created.token };
    })!;
    const payload = out.event.payload as { tokenId: string; expiresAt: number };
    return { tokenId: payload.tokenId, token: out.result, expiresAt: payload.expiresAt, ...event(out.event) };
  }),
  'tokens.list': op(DEPLOYERS, z.strictObject({ ...page }), (coordinator, _actor, input) => {
    const rows = coordinator.state
      .all('tokens')
      .filter((row) => input.after === undefined || row.id > input.after)
      .map(({ secretHash: _hidden, ...row }) => ({ ...row, expired: row.expiresAt <= coordinator.now() }));
    return { tokens: rows.slice(0, input.limit), next: rows.length > input.limit ? rows[input.limit - 1]!.id : null };
  }),
  'tokens.revoke': op(DEPLOYERS, z.strictObject({ tokenId: z.string() }), (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.revokeToken(context, input)))),

  'agents.list': op(READERS, z.strictObject({ ...page, where: z.union([z.string(), z.array(z.string())]).optional() }), (coordinator, _actor, input) => {
    const where = parseWhere(typeof input.where === 'string' ? [input.where] : (input.where ?? []));
    const rows = listAgents(coordinator.state, where).filter((row) => input.after === undefined || row.id > input.after);
    return { agents: rows.slice(0, input.limit).map((row) => agentView(coordinator, row)), next: rows.length > input.limit ? rows[input.limit - 1]!.id : null };
  }),
  'agents.show': op([...READERS, 'agent'], z.strictObject(agentId), (coordinator, actor, input) => {
    requireSelfOrReader(actor, input.agentId);
    const agent = coordinator.state.get('agents', input.agentId);
    if (!agent) throw new FerryError('NOT_FOUND', `no agent ${input.agentId}`);
    const facts = coordinator.state.get('agentFacts', `${agent.id}#${agent.factsRevision}`)?.facts ?? {};
    return { ...agentView(coordinator, agent), facts };
  }),
  'agents.facts': op([...READERS, 'agent'], z.strictObject({ ...agentId, history: z.enum(['0', '1', 'true', 'false']).optional() }), (coordinator, actor, input) => {
    requireSelfOrReader(actor, input.agentId);
    const agent = coordinator.state.get('agents', input.agentId);
    if (!agent) throw new FerryError('NOT_FOUND', `no agent ${input.agentId}`);
    const history = input.history === '1' || input.history === 'true';
    const revisions = [];
    for (let revision = history ? 1 : agent.factsRevision; revision <= agent.factsRevision; revision++) {
      const row = coordinator.state.get('agentFacts', `${agent.id}#${revision}`);
      if (row) revisions.push({ revision: row.revision, hlc: row.hlc, seq: row.seq, facts: row.facts });
    }
    return { agentId: agent.id, revisions };
  }),
  'agents.approve': op(DEPLOYERS, z.strictObject(agentId), (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.decideAgent(context, input, 'approve')))),
  'agents.reject': op(DEPLOYERS, z.strictObject(agentId), (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.decideAgent(context, input, 'reject')))),
  'agents.revoke': op(DEPLOYERS, z.strictObject(agentId), (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.decideAgent(context, input, 'revoke')))),
  'agents.assign': op(DEPLOYERS, z.strictObject({ ...agentId, graph: GraphNameSchema.nullable() }), (coordinator, actor, input) =>
    event(coordinator.record(actor, (context) => commands.assignAgent(context, input))),
  ),
  'agents.pin': op(DEPLOYERS, z.strictObject({ ...agentId, configId: ConfigIdSchema.nullable() }), (coordinator, actor, input) =>
    event(coordinator.record(actor, (context) => commands.pinAgent(context, input))),
  ),

  'agent.facts': op(['agent'], z.strictObject({ facts: z.unknown() }), (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    return { changed: event(coordinator.record(actor, (context) => commands.reportFacts(context, input, coordinator.tickHlc()))).seq !== null };
  }),
  'agent.status': op(['agent'], commands.ReportStatusInput, (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    return event(coordinator.record(actor, (context) => commands.reportStatus(context, input)));
  }),
  'agent.activity': op(['agent'], AgentActivitySchema, (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    agentActivities(coordinator).set(actor.keyId, { ...input, at: coordinator.now() });
    return { ok: true };
  }),
  'agent.desired': op(['agent'], z.strictObject({ challenge: DesiredChallengeSchema.optional() }), (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    // Signed: the agent acts on it (runs its activation command) and it may travel over plain HTTP.
    return desiredAnswer(coordinator, coordinator.state.get('agents', actor.keyId)!, input.challenge ?? '');
  }),

  'graphs.list': op(READERS, z.strictObject({}), (coordinator) => ({ graphs: coordinator.state.all('graphs') })),
  'graphs.show': op(READERS, z.strictObject({ graph: GraphNameSchema, limit: page.limit }), (coordinator, _actor, input) => {
    const graph = coordinator.state.get('graphs', input.graph);
    if (!graph) throw new FerryError('NOT_FOUND', `no graph '${input.graph}'`);
    const configs = coordinator.state
      .all('configs')
      .filter((config) => config.graph === input.graph)
      .sort((a, b) => b.seq - a.seq)
      .slice(0, input.limit)
      .map((config: ConfigRow) => ({ ...config, head: config.id === graph.head, summary: summarizeConfig(coordinator.state, config.id) }));
    return { graph: graph.id, head: graph.head, configs };
  }),
  'graphs.submit': op(DEPLOYERS, z.strictObject({ graph: GraphNameSchema, ...commands.SubmitConfigInput.shape }), (coordinator, actor, input) => {
    if (input.body.graph !== input.graph) throw new FerryError('INVALID', `the config is for graph '${input.body.graph}', not '${input.graph}'`);
    const { graph: _graph, ...submission } = input;
    const recorded = coordinator.record(actor, (context) => commands.submitConfig(context, submission))!;
    const payload = recorded.payload as { id: string; forced: boolean; previousHead: string | null };
    return { configId: payload.id, forced: payload.forced, previousHead: payload.previousHead, seq: recorded.seq };
  }),
  'graphs.rollback': op(DEPLOYERS, z.strictObject({ graph: GraphNameSchema, to: ConfigIdSchema.optional() }), (coordinator, actor, input) => {
    const recorded = coordinator.record(actor, (context) => commands.rollbackGraph(context, input))!;
    return { ...(recorded.payload as { from: string; to: string }), seq: recorded.seq };
  }),
  'configs.show': op(READERS, z.strictObject({ configId: ConfigIdSchema }), (coordinator, _actor, input) => {
    const config = coordinator.state.get('configs', input.configId);
    if (!config) throw new FerryError('NOT_FOUND', `no config ${input.configId}`);
    return { ...config, summary: summarizeConfig(coordinator.state, config.id) };
  }),

  'audit.events': op(
    READERS,
    z.strictObject({ ...page, after: z.coerce.number().int().min(0).default(0), action: ActionSchema.optional(), actor: z.string().max(128).optional(), subject: z.string().max(256).optional() }),
    (coordinator, _actor, input) => {
      const events: AuditEvent[] = [];
      for (const candidate of coordinator.events(input.after)) {
        if (input.action && candidate.action !== input.action) continue;
        if (input.actor && candidate.actorKey !== input.actor) continue;
        if (input.subject && candidate.subject !== input.subject) continue;
        events.push(candidate);
        if (events.length > input.limit) break;
      }
      const more = events.length > input.limit;
      return { events: events.slice(0, input.limit), next: more ? events[input.limit - 1]!.seq : null };
    },
  ),
  'audit.verify': op(READERS, z.strictObject({}), (coordinator): Promise<ChainReport> => coordinator.verifyAudit()),
} satisfies Record<string, Operation>;

export type OperationName = keyof typeof OPERATIONS;
