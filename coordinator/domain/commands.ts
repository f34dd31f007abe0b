/**
 * Commands: what actors ask for. Each checks the actor's role and the
 * current state, then returns the one event that records the change (the
 * coordinator appends and applies it in the same transaction). A refusal is
 * a FerryError (protocol/errors.ts) whose code decides its HTTP status; it
 * never changes state.
 * Input schemas are module constants: zod compiles a schema on its first
 * parse, and building them inside the commands recompiled them every call.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { FerryError } from '../../protocol/errors.js';
import { configSigningMessage } from '../../protocol/config.js';
import { configId } from '../../castore/config-id.js';
import { ed25519Verify } from '../../protocol/ed25519.js';
import { publicKeyOf, type KeyId } from '../../protocol/identity.js';
import type { ActorRole, DraftWithFollowUps, EventDraft, FollowUp, PayloadOf, Role } from './events.js';
import { orderedRules, placeDraft, placementFor } from './rules.js';
import type { RecordedPresence } from '../../protocol/api/fleet.js';
import {
  AddAlertInput,
  AddKeyInput,
  AgentRefInput,
  AssignAgentInput,
  AssignRelayInput,
  CreateTokenInput,
  EnrollInput,
  PinAgentInput,
  RelayEnrollInput,
  RelayRefInput,
  RelayUpstreamInput,
  RemoveAlertInput,
  ReportFactsInput,
  ReportHealthInput,
  ReportStatusInput,
  RevokeKeyInput,
  RevokeTokenInput,
  RollbackGraphInput,
  SubmitConfigInput,
} from '../../protocol/api/inputs.js';
import type { AlertRow, RelayRow, StateStore, StateTableName, StateTables, TokenRow } from './state.js';
import type { AlertId } from '../../protocol/alerts.js';
import { MAX_RELAY_CHAIN } from '../../protocol/relays.js';

export interface Actor {
  keyId: string;
  role: ActorRole;
  /** The request signature that carried the command, recorded in the event. */
  requestSignature?: string | null;
}

export interface CommandContext {
  state: StateStore;
  actor: Actor;
  now: number;
  /** Every row of a table, by id (for the few commands that must see all of one: rules, the agents a rule places). */
  all<T extends StateTableName>(table: T): StateTables[T][];
  /** Whether the castore holds a store path with its whole closure. */
  hasStorePathClosure(storePath: string): boolean;
  /**
   * Whether a coordinator GC is deciding or sweeping now (coordinator/retention.ts):
   * what would make a config needed again (a submission, a pin, a graph
   * rollback) is refused meanwhile (GC_CONFLICT: retry), since the GC's kept
   * set was computed without it.
   */
  collectingGarbage: boolean;
}

/** Refuses (GC_CONFLICT) while a coordinator GC runs: see CommandContext.collectingGarbage. */
function outsideGarbageCollection(context: CommandContext): void {
  if (context.collectingGarbage) throw new FerryError('GC_CONFLICT', 'a garbage collection (ferry gc) is running; try again in a moment');
}

/**
 * Refuses (MISSING_STORE_PATH) a config whose targets the coordinator no
 * longer holds with their whole closure: a config a GC collected is
 * recorded forever, but cannot be deployed again (submit a new one).
 */
function requireClosures(context: CommandContext, configId: string, targets: Record<string, string>): void {
  for (const [system, storePath] of Object.entries(targets)) {
    if (!context.hasStorePathClosure(storePath)) {
      throw new FerryError('MISSING_STORE_PATH', `config ${configId}: target ${system}=${storePath} is no longer on the coordinator (collected by ferry gc); submit a new config`);
    }
  }
}

/** Refuses (FORBIDDEN, naming the roles) an actor whose role is not one of `roles`. */
export function allow(context: CommandContext, ...roles: (Role | 'coordinator')[]): void {
  if (!roles.includes(context.actor.role)) {
    throw new FerryError('FORBIDDEN', `role '${context.actor.role}' may not do this (needs ${roles.join(' or ')})`);
  }
}

/** `input` parsed with `schema`; refuses (INVALID, naming the field) what it does not accept. */
export function parse<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const result = schema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new FerryError('INVALID', `${issue.path.join('.') || 'input'}: ${issue.message}`);
  }
  return result.data;
}

/**
 * Whether two JSON values have the same canonical JSON (objects as key sets,
 * properties whose value is undefined left out), without encoding either:
 * an agent's periodic facts report is compared with the stored ones on
 * every report. Iterative (a stack of pairs still to compare), because the
 * stored facts may nest deeper than any recursion survives (facts recorded
 * before MAX_FACTS_DEPTH existed; see protocol/json-bounds.ts). Both values
 * must be acyclic, as JSON values are.
 */
export function sameJson(a: unknown, b: unknown): boolean {
  const pending: unknown[] = [a, b];
  while (pending.length > 0) {
    const right = pending.pop();
    const left = pending.pop();
    if (left === right) continue;
    if (typeof left !== 'object' || typeof right !== 'object' || left === null || right === null) return false;
    if (Array.isArray(left) || Array.isArray(right)) {
      if (!Array.isArray(left) || !Array.isArray(right) || left.length !== right.length) return false;
      for (let i = 0; i < left.length; i++) pending.push(left[i], right[i]);
      continue;
    }
    const leftObject = left as Record<string, unknown>;
    const rightObject = right as Record<string, unknown>;
    let defined = 0;
    for (const key of Object.keys(leftObject)) {
      if (leftObject[key] === undefined) continue;
      defined++;
      if (!Object.hasOwn(rightObject, key)) return false;
      pending.push(leftObject[key], rightObject[key]);
    }
    for (const key of Object.keys(rightObject)) if (rightObject[key] !== undefined) defined--;
    if (defined !== 0) return false;
  }
  return true;
}

function agentOf(context: CommandContext, agentId: string) {
  const agent = context.state.get('agents', agentId);
  if (!agent) throw new FerryError('NOT_FOUND', `no agent ${agentId}`);
  return agent;
}

// --- keys -----------------------------------------------------------------


/**
 * Registers a key with a role. Refuses (CONFLICT) a key that is already
 * registered, an agent's key, and a key that was revoked: revocation is
 * final. A revoked key may have leaked, and re-adding it would silently hand
 * whoever holds it the role again; the refusal names the audit event that
 * revoked it, and the way forward is a new key.
 */
export function addKey(context: CommandContext, input: unknown): EventDraft<'key.add'> {
  allow(context, 'admin', 'coordinator');
  const { keyId, role, label } = parse(AddKeyInput, input);
  const existing = context.state.get('keys', keyId);
  if (existing?.revoked) {
    // Keys revoked before revocations were dated (the migration back-fills them from the log) have no seq.
    const when = existing.revokedSeq === null ? 'earlier' : `at audit event #${existing.revokedSeq}`;
    throw new FerryError('CONFLICT', `key ${keyId} (${existing.role}) was revoked ${when}; revocation is final: register a new key instead`);
  }
  if (existing) throw new FerryError('CONFLICT', `key ${keyId} is already registered as ${existing.role}`);
  if (context.state.get('agents', keyId)) throw new FerryError('CONFLICT', `key ${keyId} belongs to an agent`);
  // A relay's key stays a relay's: registered as a key, it would be read as that role (keys are looked up first).
  if (context.state.get('relays', keyId)) throw new FerryError('CONFLICT', `key ${keyId} belongs to a relay`);
  return { action: 'key.add', subject: keyId, payload: { keyId, role, label } };
}

export function revokeKey(context: CommandContext, input: unknown): EventDraft<'key.revoke'> {
  allow(context, 'admin');
  const { keyId } = parse(RevokeKeyInput, input);
  const key = context.state.get('keys', keyId);
  if (!key || key.revoked) throw new FerryError('NOT_FOUND', `no active key ${keyId}`);
  if (keyId === context.actor.keyId) throw new FerryError('CONFLICT', 'refusing to revoke the key making this request');
  return { action: 'key.revoke', subject: keyId, payload: { keyId: keyId as KeyId } };
}

// --- bootstrap tokens -------------------------------------------------------


export function hashTokenSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Returns the event and the token string, which is shown once and stored only hashed. */
export function createToken(context: CommandContext, input: unknown): { draft: EventDraft<'token.create'>; token: string } {
  allow(context, 'admin', 'operator');
  const options = parse(CreateTokenInput, input);
  checkTokenPlacement(context, options);
  const tokenId = randomBytes(8).toString('hex');
  const secret = randomBytes(24).toString('base64url');
  return {
    token: `${tokenId}.${secret}`,
    draft: {
      action: 'token.create',
      subject: tokenId,
      payload: {
        tokenId,
        secretHash: hashTokenSecret(secret),
        label: options.label,
        expiresAt: context.now + options.ttlSeconds * 1000,
        uses: options.uses,
        autoApprove: options.autoApprove,
        labels: options.labels,
        // Only when set: agent tokens are recorded as they were before relays.
        ...(options.relay ? { relay: true as const } : {}),
        ...(options.follow !== undefined ? { follow: options.follow } : {}),
        ...(options.pin !== undefined ? { pin: options.pin } : {}),
        ...(options.rule !== undefined ? { rule: options.rule } : {}),
      },
    },
  };
}

/**
 * Refuses (NOT_FOUND) a token naming a graph, config or rule that does not
 * exist, (INVALID) a pin outside the graph, and a rule the token's labels
 * do not match, or that another rule before it would win over: the agents
 * would not be placed by it (labels are what rules select on).
 */
function checkTokenPlacement(context: CommandContext, options: z.output<typeof CreateTokenInput>): void {
  if (options.follow !== undefined && !context.state.get('graphs', options.follow)) throw new FerryError('NOT_FOUND', `no graph '${options.follow}'`);
  if (options.pin !== undefined) {
    const config = context.state.get('configs', options.pin);
    if (!config) throw new FerryError('NOT_FOUND', `no config ${options.pin}`);
    if (config.graph !== options.follow) throw new FerryError('INVALID', `pin: config ${options.pin} is in graph '${config.graph}', not '${options.follow}'`);
  }
  if (options.rule !== undefined) {
    const rule = context.state.get('rules', options.rule);
    if (!rule || rule.removed) throw new FerryError('NOT_FOUND', `no rule '${options.rule}'`);
    const placement = placementFor(orderedRules(context.all('rules')), options.labels);
    if (placement.rule !== options.rule) {
      const why = placement.rule === null ? 'no rule matches them' : `rule '${placement.rule}' comes first and matches them`;
      throw new FerryError('INVALID', `rule: the token's labels ${JSON.stringify(options.labels)} would not be placed by rule '${options.rule}' (${why}); give the labels it selects`);
    }
  }
}

export function revokeToken(context: CommandContext, input: unknown): EventDraft<'token.revoke'> {
  allow(context, 'admin', 'operator');
  const { tokenId } = parse(RevokeTokenInput, input);
  const token = context.state.get('tokens', tokenId);
  if (!token || token.revoked) throw new FerryError('NOT_FOUND', `no active token ${tokenId}`);
  return { action: 'token.revoke', subject: tokenId, payload: { tokenId } };
}

// --- agents -----------------------------------------------------------------


/**
 * Enrolls the agent whose key signed the request (the actor): proves key
 * possession by that signature, spends one use of the token. Refuses an
 * unknown, expired, used-up or revoked token (BAD_TOKEN) and a key that is
 * already enrolled or registered (CONFLICT).
 *
 * The agent's labels are exactly its token's: labels select agents for
 * deployments (`--where labels.k=v`), so only an operator sets them. Labels
 * the agent reports (`facts.labels`) are kept as what they are, facts, and
 * never merged in: a machine must not be able to place itself in another
 * selection by saying so.
 */
export function enrollAgent(context: CommandContext, input: unknown): DraftWithFollowUps {
  const { token, name, type, facts } = parse(EnrollInput, input);
  const agentId = context.actor.keyId;
  const { tokenId, row } = usableToken(context, token, 'agent');
  checkUnenrolled(context, agentId);
  const draft: EventDraft<'agent.enroll'> = {
    action: 'agent.enroll',
    subject: agentId,
    payload: {
      agentId: agentId as KeyId,
      name,
      type,
      tokenId,
      facts,
      labels: row.labels,
      status: row.autoApprove ? 'enrolled' : 'enrolling',
    },
  };
  return { draft, followUps: enrollmentPlacement(context, agentId, row) };
}

/**
 * Where a new agent starts (docs/coordinator.md "Rules"), recorded by the
 * coordinator right after its enrollment: the graph (and pin) its token
 * names, as an explicit assignment would; else where the rules put an
 * agent with its token's labels (nothing when no rule matches). A graph or
 * config the token names that no longer exists is left out (the token
 * still enrolls; the agent then waits for an assignment).
 */
function enrollmentPlacement(context: CommandContext, agentId: string, token: TokenRow): FollowUp[] {
  const id = agentId as KeyId;
  if (token.follow !== null) {
    if (!context.state.get('graphs', token.follow)) return [];
    const assign: FollowUp = { by: 'coordinator', draft: { action: 'agent.assign', subject: agentId, payload: { agentId: id, graph: token.follow } } };
    if (token.pin === null || !context.state.get('configs', token.pin)) return [assign];
    return [assign, { by: 'coordinator', draft: { action: 'agent.pin', subject: agentId, payload: { agentId: id, configId: token.pin } } }];
  }
  const placement = placementFor(orderedRules(context.all('rules')), token.labels);
  return placement.rule === null ? [] : [{ by: 'coordinator', draft: placeDraft(agentId, placement) }];
}

/**
 * The token `token` names, if its secret matches and it may enroll one more
 * `kind` now; refuses (BAD_TOKEN) anything else, a relay token for an agent
 * and an agent token for a relay included.
 */
function usableToken(context: CommandContext, token: string, kind: 'agent' | 'relay'): { tokenId: string; row: TokenRow } {
  const [tokenId, secret] = token.split('.') as [string, string];
  const row = context.state.get('tokens', tokenId);
  const presented = Buffer.from(hashTokenSecret(secret), 'hex');
  if (!row || !timingSafeEqual(presented, Buffer.from(row.secretHash, 'hex'))) throw new FerryError('BAD_TOKEN', 'unknown bootstrap token');
  if (row.revoked) throw new FerryError('BAD_TOKEN', `bootstrap token ${tokenId} was revoked`);
  if (row.expiresAt <= context.now) throw new FerryError('BAD_TOKEN', `bootstrap token ${tokenId} expired`);
  if (row.usesLeft < 1) throw new FerryError('BAD_TOKEN', `bootstrap token ${tokenId} has no uses left`);
  if (row.relay !== (kind === 'relay')) throw new FerryError('BAD_TOKEN', `bootstrap token ${tokenId} enrolls ${row.relay ? 'relays' : 'agents'}, not ${kind}s`);
  return { tokenId, row };
}

/** Refuses (CONFLICT) a key that is an agent, a relay or a registered key already. */
function checkUnenrolled(context: CommandContext, keyId: string): void {
  const existing = context.state.get('agents', keyId);
  if (existing) throw new FerryError('CONFLICT', `agent ${keyId} is already ${existing.status}`);
  const relay = context.state.get('relays', keyId);
  if (relay) throw new FerryError('CONFLICT', `key ${keyId} is a relay (${relay.status})`);
  if (context.state.get('keys', keyId)) throw new FerryError('CONFLICT', `key ${keyId} is an admin key, not an agent`);
}

// --- site relays --------------------------------------------------------------

/**
 * Enrolls the relay whose key signed the request, with a relay token (an
 * agent token is refused, BAD_TOKEN, and a relay token never enrolls an
 * agent). A relay is enrolled at once: the operator chose to make a relay
 * token. It serves nobody until `relays assign`.
 */
export function enrollRelay(context: CommandContext, input: unknown): EventDraft<'relay.enroll'> {
  const { token, name, url, fingerprint } = parse(RelayEnrollInput, input);
  const relayId = context.actor.keyId;
  const { tokenId } = usableToken(context, token, 'relay');
  checkUnenrolled(context, relayId);
  return { action: 'relay.enroll', subject: relayId, payload: { relayId: relayId as KeyId, name, tokenId, url, fingerprint } };
}

function relayOf(context: CommandContext, relayId: string): RelayRow {
  const relay = context.state.get('relays', relayId);
  if (!relay) throw new FerryError('NOT_FOUND', `no relay ${relayId}`);
  return relay;
}

/**
 * Sets which agents use a relay. `checkWhere` parses the clauses (the
 * caller's: coordinator/api/queries.ts parseWhere) and refuses what a relay
 * may not select on. Refuses (CONFLICT) a revoked relay.
 */
export function assignRelay(context: CommandContext, input: unknown, checkWhere: (where: readonly string[]) => void): EventDraft<'relay.assign'> {
  allow(context, 'admin', 'operator');
  const { relayId, where } = parse(AssignRelayInput, input);
  if (relayOf(context, relayId).status === 'revoked') throw new FerryError('CONFLICT', `relay ${relayId} is revoked`);
  checkWhere(where);
  return { action: 'relay.assign', subject: relayId, payload: { relayId, where } };
}

export function revokeRelay(context: CommandContext, input: unknown): EventDraft<'relay.revoke'> {
  allow(context, 'admin', 'operator');
  const { relayId } = parse(RelayRefInput, input);
  if (relayOf(context, relayId).status === 'revoked') throw new FerryError('CONFLICT', `relay ${relayId} is already revoked`);
  return { action: 'relay.revoke', subject: relayId, payload: { relayId } };
}

/**
 * Sets where a relay fetches from before the coordinator: another relay
 * (`upstream`), or null. Refuses (INVALID) the relay itself, (NOT_FOUND) an
 * unknown relay, (CONFLICT) a revoked one on either side, one that would
 * close a cycle (the upstream fetches, directly or not, from this relay),
 * and one that would make a chain of more than MAX_RELAY_CHAIN relays
 * (counting this relay's own downstream relays below it).
 */
export function setRelayUpstream(context: CommandContext, input: unknown): EventDraft<'relay.upstream'> {
  allow(context, 'admin', 'operator');
  const { relayId, upstream } = parse(RelayUpstreamInput, input);
  if (relayOf(context, relayId).status === 'revoked') throw new FerryError('CONFLICT', `relay ${relayId} is revoked`);
  if (upstream !== null) {
    if (upstream === relayId) throw new FerryError('INVALID', `relay ${relayId} cannot fetch from itself`);
    if (relayOf(context, upstream).status === 'revoked') throw new FerryError('CONFLICT', `upstream relay ${upstream} is revoked`);
    // The chain above the new upstream (it included), walked to the coordinator: this relay in it is a cycle.
    const above: string[] = [];
    for (let at: string | null = upstream; at !== null; at = context.state.get('relays', at)?.upstream ?? null) {
      if (at === relayId) throw new FerryError('CONFLICT', `relay ${upstream} fetches from relay ${relayId} already (${[...above, at].join(' → ')}): that would be a cycle`);
      if (above.includes(at) || above.length > MAX_RELAY_CHAIN) break;
      above.push(at);
    }
    const chain = above.length + downstreamHeight(context, relayId);
    if (chain > MAX_RELAY_CHAIN) throw new FerryError('CONFLICT', `that would make a chain of ${chain} relays, more than ${MAX_RELAY_CHAIN}`);
  }
  return { action: 'relay.upstream', subject: relayId, payload: { relayId: relayId as KeyId, upstream: upstream as KeyId | null } };
}

/** The relays in the longest chain that ends at `relayId` (it included): those fetching from it, from them, and so on. */
function downstreamHeight(context: CommandContext, relayId: string, depth = 0): number {
  if (depth > MAX_RELAY_CHAIN) return depth;
  let below = 0;
  for (const relay of context.all('relays')) {
    if (relay.upstream === relayId && relay.status === 'enrolled') below = Math.max(below, downstreamHeight(context, relay.id, depth + 1));
  }
  return 1 + below;
}

export function decideAgent(context: CommandContext, input: unknown, decision: 'approve' | 'reject' | 'revoke'): EventDraft<'agent.approve' | 'agent.reject' | 'agent.revoke'> {
  allow(context, 'admin', 'operator');
  const { agentId } = parse(AgentRefInput, input);
  const agent = agentOf(context, agentId);
  if (decision !== 'revoke' && agent.status !== 'enrolling') throw new FerryError('CONFLICT', `agent ${agentId} is ${agent.status}, not waiting for approval`);
  if (decision === 'revoke' && agent.status === 'revoked') throw new FerryError('CONFLICT', `agent ${agentId} is already revoked`);
  return { action: `agent.${decision}`, subject: agentId, payload: { agentId: agentId as KeyId } };
}


/** An agent reports its facts; returns undefined (no event) when they did not change. */
export function reportFacts(context: CommandContext, input: unknown, hlc: string): EventDraft<'agent.facts'> | undefined {
  allow(context, 'agent');
  const { facts } = parse(ReportFactsInput, input);
  const agent = agentOf(context, context.actor.keyId);
  const current = context.state.get('agentFacts', `${agent.id}#${agent.factsRevision}`);
  if (current && sameJson(current.facts, facts)) return undefined;
  return { action: 'agent.facts', subject: agent.id, payload: { agentId: agent.id as KeyId, facts, hlc } };
}

/**
 * Makes an agent follow a graph (null: none). With `stop` (graph null
 * only), the agent is also told to stop: run its config's deactivate
 * command and leave no generation active. Refuses (CONFLICT) a stop of a
 * pinned agent: its pin stays its desired config, so it would not stop.
 */
export function assignAgent(context: CommandContext, input: unknown): EventDraft<'agent.assign'> {
  allow(context, 'admin', 'operator');
  const { agentId, graph, stop } = parse(AssignAgentInput, input);
  const agent = agentOf(context, agentId);
  if (graph !== null && !context.state.get('graphs', graph)) throw new FerryError('NOT_FOUND', `no graph '${graph}'`);
  if (stop && agent.pinnedConfig) throw new FerryError('CONFLICT', `agent ${agentId} is pinned to ${agent.pinnedConfig}: unpin it first (agents pin ${agentId} none), or it keeps running that`);
  // Only when set: assignments without it are recorded exactly as before stops existed.
  return { action: 'agent.assign', subject: agentId, payload: { agentId: agentId as KeyId, graph, ...(stop ? { stop: true as const } : {}) } };
}

/** Pins an agent to a config (null: follow its graph). Refuses a config that does not exist (NOT_FOUND) or whose closure a GC collected (MISSING_STORE_PATH), and pins during a GC (GC_CONFLICT). */
export function pinAgent(context: CommandContext, input: unknown): EventDraft<'agent.pin'> {
  allow(context, 'admin', 'operator');
  const { agentId, configId } = parse(PinAgentInput, input);
  agentOf(context, agentId);
  if (configId !== null) {
    const config = context.state.get('configs', configId);
    if (!config) throw new FerryError('NOT_FOUND', `no config ${configId}`);
    outsideGarbageCollection(context);
    requireClosures(context, configId, config.body.targets);
  }
  return { action: 'agent.pin', subject: agentId, payload: { agentId: agentId as KeyId, configId } };
}

/**
 * Tells an agent to try its desired config again, though it failed there
 * once: the agent refuses a config that failed (activation, health check,
 * probation) until its desired config changes, and that refusal lives on
 * the agent (agent.json), which alone knows what it refused and why. The
 * retry reaches it in its signed desired answer (the event's seq, as a
 * directive), waking its watch. Refuses (CONFLICT) an agent that is not
 * enrolled.
 */
export function retryAgent(context: CommandContext, input: unknown): EventDraft<'agent.retry'> {
  allow(context, 'admin', 'operator');
  const { agentId } = parse(AgentRefInput, input);
  const agent = agentOf(context, agentId);
  if (agent.status !== 'enrolled') throw new FerryError('CONFLICT', `agent ${agentId} is ${agent.status}, not enrolled`);
  return { action: 'agent.retry', subject: agentId, payload: { agentId: agentId as KeyId } };
}


/**
 * An agent reports where it stands: the config it names becomes its
 * `currentConfig` when the phase is `active`. Refuses (NOT_FOUND) a config
 * that does not exist. A config the coordinator did not assign to this
 * agent is recorded all the same — an agent may legitimately run one from
 * an offline bundle, and the report is what the agent says, shown as such —
 * but a report grants nothing: which closures an agent may read follows
 * only from the coordinator's own decisions (ClosureAccess.configsOf in
 * api/data-operations.ts), never from `currentConfig`.
 */
export function reportStatus(context: CommandContext, input: unknown): EventDraft<'agent.report'> {
  allow(context, 'agent');
  const { configId, phase, error, source, forced, running } = parse(ReportStatusInput, input);
  const agent = agentOf(context, context.actor.keyId);
  for (const named of [configId, running ?? null]) {
    if (named !== null && !context.state.get('configs', named)) throw new FerryError('NOT_FOUND', `no config ${named}`);
  }
  // Only a bundle's report carries the fields, only a rollback `running`: other reports' events stay exactly as before.
  const provenance = source ? { source, forced: forced ?? false } : {};
  return { action: 'agent.report', subject: agent.id, payload: { agentId: agent.id as KeyId, configId, phase, error, ...provenance, ...(running !== undefined ? { running } : {}) } };
}

/**
 * An agent reports a health transition of the config it runs. Returns
 * undefined (no event) when the coordinator already holds that health for
 * that config. Refuses (NOT_FOUND) a config that does not exist and
 * (CONFLICT) one the agent does not run by its own last report: health is
 * said of what runs, and a report of another config is stale or confused.
 * Rate limiting is the caller's (api/health-reports.ts): it decides whether
 * a transition is recorded now.
 */
export function reportHealth(context: CommandContext, input: unknown): EventDraft<'agent.health'> | undefined {
  allow(context, 'agent');
  const { configId, health, reason, suppressed } = parse(ReportHealthInput, input);
  const agent = agentOf(context, context.actor.keyId);
  if (!context.state.get('configs', configId)) throw new FerryError('NOT_FOUND', `no config ${configId}`);
  if (agent.currentConfig !== configId) throw new FerryError('CONFLICT', `config ${configId} is not the one this agent reported active (${agent.currentConfig ?? 'none'})`);
  if (agent.healthConfig === configId && agent.health === health) return undefined;
  return { action: 'agent.health', subject: agent.id, payload: { agentId: agent.id as KeyId, configId, health, reason, suppressed } };
}

/**
 * The coordinator records that an agent went offline or came back
 * (api/presence-events.ts decides when). Returns undefined (no event) when
 * the log already says so: an agent never recorded offline is online.
 * Refuses (FORBIDDEN) any actor but the coordinator itself: presence is
 * what the coordinator observed, never what a client claims.
 */
export function recordPresence(context: CommandContext, input: { agentId: string; presence: RecordedPresence; lastSeen: number | null }): EventDraft<'agent.presence'> | undefined {
  allow(context, 'coordinator');
  const agent = agentOf(context, input.agentId);
  if ((agent.recordedPresence ?? 'online') === input.presence) return undefined;
  return { action: 'agent.presence', subject: agent.id, payload: { agentId: agent.id as KeyId, presence: input.presence, lastSeen: input.lastSeen } };
}

// --- configs and graphs -----------------------------------------------------

export { configId, configSigningMessage };


/**
 * Submits a config signed by its author (the actor). The body's parents
 * name the head the author saw: if the graph's head moved since, refuses
 * with HEAD_MOVED naming both, unless `force` (recorded as forced). Refuses
 * targets whose closure the coordinator does not hold.
 */
export function submitConfig(context: CommandContext, input: unknown): EventDraft<'config.submit'> {
  allow(context, 'admin', 'operator');
  const { body, signature, force } = parse(SubmitConfigInput, input);
  outsideGarbageCollection(context);
  if (body.author !== context.actor.keyId) throw new FerryError('BAD_SIGNATURE', 'the config author must be the key submitting it');
  const id = configId(body);
  if (!ed25519Verify(publicKeyOf(body.author), configSigningMessage(id), Buffer.from(signature, 'base64'))) {
    throw new FerryError('BAD_SIGNATURE', `the signature of config ${id} is not its author's`);
  }
  if (context.state.get('configs', id)) throw new FerryError('CONFLICT', `config ${id} already exists`);
  const head = context.state.get('graphs', body.graph)?.head ?? null;
  const seen = body.parents[0] ?? null;
  if (seen !== head && !force) {
    throw new FerryError('HEAD_MOVED', `graph '${body.graph}' head is ${head ?? '(none)'}, but this config's parent is ${seen ?? '(none)'}; resubmit on the new head or use --force`);
  }
  for (const parent of body.parents) if (!context.state.get('configs', parent)) throw new FerryError('NOT_FOUND', `parent config ${parent} does not exist`);
  for (const [system, storePath] of Object.entries(body.targets)) {
    if (!context.hasStorePathClosure(storePath)) {
      throw new FerryError('MISSING_STORE_PATH', `target ${system}=${storePath}: the coordinator does not hold it (or its whole closure); push it first`);
    }
  }
  return { action: 'config.submit', subject: body.graph, payload: { id, body, signature, previousHead: head, forced: seen !== head } };
}

export function rollbackGraph(context: CommandContext, input: unknown): EventDraft<'graph.rollback'> {
  allow(context, 'admin', 'operator');
  const { graph, to } = parse(RollbackGraphInput, input);
  const row = context.state.get('graphs', graph);
  if (!row) throw new FerryError('NOT_FOUND', `no graph '${graph}'`);
  const head = context.state.get('configs', row.head)!;
  const target = to ?? head.parents[0];
  if (!target) throw new FerryError('CONFLICT', `the head of '${graph}' has no parent to roll back to`);
  const config = context.state.get('configs', target);
  if (!config || config.graph !== graph) throw new FerryError('NOT_FOUND', `config ${target} is not in graph '${graph}'`);
  if (target === row.head) throw new FerryError('CONFLICT', `config ${target} is already the head`);
  outsideGarbageCollection(context);
  requireClosures(context, target, config.body.targets);
  return { action: 'graph.rollback', subject: graph, payload: { graph, from: row.head, to: target } };
}

// --- retention ----------------------------------------------------------------

/**
 * Records a coordinator GC (coordinator/retention.ts ran it: the sweep is
 * in the castore, outside the transaction). Admins only.
 */
export function recordGarbageCollection(context: CommandContext, counts: PayloadOf<'store.gc'>): EventDraft<'store.gc'> {
  allow(context, 'admin');
  return { action: 'store.gc', subject: 'castore', payload: counts };
}

// --- alerts (webhooks) -------------------------------------------------------

/** At most this many alerts are registered at once: each adds deliveries (and an outbox share) per happening. */
export const MAX_ALERTS = 64;

/**
 * Registers a webhook (admins only). The event records the URL's origin
 * and its SHA-256, not the URL (see EVENT_PAYLOADS['alert.add']); the
 * caller stores the URL, returned beside the event, in the same
 * transaction (Decision.publish). Refuses (INVALID) what AddAlertInput
 * refuses, (CONFLICT) a URL already registered (naming its alert) and an
 * alert beyond MAX_ALERTS. The `--where` clauses are checked for size
 * here; their syntax is the API's to check (api/queries.ts parseWhere),
 * the matcher's to apply. `alerts`: every row of the alerts table (a
 * StateStore reads by id only), read in the command's transaction.
 */
export function addAlert(context: CommandContext, input: unknown, alerts: readonly AlertRow[]): { draft: EventDraft<'alert.add'>; url: string } {
  allow(context, 'admin');
  const { url, on, where } = parse(AddAlertInput, input);
  const urlDigest = createHash('sha256').update(url).digest('hex');
  const active = alerts.filter((alert) => !alert.removed);
  const same = active.find((alert) => alert.urlDigest === urlDigest);
  if (same) throw new FerryError('CONFLICT', `alert ${same.id} already posts to this URL (remove it first to change its kinds or --where)`);
  if (active.length >= MAX_ALERTS) throw new FerryError('CONFLICT', `${active.length} alerts are registered, the most there may be (${MAX_ALERTS}): remove one first`);
  const alertId = randomBytes(8).toString('hex') as AlertId;
  return { url, draft: { action: 'alert.add', subject: alertId, payload: { alertId, kinds: on, where, target: new URL(url).origin, urlDigest } } };
}

/** Removes a webhook (admins only); its queued deliveries are dropped. Refuses (NOT_FOUND) an id that is no registered alert. */
export function removeAlert(context: CommandContext, input: unknown): EventDraft<'alert.remove'> {
  allow(context, 'admin');
  const { alertId } = parse(RemoveAlertInput, input);
  const alert = context.state.get('alerts', alertId);
  if (!alert || alert.removed) throw new FerryError('NOT_FOUND', `no alert ${alertId}`);
  return { action: 'alert.remove', subject: alertId, payload: { alertId } };
}
