/**
 * Commands of fleet control (docs/coordinator.md "Rules"): adding,
 * removing and ordering targeting rules, setting operator labels, and
 * returning an agent to rule control. Each records its own event (by the
 * operator) and, in the same transaction, one agent.place per agent whose
 * placement that changes (by the coordinator: rules.ts). Operators and
 * admins only: labels and rules decide what machines run.
 */
import { FerryError } from '../../protocol/errors.js';
import type { KeyId } from '../../protocol/identity.js';
import { AddRuleInput, AgentRefInput, LabelAgentsInput, MoveRuleInput, RuleRefInput } from '../../protocol/api/inputs.js';
import { LabelsSchema } from '../../protocol/api/fleet.js';
import { MAX_RULES } from '../../protocol/rules.js';
import { allow, parse, sameJson, type CommandContext } from './commands.js';
import type { DraftWithFollowUps, EventDraft, FollowUp } from './events.js';
import { orderedRules, parseRuleWhere, placeDraft, placementFollowUps, placementFor } from './rules.js';
import type { AgentRow, RuleRow } from './state.js';

/** The active rules' names, first tried first. */
function currentOrder(context: CommandContext): string[] {
  return context
    .all('rules')
    .filter((rule) => !rule.removed)
    .sort((a, b) => a.position - b.position)
    .map((rule) => rule.id);
}

/** Where `name` goes in `order` (without it): before `before`, at `position`, else last. Refuses (NOT_FOUND) an unknown `before`. */
function insertAt(order: readonly string[], name: string, where: { before?: string; position?: number }): string[] {
  const rest = order.filter((other) => other !== name);
  let index = rest.length;
  if (where.before !== undefined) {
    if (where.before === name) throw new FerryError('INVALID', `before: rule '${name}' cannot go before itself`);
    index = rest.indexOf(where.before);
    if (index < 0) throw new FerryError('NOT_FOUND', `before: no rule '${where.before}'`);
  } else if (where.position !== undefined) {
    index = Math.min(where.position, rest.length);
  }
  return [...rest.slice(0, index), name, ...rest.slice(index)];
}

/** The rules as they are after a change (`rows` replaced by id), parsed and ordered by `order`. */
function rulesAfter(context: CommandContext, order: readonly string[], changed?: RuleRow) {
  const rows = new Map(context.all('rules').map((row) => [row.id, row]));
  if (changed) rows.set(changed.id, changed);
  const positioned = order.map((name, position) => ({ ...rows.get(name)!, position, removed: false }));
  return orderedRules(positioned);
}

function ruleOf(context: CommandContext, name: string): RuleRow {
  const rule = context.state.get('rules', name);
  if (!rule || rule.removed) throw new FerryError('NOT_FOUND', `no rule '${name}'`);
  return rule;
}

/**
 * Adds a rule. Refuses (CONFLICT) a name in use and a rule beyond
 * MAX_RULES, (NOT_FOUND) a graph or pinned config that does not exist or
 * an unknown `before`, (INVALID) a pin outside the graph and a `--where`
 * that does not parse or names anything but operator labels. Every agent
 * under rule control whose placement changes gets an agent.place.
 */
export function addRule(context: CommandContext, input: unknown): DraftWithFollowUps {
  allow(context, 'admin', 'operator');
  const { name, where, follow, pin, before, position } = parse(AddRuleInput, input);
  parseRuleWhere(where);
  const existing = context.state.get('rules', name);
  if (existing && !existing.removed) throw new FerryError('CONFLICT', `rule '${name}' already exists (remove it first, or move it)`);
  const order = currentOrder(context);
  if (order.length >= MAX_RULES) throw new FerryError('CONFLICT', `${order.length} rules exist, the most there may be (${MAX_RULES}): remove one first`);
  if (!context.state.get('graphs', follow)) throw new FerryError('NOT_FOUND', `no graph '${follow}'`);
  if (pin !== null) {
    const config = context.state.get('configs', pin);
    if (!config) throw new FerryError('NOT_FOUND', `no config ${pin}`);
    if (config.graph !== follow) throw new FerryError('INVALID', `pin: config ${pin} is in graph '${config.graph}', not '${follow}'`);
  }
  const newOrder = insertAt(order, name, { before, position });
  const row: RuleRow = { id: name, where, follow, pin, position: -1, removed: false, createdSeq: 0, updatedSeq: 0 };
  const draft: EventDraft<'rule.add'> = { action: 'rule.add', subject: name, payload: { name, where, follow, pin, order: newOrder } };
  return { draft, followUps: placementFollowUps(context.all('agents'), rulesAfter(context, newOrder, row)) };
}

/** Removes a rule (NOT_FOUND: no such rule). The agents it placed go where the remaining rules put them (nowhere, if none matches). */
export function removeRule(context: CommandContext, input: unknown): DraftWithFollowUps {
  allow(context, 'admin', 'operator');
  const { name } = parse(RuleRefInput, input);
  ruleOf(context, name);
  const order = currentOrder(context).filter((other) => other !== name);
  const draft: EventDraft<'rule.remove'> = { action: 'rule.remove', subject: name, payload: { name, order } };
  return { draft, followUps: placementFollowUps(context.all('agents'), rulesAfter(context, order)) };
}

/** Moves a rule before another or to a position; returns undefined (no event) when that is where it is. */
export function moveRule(context: CommandContext, input: unknown): DraftWithFollowUps | undefined {
  allow(context, 'admin', 'operator');
  const { name, before, position } = parse(MoveRuleInput, input);
  ruleOf(context, name);
  const order = currentOrder(context);
  const newOrder = insertAt(order, name, { before, position });
  if (sameJson(order, newOrder)) return undefined;
  const draft: EventDraft<'rule.move'> = { action: 'rule.move', subject: name, payload: { name, order: newOrder } };
  return { draft, followUps: placementFollowUps(context.all('agents'), rulesAfter(context, newOrder)) };
}

/**
 * Sets and removes operator labels of `agentIds` (the caller resolved a
 * `--where` into them, or they were named: LabelAgentsInput). One
 * agent.label per agent whose labels change, then the agent.place events
 * the new labels call for. Refuses (NOT_FOUND) an unknown agent and
 * (INVALID) a result beyond LabelsSchema's bounds; undefined (no event)
 * when no label changes.
 */
export function labelAgents(context: CommandContext, input: unknown, agentIds: readonly string[]): DraftWithFollowUps | undefined {
  allow(context, 'admin', 'operator');
  const { set, unset } = parse(LabelAgentsInput, input);
  const relabelled = new Map<string, Record<string, string>>();
  const agents: AgentRow[] = [];
  for (const agentId of new Set(agentIds)) {
    const agent = context.state.get('agents', agentId);
    if (!agent) throw new FerryError('NOT_FOUND', `no agent ${agentId}`);
    const labels: Record<string, string> = { ...agent.labels, ...set };
    for (const key of unset) delete labels[key];
    if (sameJson(labels, agent.labels)) continue;
    const checked = LabelsSchema.safeParse(labels);
    if (!checked.success) throw new FerryError('INVALID', `agent ${agentId}: ${checked.error.issues[0]!.message}`);
    relabelled.set(agent.id, labels);
    agents.push(agent);
  }
  if (agents.length === 0) return undefined;
  const drafts: EventDraft<'agent.label'>[] = agents.map((agent) => ({ action: 'agent.label', subject: agent.id, payload: { agentId: agent.id as KeyId, labels: relabelled.get(agent.id)! } }));
  const placements = placementFollowUps(agents, orderedRules(context.all('rules')), (agent) => relabelled.get(agent.id)!);
  const followUps: FollowUp[] = [...drafts.slice(1).map((draft): FollowUp => ({ by: 'requester', draft })), ...placements];
  return { draft: drafts[0]!, followUps };
}

/**
 * Returns an agent an operator assigned or pinned to rule control
 * (`agents assign AGENT --rules`): one agent.place, by the operator, with
 * where the rules put it now. Undefined (no event) when it is under rule
 * control already. Refuses (NOT_FOUND) an unknown agent.
 */
export function followRules(context: CommandContext, input: unknown): EventDraft<'agent.place'> | undefined {
  allow(context, 'admin', 'operator');
  const { agentId } = parse(AgentRefInput, input);
  const agent = context.state.get('agents', agentId);
  if (!agent) throw new FerryError('NOT_FOUND', `no agent ${agentId}`);
  if (agent.control === 'rules') return undefined;
  return placeDraft(agent.id, placementFor(orderedRules(context.all('rules')), agent.labels));
}
