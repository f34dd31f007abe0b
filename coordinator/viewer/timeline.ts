/**
 * The timeline: one small entry per audit event (who, what, when, which
 * agent and graph it is about, a one-line summary) and the filters the
 * viewer and the CLI apply to it. Entries are built from events as stored,
 * so a tampered or malformed row still gets an entry (the viewer must show
 * it); nothing here trusts the payload's shape.
 */
import type { TimelineEntry } from '../../protocol/api/viewer-views.js';
import type { AuditEvent } from '../domain/events.js';

/** What the timeline can be narrowed to; every given field must match. */
export interface TimelineFilter {
  /** An actor key (or its first characters), or a role (`admin`, `agent`, `coordinator`…). */
  actor?: string;
  /** An action (`agent.report`), or a family (`agent` or `agent.` for every agent.* action). */
  action?: string;
  /** An agent id (or its first characters) or an agent name. */
  agent?: string;
  /** A graph name. */
  graph?: string;
  /** Wall time range, ms since the epoch, inclusive. */
  from?: number;
  to?: number;
  /** Case-insensitive text the payload JSON must contain. */
  text?: string;
}

function field(value: unknown, ...path: string[]): unknown {
  let current = value;
  for (const key of path) {
    if (current === null || typeof current !== 'object' || Array.isArray(current)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

function text(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** The first 12 characters of an id, as the CLI shows them. */
export function shortId(id: string | null | undefined): string {
  return id ? id.slice(0, 12) : '-';
}

function summarize(event: AuditEvent, agentName: (agentId: string) => string | undefined): string {
  const p = event.payload;
  const agentId = text(field(p, 'agentId'));
  const agent = agentId ? `agent ${agentName(agentId) ?? shortId(agentId)}` : 'agent ?';
  const str = (...path: string[]): string => {
    const value = field(p, ...path);
    return value === undefined || value === null ? '-' : String(value);
  };
  switch (event.action) {
    case 'coordinator.init':
      return `coordinator '${str('name')}' initialised`;
    case 'key.add':
      return `key ${shortId(text(field(p, 'keyId')))} added as ${str('role')}${text(field(p, 'label')) ? ` (${str('label')})` : ''}`;
    case 'key.revoke':
      return `key ${shortId(text(field(p, 'keyId')))} revoked`;
    case 'token.create':
      return `token ${str('tokenId')} created: ${str('uses')} use(s)${field(p, 'autoApprove') === true ? ', auto-approve' : ''}`;
    case 'token.revoke':
      return `token ${str('tokenId')} revoked`;
    case 'agent.enroll':
      return `agent ${str('name')} enrolled (${str('status')}) with token ${str('tokenId')}`;
    case 'agent.approve':
      return `${agent} approved`;
    case 'agent.reject':
      return `${agent} rejected`;
    case 'agent.revoke':
      return `${agent} revoked`;
    case 'agent.facts':
      return `${agent} reported new facts (${str('facts', 'system')}, ${str('facts', 'hostname')})`;
    case 'agent.assign':
      return field(p, 'graph') === null ? `${agent} unassigned` : `${agent} assigned to graph ${str('graph')}`;
    case 'agent.pin':
      return field(p, 'configId') === null ? `${agent} unpinned` : `${agent} pinned to config ${shortId(text(field(p, 'configId')))}`;
    case 'agent.label': {
      const labels = field(p, 'labels');
      const shown = labels !== null && typeof labels === 'object' ? Object.entries(labels as Record<string, unknown>).map(([k, v]) => `${k}=${String(v)}`).join(', ') : '-';
      return `${agent} labels now ${shown.length > 160 ? `${shown.slice(0, 160)}…` : shown || '(none)'}`;
    }
    case 'agent.place': {
      const rule = text(field(p, 'rule'));
      if (rule === null) return `${agent} placed by the rules: none matches, follows nothing`;
      const pin = text(field(p, 'configId'));
      return `${agent} placed by rule ${rule}: follows graph ${str('graph')}${pin ? `, pinned to config ${shortId(pin)}` : ''}`;
    }
    case 'rule.add': {
      const where = field(p, 'where');
      const clauses = Array.isArray(where) ? (where.length === 0 ? 'every agent' : where.map(String).join(' ')) : '?';
      const pin = text(field(p, 'configId')) ?? text(field(p, 'pin'));
      return `rule ${str('name')} added: ${clauses.slice(0, 160)} → graph ${str('follow')}${pin ? ` pinned to ${shortId(pin)}` : ''}`;
    }
    case 'rule.remove':
      return `rule ${str('name')} removed`;
    case 'rule.move': {
      const order = field(p, 'order');
      return `rule ${str('name')} moved; order now ${Array.isArray(order) ? order.map(String).join(', ').slice(0, 160) : '?'}`;
    }
    case 'param.set':
    case 'param.unset': {
      const changed = event.action === 'param.set' ? Object.keys((field(p, 'values') ?? {}) as Record<string, unknown>) : ((field(p, 'keys') ?? []) as unknown[]).map(String);
      return `parameters ${event.action === 'param.set' ? 'set' : 'unset'} in ${event.subject}: ${changed.join(', ').slice(0, 160)}`;
    }
    case 'agent.report': {
      const error = text(field(p, 'error'));
      return `${agent}: ${str('phase')} on config ${shortId(text(field(p, 'configId')))}${error ? ` — ${error.slice(0, 120)}` : ''}`;
    }
    case 'config.submit':
      return `graph ${str('body', 'graph')}: config ${shortId(text(field(p, 'id')))} submitted${field(p, 'forced') === true ? ' (forced)' : ''}: ${JSON.stringify(str('body', 'message').slice(0, 80))}`;
    case 'graph.rollback':
      return `graph ${str('graph')} rolled back ${shortId(text(field(p, 'from')))} → ${shortId(text(field(p, 'to')))}`;
    case 'store.push': {
      const roots = field(p, 'roots');
      return `pushed ${Array.isArray(roots) ? roots.length : '?'} root(s), ${str('registeredCount')} new store path(s)`;
    }
    case 'rollout.policy': {
      const batches = field(p, 'policy', 'batches');
      if (field(p, 'policy') === null) return `graph ${str('graph')}: rollout policy removed`;
      const list = Array.isArray(batches) ? batches.map((b) => (field(b, 'percent') !== undefined ? `${String(field(b, 'percent'))}%` : String(field(b, 'agents')))).join(',') : '?';
      return `graph ${str('graph')}: rollout policy batches ${list}, pause ${str('policy', 'pauseSeconds')}s`;
    }
    case 'rollout.advance': {
      const agents = field(p, 'agents');
      return `graph ${str('graph')}: batch ${Number(field(p, 'batch')) + 1} of config ${shortId(text(field(p, 'configId')))} released to ${Array.isArray(agents) ? agents.length : '?'} agent(s) (target ${str('target')})`;
    }
    case 'rollout.halt':
      return `graph ${str('graph')}: rollout of ${shortId(text(field(p, 'configId')))} halted: ${str('reason').slice(0, 160)}`;
    case 'rollout.pause':
      return `graph ${str('graph')}: rollout of ${shortId(text(field(p, 'configId')))} paused`;
    case 'rollout.resume':
      return `graph ${str('graph')}: rollout of ${shortId(text(field(p, 'configId')))} resumed`;
    case 'rollout.abort':
      return `graph ${str('graph')}: rollout of ${shortId(text(field(p, 'configId')))} aborted, back to ${shortId(text(field(p, 'base')))}`;
    case 'rollout.complete':
      return `graph ${str('graph')}: rollout of ${shortId(text(field(p, 'configId')))} complete (${str('released')} agent(s), ${str('failed')} failed)`;
    default:
      return `${event.action} ${event.subject}`;
  }
}

/** The timeline entry of an event as stored; `agentName` names agents enrolled earlier. */
export function timelineEntry(event: AuditEvent, agentName: (agentId: string) => string | undefined): TimelineEntry {
  const p = event.payload;
  const agent = event.action.startsWith('agent.') ? text(field(p, 'agentId')) : null;
  let graph: string | null = null;
  let headMove: TimelineEntry['headMove'] = null;
  if (event.action === 'config.submit') {
    graph = text(field(p, 'body', 'graph'));
    const to = text(field(p, 'id'));
    if (to) headMove = { from: text(field(p, 'previousHead')), to };
  } else if (event.action === 'graph.rollback') {
    graph = text(field(p, 'graph'));
    const to = text(field(p, 'to'));
    if (to) headMove = { from: text(field(p, 'from')), to };
  } else if (event.action === 'agent.assign' || event.action === 'agent.place' || event.action.startsWith('rollout.')) {
    graph = text(field(p, 'graph'));
  } else if (event.action === 'rule.add') {
    graph = text(field(p, 'follow'));
  }
  if (event.action === 'rollout.abort') {
    const to = text(field(p, 'base'));
    if (to) headMove = { from: text(field(p, 'configId')), to };
  }
  let summary: string;
  try {
    summary = summarize(event, agentName);
  } catch {
    summary = `${String(event.action)} ${String(event.subject)}`;
  }
  return {
    seq: event.seq,
    hlc: String(event.hlc),
    wallTime: Number(event.wallTime),
    actorKey: String(event.actorKey),
    actorRole: String(event.actorRole),
    action: String(event.action),
    subject: String(event.subject),
    agent,
    graph,
    summary,
    headMove,
  };
}

/**
 * A predicate for `filter` (without `text`, which needs the payloads: see
 * LogSource.searchPayloads). `agentIds` are the ids the `agent` filter
 * resolved to (by id prefix or name).
 */
export function entryMatcher(filter: TimelineFilter, agentIds: ReadonlySet<string> | null): (entry: TimelineEntry) => boolean {
  const actor = filter.actor?.toLowerCase();
  const action = filter.action;
  const family = action && !action.includes('.') ? `${action}.` : action?.endsWith('.') ? action : undefined;
  return (entry) => {
    if (actor && entry.actorRole !== actor && !entry.actorKey.startsWith(actor)) return false;
    if (action && entry.action !== action && !(family && entry.action.startsWith(family))) return false;
    if (agentIds && !(entry.agent !== null && agentIds.has(entry.agent)) && !agentIds.has(entry.subject)) return false;
    if (filter.graph && entry.graph !== filter.graph) return false;
    if (filter.from !== undefined && entry.wallTime < filter.from) return false;
    if (filter.to !== undefined && entry.wallTime > filter.to) return false;
    return true;
  };
}
