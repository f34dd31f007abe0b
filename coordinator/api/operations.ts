/**
 * The coordinator's operations, independent of transport: one handler per
 * route of the API's description (protocol/api/routes.ts), which names its
 * access, its input schema (strict: unknown fields are refused) and its
 * output schema. A handler is typed by them: it takes the input as the
 * schema parses it and returns what the output schema accepts. The HTTP
 * API routes the description onto these (http.ts). (QUIC carries only the
 * data plane: data-operations.ts, whose one runDataOperation both
 * transports call.)
 */
import type { z } from 'zod';
import type { API_ROUTES, ApiRouteName } from '../../protocol/api/routes.js';
import { WIRE_ENCODINGS } from '../../protocol/compression/wire.js';
import { FERRY_VERSION } from '../../protocol/version.js';
import type { Coordinator } from '../coordinator.js';
import * as commands from '../domain/commands.js';
import * as rolloutCommands from '../domain/rollout-commands.js';
import { nextStepAt } from '../domain/rollouts.js';
import { FerryError } from '../../protocol/errors.js';
import type { Actor } from '../domain/commands.js';
import type { AuditEvent, DraftWithFollowUps, EventDraft, PayloadOf } from '../domain/events.js';
import * as ruleCommands from '../domain/rule-commands.js';
import type { Decision } from '../audit/audit-log.js';
import type { FleetChange } from '../../protocol/api/views.js';
import type { AgentRow } from '../domain/state.js';
import { agentActivities } from './agent-activity.js';
import { healthEventLimiter } from './health-reports.js';
import { desiredAnswer } from './signed-answers.js';
import { desiredConfigOf, listAgents, parseWhere, summarizeConfig } from './queries.js';
import { alertOutbox } from './alert-dispatcher.js';
import { checkRelayWhere } from './relay-access.js';
import { configDiff } from './config-diff.js';
import { collectCoordinatorGarbage } from '../retention.js';
import { emptyRelayReports, relayReports } from './relay-reports.js';
import type { KeyId } from '../../protocol/identity.js';
import { removeSecret, setSecret } from '../domain/secret-commands.js';
import { setParams, unsetParams } from '../domain/param-commands.js';
import { layerInUse } from '../domain/params.js';
import { agentParams } from './param-layers.js';
import type { ParamLayer } from '../../protocol/api/params.js';
import { secretCiphertexts } from '../db/secret-ciphertexts.js';
import { secretUsedBy, secretView } from './secret-delivery.js';

/** The routes a handler answers: all but the held watches, which http.ts holds open itself (an agent's: its reply is agent.desired's, or unchanged; a relay's prefetch watch). */
export type OperationName = Exclude<ApiRouteName, 'agent.watch' | 'relay.prefetch'>;
type Route<N extends ApiRouteName> = (typeof API_ROUTES)[N];

/** What an operation's handler takes (its input as parsed) and returns (what its output schema accepts). */
export type Handler<N extends OperationName> = (
  coordinator: Coordinator,
  actor: Actor,
  input: z.output<Route<N>['input']>,
) => z.input<Route<N>['output']> | Promise<z.input<Route<N>['output']>>;

const READERS = ['admin', 'operator', 'viewer'] as const;

function event(recorded: AuditEvent | undefined): { seq: number | null } {
  return { seq: recorded?.seq ?? null };
}

/** A decision for execute from what a fleet-control command returns (its event, or its event and follow-ups, or nothing). */
function decided(outcome: EventDraft | DraftWithFollowUps | undefined): Decision<undefined> | undefined {
  if (!outcome) return undefined;
  return 'followUps' in outcome ? { draft: outcome.draft, followUps: outcome.followUps, result: undefined } : { draft: outcome, result: undefined };
}

/** What a fleet-control change recorded: its first event, the relabels and the placements among its events. */
function fleetChange(done: { event: AuditEvent; events: AuditEvent[] } | undefined): FleetChange {
  const count = (action: string) => done?.events.filter((recorded) => recorded.action === action).length ?? 0;
  return { seq: done?.event.seq ?? null, relabelled: count('agent.label'), placed: count('agent.place') };
}

/** An agent as the API shows it (protocol/api/views.ts AgentViewSchema). */
function agentView(coordinator: Coordinator, agent: AgentRow) {
  const activity = agentActivities(coordinator).get(agent.id) ?? null;
  return {
    ...agent,
    desiredConfig: desiredConfigOf(coordinator.state, agent),
    lastSeen: coordinator.presence.lastSeen(agent.id),
    presence: coordinator.presence.presenceOf(agent.id),
    activity,
  };
}

function requireSelfOrReader(actor: Actor, target: string): void {
  if (actor.role === 'agent' ? actor.keyId !== target : !(READERS as readonly string[]).includes(actor.role)) {
    throw new FerryError('FORBIDDEN', 'an agent may only read its own state');
  }
}

export const OPERATIONS: { [N in OperationName]: Handler<N> } = {
  info: (coordinator) => ({
    name: coordinator.name,
    coordinatorKey: coordinator.identity.keyId,
    version: FERRY_VERSION,
    lastSeq: coordinator.lastSeq,
    tlsFingerprint: coordinator.tls.fingerprint,
    quicPort: coordinator.quicPort,
    /** Encodings its data plane sends and accepts (clients ask only for these: an older coordinator refuses `accept`). */
    wireEncodings: coordinator.wireCompression === false ? [] : [...WIRE_ENCODINGS],
  }),

  enroll: (coordinator, actor, input) => {
    const recorded = coordinator.record({ ...actor, role: 'agent' }, (context) => commands.enrollAgent(context, input));
    const agent = coordinator.state.get('agents', actor.keyId)!;
    return { agentId: agent.id, status: agent.status, ...event(recorded) };
  },

  'relays.enroll': (coordinator, actor, input) => {
    const recorded = coordinator.record({ ...actor, role: 'relay' }, (context) => commands.enrollRelay(context, input))!;
    return { relayId: actor.keyId as KeyId, seq: recorded.seq };
  },
  'relays.list': (coordinator) => {
    const reports = relayReports(coordinator);
    return { relays: coordinator.state.all('relays').map((relay) => ({ ...relay, reports: reports.get(relay.id) ?? emptyRelayReports() })) };
  },
  'relays.assign': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.assignRelay(context, input, checkRelayWhere))),
  'relays.revoke': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.revokeRelay(context, input))),
  'relays.upstream': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.setRelayUpstream(context, input))),

  'keys.add': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.addKey(context, input))),
  'keys.list': (coordinator, _actor, input) => {
    const rows = coordinator.state.all('keys').filter((row) => input.after === undefined || row.id > input.after);
    return { keys: rows.slice(0, input.limit), next: rows.length > input.limit ? rows[input.limit - 1]!.id : null };
  },
  'keys.revoke': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.revokeKey(context, input))),

  'tokens.create': (coordinator, actor, input) => {
    const out = coordinator.execute(actor, (context) => {
      const created = commands.createToken(context, input);
      return { draft: created.draft, result: created.token };
    })!;
    const payload = out.event.payload as PayloadOf<'token.create'>;
    return { tokenId: payload.tokenId, token: out.result, expiresAt: payload.expiresAt, ...event(out.event) };
  },
  'tokens.list': (coordinator, _actor, input) => {
    const rows = coordinator.state
      .all('tokens')
      .filter((row) => input.after === undefined || row.id > input.after)
      .map(({ secretHash: _hidden, ...row }) => ({ ...row, expired: row.expiresAt <= coordinator.now() }));
    return { tokens: rows.slice(0, input.limit), next: rows.length > input.limit ? rows[input.limit - 1]!.id : null };
  },
  'tokens.revoke': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.revokeToken(context, input))),

  'agents.list': (coordinator, _actor, input) => {
    const where = parseWhere(typeof input.where === 'string' ? [input.where] : (input.where ?? []));
    const rows = listAgents(coordinator.state, where, (id) => coordinator.presence.presenceOf(id)).filter((row) => input.after === undefined || row.id > input.after);
    return { agents: rows.slice(0, input.limit).map((row) => agentView(coordinator, row)), next: rows.length > input.limit ? rows[input.limit - 1]!.id : null };
  },
  'agents.show': (coordinator, actor, input) => {
    requireSelfOrReader(actor, input.agentId);
    const agent = coordinator.state.get('agents', input.agentId);
    if (!agent) throw new FerryError('NOT_FOUND', `no agent ${input.agentId}`);
    const facts = coordinator.state.get('agentFacts', `${agent.id}#${agent.factsRevision}`)?.facts ?? {};
    return { ...agentView(coordinator, agent), facts, params: agentParams(coordinator, agent) };
  },
  'agents.facts': (coordinator, actor, input) => {
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
  },
  'agents.approve': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.decideAgent(context, input, 'approve'))),
  'agents.reject': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.decideAgent(context, input, 'reject'))),
  'agents.revoke': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.decideAgent(context, input, 'revoke'))),
  'agents.assign': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.assignAgent(context, input))),
  'agents.follow-rules': (coordinator, actor, input) => fleetChange(coordinator.execute(actor, (context) => decided(ruleCommands.followRules(context, input)))),
  'agents.label': (coordinator, actor, input) => {
    // A selection is resolved in the command's transaction: the agents it names are those it selects as the labels change.
    const where = input.where === undefined ? undefined : parseWhere(input.where);
    const presenceOf = (id: string) => coordinator.presence.presenceOf(id);
    return fleetChange(
      coordinator.execute(actor, (context) => {
        const agentIds = where === undefined ? input.agentIds! : listAgents(coordinator.state, where, presenceOf).map((agent) => agent.id);
        return decided(ruleCommands.labelAgents(context, input, agentIds));
      }),
    );
  },
  'agents.pin': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.pinAgent(context, input))),
  'agents.retry': (coordinator, actor, input) => event(coordinator.record(actor, (context) => commands.retryAgent(context, input))),
  gc: (coordinator, actor, input) => collectCoordinatorGarbage(coordinator, actor, input, coordinator.retention),

  'agent.facts': (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    return { changed: event(coordinator.record(actor, (context) => commands.reportFacts(context, input, coordinator.tickHlc()))).seq !== null };
  },
  'agent.status': (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    return event(coordinator.record(actor, (context) => commands.reportStatus(context, input)));
  },
  'agent.health': (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    const agent = coordinator.state.get('agents', actor.keyId);
    if (agent?.healthConfig === input.configId && agent.health === input.health) return { outcome: 'unchanged', seq: null, retryAfterMs: null };
    const limiter = healthEventLimiter(coordinator);
    const wait = limiter.delay(actor.keyId, coordinator.now());
    if (wait > 0) return { outcome: 'deferred', seq: null, retryAfterMs: wait };
    const recorded = coordinator.record(actor, (context) => commands.reportHealth(context, input));
    if (!recorded) return { outcome: 'unchanged', seq: null, retryAfterMs: null };
    limiter.note(actor.keyId, coordinator.now());
    return { outcome: 'recorded', seq: recorded.seq, retryAfterMs: null };
  },
  'agent.activity': (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    agentActivities(coordinator).set(actor.keyId, { ...input, at: coordinator.now() });
    return { ok: true };
  },
  'agent.desired': (coordinator, actor, input) => {
    coordinator.presence.touch(actor.keyId);
    // Signed: the agent acts on it (runs its activation command) and it may travel over plain HTTP.
    return desiredAnswer(coordinator, coordinator.state.get('agents', actor.keyId)!, input.challenge ?? '');
  },

  'graphs.list': (coordinator) => ({ graphs: coordinator.state.all('graphs') }),
  'graphs.show': (coordinator, _actor, input) => {
    const graph = coordinator.state.get('graphs', input.graph);
    if (!graph) throw new FerryError('NOT_FOUND', `no graph '${input.graph}'`);
    const configs = coordinator.state
      .all('configs')
      .filter((config) => config.graph === input.graph)
      .sort((a, b) => b.seq - a.seq)
      .slice(0, input.limit)
      .map((config) => ({ ...config, head: config.id === graph.head, summary: summarizeConfig(coordinator.state, config.id) }));
    return { graph: graph.id, head: graph.head, configs };
  },
  'graphs.submit': (coordinator, actor, input) => {
    if (input.body.graph !== input.graph) throw new FerryError('INVALID', `the config is for graph '${input.body.graph}', not '${input.graph}'`);
    const { graph: _graph, ...submission } = input;
    const recorded = coordinator.record(actor, (context) => commands.submitConfig(context, submission))!;
    const payload = recorded.payload as PayloadOf<'config.submit'>;
    return { configId: payload.id, forced: payload.forced, previousHead: payload.previousHead, seq: recorded.seq };
  },
  'graphs.rollback': (coordinator, actor, input) => {
    const recorded = coordinator.record(actor, (context) => commands.rollbackGraph(context, input))!;
    return { ...(recorded.payload as PayloadOf<'graph.rollback'>), seq: recorded.seq };
  },
  'rollouts.policy': (coordinator, actor, input) => event(coordinator.record(actor, (context) => rolloutCommands.setRolloutPolicy(context, input))),
  'rollouts.show': (coordinator, _actor, input) => {
    const row = coordinator.state.get('rollouts', input.graph);
    if (!row) throw new FerryError('NOT_FOUND', `graph '${input.graph}' has no rollout policy and never had a rollout`);
    return {
      ...row,
      batches: row.policy?.batches.length ?? 0,
      pending: Math.max(0, row.released - row.active - row.failed),
      nextStepAt: nextStepAt(row, coordinator.now()),
      head: coordinator.state.get('graphs', input.graph)?.head ?? null,
    };
  },
  'rollouts.pause': (coordinator, actor, input) => event(coordinator.record(actor, (context) => rolloutCommands.pauseRollout(context, input))),
  'rollouts.resume': (coordinator, actor, input) => event(coordinator.record(actor, (context) => rolloutCommands.resumeRollout(context, input))),
  'rollouts.abort': (coordinator, actor, input) => event(coordinator.record(actor, (context) => rolloutCommands.abortRollout(context, input))),
  'configs.show': (coordinator, _actor, input) => {
    const config = coordinator.state.get('configs', input.configId);
    if (!config) throw new FerryError('NOT_FOUND', `no config ${input.configId}`);
    return { ...config, summary: summarizeConfig(coordinator.state, config.id) };
  },

  'configs.diff': (coordinator, _actor, input) => configDiff(coordinator, input),

  'alerts.add': (coordinator, actor, input) => {
    // The clauses' syntax, checked here (INVALID naming the clause): the dispatcher parses them again to match.
    parseWhere(input.where);
    const outbox = alertOutbox(coordinator);
    const out = coordinator.execute(actor, (context) => {
      const added = commands.addAlert(context, input, coordinator.state.all('alerts'));
      // The URL is kept beside the state, in the event's transaction (never in the log: see EVENT_PAYLOADS['alert.add']).
      return { draft: added.draft, result: added.draft.payload.alertId, publish: () => outbox.putEndpoint(added.draft.payload.alertId, added.url) };
    })!;
    return { alertId: out.result, seq: out.event.seq };
  },
  'alerts.list': (coordinator) => {
    const outbox = alertOutbox(coordinator);
    const alerts = coordinator.state
      .all('alerts')
      .filter((alert) => !alert.removed)
      .sort((a, b) => a.createdSeq - b.createdSeq)
      .map((alert) => ({
        id: alert.id,
        url: outbox.endpoint(alert.id) ?? null,
        target: alert.target,
        urlDigest: alert.urlDigest,
        kinds: alert.kinds,
        where: alert.where,
        createdSeq: alert.createdSeq,
        delivery: outbox.status(alert.id),
      }));
    return { alerts };
  },
  'alerts.remove': (coordinator, actor, input) => {
    const outbox = alertOutbox(coordinator);
    const out = coordinator.execute(actor, (context) => ({ draft: commands.removeAlert(context, input), result: undefined, publish: () => outbox.removeAlert(input.alertId) }));
    return event(out?.event);
  },

  'secrets.set': (coordinator, actor, input) => {
    const store = secretCiphertexts(coordinator);
    const out = coordinator.execute(actor, (context) => {
      const set = setSecret(context, input);
      const { name, version, ciphertextSha256 } = set.draft.payload;
      // The ciphertext is kept beside the state, in the event's transaction (never in the log: see EVENT_PAYLOADS['secret.set']).
      return { draft: set.draft, result: { name, version }, publish: () => store.put(name, version, ciphertextSha256, set.ciphertext) };
    })!;
    return { ...out.result, seq: out.event.seq };
  },
  'secrets.list': (coordinator) => ({
    secrets: coordinator.state
      .all('secrets')
      .filter((row) => !row.removed)
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((row) => secretView(coordinator, row)),
  }),
  'secrets.show': (coordinator, _actor, input) => {
    const row = coordinator.state.get('secrets', input.name);
    if (!row || row.removed) throw new FerryError('NOT_FOUND', `no secret '${input.name}'`);
    const ciphertext = secretCiphertexts(coordinator).latest(row.id, row.version, row.ciphertextSha256);
    return { ...secretView(coordinator, row), ciphertext: ciphertext?.toString('base64') ?? null };
  },
  'secrets.remove': (coordinator, actor, input) => {
    const store = secretCiphertexts(coordinator);
    const out = coordinator.execute(actor, (context) => ({
      draft: removeSecret(context, input, (name) => secretUsedBy(coordinator, name)),
      result: undefined,
      publish: () => store.remove(input.name),
    }));
    return event(out?.event);
  },
  'params.list': (coordinator) => ({
    layers: coordinator.state
      .all('params')
      .filter(layerInUse)
      .sort((a, b) => a.createdSeq - b.createdSeq)
      .map(({ layer, values, createdSeq, updatedSeq }) => ({ layer: layer as ParamLayer, values, createdSeq, updatedSeq })),
  }),
  'params.set': (coordinator, actor, input) => event(coordinator.record(actor, (context) => setParams(context, input))),
  'params.unset': (coordinator, actor, input) => event(coordinator.record(actor, (context) => unsetParams(context, input))),
  'rules.list': (coordinator) => ({ rules: coordinator.state.all('rules').filter((rule) => !rule.removed).sort((a, b) => a.position - b.position) }),
  'rules.add': (coordinator, actor, input) => fleetChange(coordinator.execute(actor, (context) => decided(ruleCommands.addRule(context, input)))),
  'rules.remove': (coordinator, actor, input) => fleetChange(coordinator.execute(actor, (context) => decided(ruleCommands.removeRule(context, input)))),
  'rules.move': (coordinator, actor, input) => fleetChange(coordinator.execute(actor, (context) => decided(ruleCommands.moveRule(context, input)))),

  'audit.events': (coordinator, _actor, input) => {
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
  'audit.verify': (coordinator) => coordinator.verifyAudit(),
};

