/** `ferry keys …`, `ferry tokens …`, `ferry agents …`: clients of the coordinator API. */
import type { ParamSource } from '../protocol/api/params.js';
import { formatJoinString } from '../protocol/join-string.js';
import { keyIdOf, sshEd25519PublicKey } from '../protocol/identity.js';
import { formatBytes } from './progress.js';
import { readFileSync } from 'node:fs';
import type { CoordinatorHttpClient } from '../protocol/http-client.js';
import { AddKeyInput } from '../protocol/api/inputs.js';
import type { AgentView } from '../protocol/api/views.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command, type OptionValues } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { ago, parseDuration, parseKeyValues, oneLine, short, table } from './format.js';
import { block, jsonForTerminal, term, type TerminalOutput } from './terminal-text.js';

const common = { ...connectionOptions, ...jsonOption };


/** Every item of a listing, read a page at a time: `next` names the last item of a page when there are more. */
async function allPages<P extends { next: string | null }, T>(readPage: (after: string | undefined) => Promise<P>, itemsOf: (page: P) => T[]): Promise<T[]> {
  const items: T[] = [];
  let after: string | undefined;
  do {
    const page = await readPage(after);
    items.push(...itemsOf(page));
    after = page.next ?? undefined;
  } while (after);
  return items;
}

function allAgents(client: CoordinatorHttpClient, where: string[] = []): Promise<AgentView[]> {
  return allPages((after) => client.call('agents.list', { where, limit: 1000, after }), (page) => page.agents);
}

/** Where an effective parameter came from, for people: `graph web`, `group labels.site=barn-3`, `agent`. */
export function paramSourceText(source: ParamSource): string {
  if (source.layer === 'graph') return `graph ${source.graph}`;
  if (source.layer === 'group') return `group ${source.where.join(' ')}`;
  return 'agent';
}

/** An agent by full id, unique id prefix, or name; refuses (UsageError) none or several. */
export async function resolveAgent(client: CoordinatorHttpClient, reference: string): Promise<string> {
  if (/^[0-9a-f]{64}$/.test(reference)) return reference;
  const agents = await allAgents(client);
  const matches = agents.filter((agent) => agent.name === reference || agent.id.startsWith(reference));
  if (matches.length === 1) return matches[0]!.id;
  throw new UsageError(matches.length === 0 ? `no agent named or starting with '${reference}'` : `'${reference}' matches ${matches.length} agents; give more of the id`);
}

/** A key given as a hex key id, or as an OpenSSH ed25519 public key: a file holding one, or the line itself. */
function keyIdFromArgument(argument: string): string {
  if (/^[0-9a-f]{64}$/.test(argument)) return argument;
  let text = argument;
  try {
    text = readFileSync(argument, 'utf8');
  } catch {
    // not a file: maybe the key line itself
  }
  const publicKey = sshEd25519PublicKey(text);
  if (publicKey) return keyIdOf(publicKey);
  throw new UsageError(`'${argument}' is not a key id, an ssh-ed25519 public key, or a file holding one`);
}

function json(options: OptionValues): boolean {
  return booleanOption(options, 'json');
}

const keysAdd: Command = {
  path: ['keys', 'add'],
  summary: 'allow a key: admin, operator, pusher or viewer',
  args: '<key-id|public-key-file>',
  minArgs: 1,
  maxArgs: 1,
  options: {
    role: { type: 'string', valueName: 'ROLE', description: 'admin | operator | pusher | viewer' },
    label: { type: 'string', valueName: 'TEXT', description: 'who holds it' },
    ...common,
  },
  async run({ args, options, stdout }) {
    const given = stringOption(options, 'role');
    if (!given) throw new UsageError('--role is required (admin, operator, pusher or viewer)');
    const role = AddKeyInput.shape.role.safeParse(given);
    if (!role.success) throw new UsageError(`--role '${given}' is not admin, operator, pusher or viewer`);
    const keyId = keyIdFromArgument(args[0]!);
    const result = await clientFrom(options).call('keys.add', { keyId, role: role.data, label: stringOption(options, 'label') ?? '' });
    if (json(options)) return writeJson(stdout, { keyId, role: role.data, ...result });
    stdout.write(term`added ${role.data} key ${keyId}\n`);
  },
};

const keysLs: Command = {
  path: ['keys', 'ls'],
  summary: 'list the keys allowed to use this coordinator',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const client = clientFrom(options);
    const keys = await allPages((after) => client.call('keys.list', { limit: 1000, after }), (page) => page.keys);
    if (json(options)) return writeJson(stdout, keys);
    stdout.write(table(['KEY', 'ROLE', 'STATUS', 'LABEL'], keys.map((k) => [k.id, k.role, k.revoked ? 'revoked' : 'active', k.label])));
  },
};

const keysRevoke: Command = {
  path: ['keys', 'revoke'],
  summary: 'revoke a key: every later request signed with it is refused',
  args: '<key-id>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const result = await clientFrom(options).call('keys.revoke', { keyId: args[0]! });
    if (json(options)) return writeJson(stdout, result);
    stdout.write(term`revoked ${args[0]}\n`);
  },
};

const tokensCreate: Command = {
  path: ['tokens', 'create'],
  summary: 'create a bootstrap token and print the join string an agent enrolls with',
  maxArgs: 0,
  options: {
    ttl: { type: 'string', valueName: 'DURATION', description: 'validity, e.g. 30m, 24h, 7d (default 24h)' },
    uses: { type: 'string', valueName: 'N', description: 'how many agents may enroll with it (default 1)' },
    'auto-approve': { type: 'boolean', description: 'agents enrolling with it are approved at once' },
    label: { type: 'string', multiple: true, valueName: 'K=V', description: 'label given to agents enrolling with it' },
    note: { type: 'string', valueName: 'TEXT', description: 'what the token is for' },
    relay: { type: 'boolean', description: 'a token that enrolls site relays (ferry relay enroll), never agents' },
    follow: { type: 'string', valueName: 'GRAPH', description: 'agents enrolling with it follow this graph at once (an explicit assignment)' },
    pin: { type: 'string', valueName: 'CONFIG', description: 'with --follow: and are pinned to this config' },
    rule: { type: 'string', valueName: 'RULE', description: "agents enrolling with it are placed by the rules; refused unless this rule is the one their --label's select" },
    ...common,
  },
  async run({ options, stdout }) {
    const ttl = parseDuration(stringOption(options, 'ttl') ?? '24h');
    if (ttl === undefined) throw new UsageError(`--ttl '${stringOption(options, 'ttl')}' is not a duration like 30m, 24h or 7d`);
    const uses = Number(stringOption(options, 'uses') ?? '1');
    if (!Number.isInteger(uses) || uses < 1) throw new UsageError('--uses must be a positive integer');
    const client = clientFrom(options);
    const result = await client.call('tokens.create', {
      ttlSeconds: ttl,
      uses,
      autoApprove: booleanOption(options, 'auto-approve'),
      label: stringOption(options, 'note') ?? '',
      labels: parseKeyValues(stringListOption(options, 'label'), '--label'),
      relay: booleanOption(options, 'relay'),
      follow: stringOption(options, 'follow'),
      pin: stringOption(options, 'pin'),
      rule: stringOption(options, 'rule'),
    });
    const info = await client.call('info');
    // The coordinator answers pinned HTTPS on its HTTP port: the machine gets a join string for that, so the
    // token and everything after it are encrypted. An https:// context is something with its own certificate.
    const pinnedTls = new URL(client.baseUrl).protocol === 'http:';
    const join = formatJoinString({ httpUrl: client.baseUrl, coordinatorKey: info.coordinatorKey, tlsFingerprint: info.tlsFingerprint, token: result.token, pinnedTls });
    if (json(options)) return writeJson(stdout, { ...result, join });
    const enroll = booleanOption(options, 'relay') ? `ferry relay enroll '${join}' --url https://HOST:PORT` : `ferry agent enroll '${join}'`;
    stdout.write(term`token ${result.tokenId}: ${uses} use(s), expires ${new Date(result.expiresAt).toISOString()}\n\njoin string (shown once; give it to the machine):\n  ${join}\n\non the machine:  ${enroll}\n`);
  },
};

const tokensLs: Command = {
  path: ['tokens', 'ls'],
  summary: 'list bootstrap tokens (never their secrets)',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const client = clientFrom(options);
    const tokens = await allPages((after) => client.call('tokens.list', { limit: 1000, after }), (page) => page.tokens);
    if (json(options)) return writeJson(stdout, tokens);
    stdout.write(
      table(
        ['TOKEN', 'USES LEFT', 'EXPIRES', 'AUTO-APPROVE', 'STATUS', 'NOTE'],
        tokens.map((t) => [t.id, t.usesLeft, new Date(t.expiresAt).toISOString(), t.autoApprove ? 'yes' : 'no', t.revoked ? 'revoked' : t.expired ? 'expired' : 'active', t.label]),
      ),
    );
  },
};

const tokensRevoke: Command = {
  path: ['tokens', 'revoke'],
  summary: 'revoke a bootstrap token',
  args: '<token-id>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const result = await clientFrom(options).call('tokens.revoke', { tokenId: args[0]! });
    if (json(options)) return writeJson(stdout, result);
    stdout.write(term`revoked token ${args[0]}\n`);
  },
};

const whereOption = {
  where: {
    type: 'string' as const,
    multiple: true,
    valueName: 'CLAUSE',
    description: "filter (ANDed): K=V, K=a,b (one of), K=glob-* (* and ?), K!=V, K (set), '!K' (not set); K is status, presence, health, system…, labels.K or facts.PATH",
  },
};

const agentsLs: Command = {
  path: ['agents', 'ls'],
  summary: 'list agents, optionally filtered by status, labels or facts',
  maxArgs: 0,
  options: { ...whereOption, ...common },
  async run({ options, stdout }) {
    const agents = await allAgents(clientFrom(options), stringListOption(options, 'where'));
    if (json(options)) return writeJson(stdout, agents);
    stdout.write(table(['AGENT', 'NAME', 'TYPE', 'STATUS', 'SYSTEM', 'PRESENCE', 'HEALTH', 'LAST SEEN'], agents.map((a) => [short(a.id), a.name, a.type, a.status, a.system, a.presence, a.health, ago(a.lastSeen)])));
  },
};

const agentsStatus: Command = {
  path: ['agents', 'status'],
  summary: 'desired vs current config of each agent, phase and last error',
  maxArgs: 0,
  options: { ...whereOption, ...common },
  async run({ options, stdout }) {
    const agents = await allAgents(clientFrom(options), stringListOption(options, 'where'));
    if (json(options)) return writeJson(stdout, agents);
    stdout.write(
      table(
        ['AGENT', 'NAME', 'FOLLOWS', 'BY', 'DESIRED', 'CURRENT', 'PHASE', 'HEALTH', 'LAST ERROR'],
        agents.map((a) => [short(a.id), a.name, a.pinnedConfig ? `pin ${short(a.pinnedConfig)}` : a.desiredGraph, placedBy(a), short(a.desiredConfig), short(a.currentConfig), phaseWithProgress(a), a.health, oneLine(a.lastError ?? a.healthReason)]),
      ),
    );
  },
};

/** Who placed an agent: `rule NAME`, `rules` (none matches), or `manual` (an operator's assign or pin). */
function placedBy(agent: AgentView): string {
  if (agent.control === 'manual') return 'manual';
  return agent.rule === null ? 'rules (none matches)' : `rule ${agent.rule}`;
}

/** `fetching 42% (11.0 MiB of 26.3 MiB)` while an agent downloads, else its reported phase. */
function phaseWithProgress(agent: AgentView): string | null {
  const activity = agent.activity;
  if (activity?.phase === 'fetching' && activity.bytesTotal > 0 && activity.bytesDone < activity.bytesTotal) {
    return `fetching ${Math.floor((100 * activity.bytesDone) / activity.bytesTotal)}% (${formatBytes(activity.bytesDone)} of ${formatBytes(activity.bytesTotal)})`;
  }
  return agent.phase;
}

const agentsShow: Command = {
  path: ['agents', 'show'],
  summary: 'one agent: status, position, facts',
  args: '<agent>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const client = clientFrom(options);
    const agent = await client.call('agents.show', { agentId: await resolveAgent(client, args[0]!) });
    if (json(options)) return writeJson(stdout, agent);
    stdout.write(
      term`${[
        term`agent   ${agent.id}\n`,
        term`name    ${agent.name} (${agent.type})\n`,
        term`status  ${agent.status}, ${agent.presence}, last seen ${ago(agent.lastSeen)}\n`,
        term`labels  ${jsonForTerminal(agent.labels)}\n`,
        term`follows ${agent.pinnedConfig ? `pinned to ${agent.pinnedConfig}` : (agent.desiredGraph ?? '-')} (${placedBy(agent)})\n`,
        term`desired ${agent.desiredConfig ?? '-'}\n`,
        term`current ${agent.currentConfig ?? '-'}\n`,
        term`phase   ${phaseWithProgress(agent) ?? '-'}\n`,
        // The whole last error (a command's output) keeps its lines, each escaped and indented
        // under `error`, so none of them can pass for a field of its own.
        agent.lastError ? term`error   ${block(agent.lastError).indented('        ')}\n` : [],
        agent.health ? term`health  ${agent.health} since ${ago(agent.healthAt)}${agent.healthReason ? term`: ${block(agent.healthReason).indented('        ')}` : ''}\n` : [],
        term`facts   ${jsonForTerminal(agent.facts, 2).indented('        ')}\n`,
        // Effective per-machine parameters and the layer each came from (docs/secrets.md).
        agent.params.length > 0 ? term`params\n${agent.params.map((param) => term`  ${param.key}=${oneLine(param.value)}  (${paramSourceText(param.source)})\n`)}` : term`params  -\n`,
        agent.activity?.events.length
          ? term`recent events (from the agent):\n${agent.activity.events.map((event) => term`  ${new Date(event.at).toISOString()}  ${event.kind.padEnd(12)} ${oneLine(event.message)}\n`)}`
          : [],
      ]}`,
    );
  },
};

const agentsFacts: Command = {
  path: ['agents', 'facts'],
  summary: "an agent's reported facts (with --history, every revision)",
  args: '<agent>',
  minArgs: 1,
  maxArgs: 1,
  options: { history: { type: 'boolean', description: 'every revision, oldest first' }, ...common },
  async run({ args, options, stdout }) {
    const client = clientFrom(options);
    const result = await client.call('agents.facts', { agentId: await resolveAgent(client, args[0]!), history: booleanOption(options, 'history') ? '1' : undefined });
    if (json(options)) return writeJson(stdout, result);
    for (const revision of result.revisions) stdout.write(term`revision ${revision.revision} (audit seq ${revision.seq}, ${revision.hlc})\n${jsonForTerminal(revision.facts, 2)}\n`);
  },
};

function decision(verb: 'approve' | 'reject' | 'revoke', summary: string): Command {
  return {
    path: ['agents', verb],
    summary,
    args: '<agent>...',
    minArgs: 1,
    options: common,
    async run({ args, options, stdout }) {
      const client = clientFrom(options);
      const results = [];
      for (const reference of args) {
        const id = await resolveAgent(client, reference);
        results.push({ agentId: id, ...(await client.call(`agents.${verb}`, { agentId: id })) });
        if (!json(options)) stdout.write(term`${verb === 'approve' ? 'approved' : verb === 'reject' ? 'rejected' : 'revoked'} ${id}\n`);
      }
      if (json(options)) writeJson(stdout, results);
    },
  };
}

/** The agents named (by name or id) and those `--where` selects, each once; refuses none at all. */
async function selectedAgents(client: CoordinatorHttpClient, references: string[], options: OptionValues): Promise<string[]> {
  const ids = await Promise.all(references.map((reference) => resolveAgent(client, reference)));
  const where = stringListOption(options, 'where');
  if (where.length > 0) ids.push(...(await allAgents(client, where)).map((agent) => agent.id));
  if (ids.length === 0) throw new UsageError('no agents selected: name them or use --where');
  return [...new Set(ids)];
}

const agentsAssign: Command = {
  path: ['agents', 'assign'],
  summary: "make agents follow a graph (its head is their desired config); 'none' to follow none; --rules to return them to the rules",
  args: '<agent>... <graph|none>',
  description:
    'Select agents by name or id, or with --where (e.g. --where labels.site=barn-3). An explicit assignment takes agents out of the rules (ferry rules); ' +
    '--rules (no graph) hands them back. For machines that enroll later, add a rule instead: --where here selects once. ' +
    "With 'none' the agents keep running what they run; add --stop to stop it: each runs its config's deactivate command and leaves no generation active (phase stopped).",
  minArgs: 1,
  options: {
    ...whereOption,
    stop: { type: 'boolean', description: "with 'none': stop what runs (deactivate, no generation active)" },
    rules: { type: 'boolean', description: 'return the agents to rule control (give no graph)' },
    ...common,
  },
  async run({ args, options, stdout }) {
    const client = clientFrom(options);
    if (booleanOption(options, 'rules')) return returnToRules(client, args, options, stdout);
    const graph = args[args.length - 1]!;
    const stop = booleanOption(options, 'stop');
    if (stop && graph !== 'none') throw new UsageError(`--stop goes with 'none' (agents assign … none --stop), not with graph '${graph}'`);
    const ids = await selectedAgents(client, args.slice(0, -1), options);
    for (const id of ids) await client.call('agents.assign', { agentId: id, graph: graph === 'none' ? null : graph, ...(stop ? { stop } : {}) });
    if (json(options)) return writeJson(stdout, { graph, stop, agents: ids });
    stdout.write(stop ? term`${ids.length} agent(s) told to stop\n` : term`${ids.length} agent(s) now follow '${graph}'\n`);
  },
};

const agentsRetry: Command = {
  path: ['agents', 'retry'],
  summary: 'make agents try their desired config again, though it failed there once',
  args: '<agent>...',
  description:
    'An agent does not deploy a config again once it failed there (activation, health check, probation, or a local rollback away from it) until its desired config changes. ' +
    'A retry (audited) clears that on the agent, through its signed desired answer: it deploys its desired config at once. Select agents by name or id, or with --where.',
  minArgs: 0,
  options: { ...whereOption, ...common },
  async run({ args, options, stdout }) {
    const client = clientFrom(options);
    const ids = await selectedAgents(client, args, options);
    const results = [];
    for (const id of ids) results.push({ agentId: id, ...(await client.call('agents.retry', { agentId: id })) });
    if (json(options)) return writeJson(stdout, results);
    stdout.write(term`${ids.length} agent(s) will try their desired config again\n`);
  },
};

/** `agents assign AGENT… --rules`: each agent back under rule control, placed where the rules put it now. */
async function returnToRules(client: CoordinatorHttpClient, args: readonly string[], options: OptionValues, stdout: TerminalOutput): Promise<void> {
  const ids = await Promise.all(args.map((reference) => resolveAgent(client, reference)));
  const where = stringListOption(options, 'where');
  if (where.length > 0) ids.push(...(await allAgents(client, where)).map((agent) => agent.id));
  if (ids.length === 0) throw new UsageError('no agents selected: name them or use --where');
  const results = [];
  for (const id of new Set(ids)) results.push({ agentId: id, ...(await client.call('agents.follow-rules', { agentId: id })) });
  if (json(options)) return writeJson(stdout, results);
  const moved = results.filter((result) => result.seq !== null).length;
  stdout.write(term`${moved} agent(s) returned to the rules (${results.length - moved} were under them already)
`);
}

/** `k=v` items of --set, refusing a key given twice. */
function labelChanges(options: OptionValues): { set: Record<string, string>; unset: string[] } {
  const items = stringListOption(options, 'set');
  const set = parseKeyValues(items, '--set');
  if (Object.keys(set).length !== items.length) throw new UsageError('--set names a label twice');
  return { set, unset: stringListOption(options, 'unset') };
}

const agentsLabel: Command = {
  path: ['agents', 'label'],
  summary: "set or unset operator labels (what rules and --where labels.* select on); the rules re-place the agents at once",
  args: '[agent]...',
  description: 'Select agents by name or id, or with --where. Example: ferry agents label gw-1 gw-2 --set site=barn-3 --unset canary',
  options: {
    ...whereOption,
    set: { type: 'string', multiple: true, valueName: 'K=V', description: 'set label K to V' },
    unset: { type: 'string', multiple: true, valueName: 'K', description: 'remove label K' },
    ...common,
  },
  async run({ args, options, stdout }) {
    const client = clientFrom(options);
    const changes = labelChanges(options);
    if (Object.keys(changes.set).length + changes.unset.length === 0) throw new UsageError('nothing to change: give --set K=V or --unset K');
    const where = stringListOption(options, 'where');
    if (where.length > 0 && args.length > 0) throw new UsageError('name agents or select them with --where, not both');
    if (where.length === 0 && args.length === 0) throw new UsageError('no agents selected: name them or use --where');
    const selection = where.length > 0 ? { where } : { agentIds: [...new Set(await Promise.all(args.map((reference) => resolveAgent(client, reference))))] };
    const change = await client.call('agents.label', { ...selection, ...changes });
    if (json(options)) return writeJson(stdout, change);
    stdout.write(change.seq === null ? term`no label changed\n` : term`${change.relabelled} agent(s) relabelled, ${change.placed} placed anew by the rules (audit event #${change.seq})\n`);
  },
};

const agentsPin: Command = {
  path: ['agents', 'pin'],
  summary: "pin an agent to a config (or 'none' to follow its graph again)",
  args: '<agent> <config|none>',
  minArgs: 2,
  maxArgs: 2,
  options: common,
  async run({ args, options, stdout }) {
    const client = clientFrom(options);
    const id = await resolveAgent(client, args[0]!);
    const result = await client.call('agents.pin', { agentId: id, configId: args[1] === 'none' ? null : args[1]! });
    if (json(options)) return writeJson(stdout, result);
    stdout.write(args[1] === 'none' ? term`${id} follows its graph again\n` : term`${id} pinned to ${args[1]}\n`);
  },
};

export const fleetCommands: Command[] = [
  keysAdd,
  keysLs,
  keysRevoke,
  tokensCreate,
  tokensLs,
  tokensRevoke,
  agentsLs,
  agentsStatus,
  agentsShow,
  agentsFacts,
  decision('approve', 'approve agents waiting to enroll'),
  decision('reject', 'reject agents waiting to enroll'),
  decision('revoke', 'revoke agents: refused everywhere from now on'),
  agentsAssign,
  agentsRetry,
  agentsPin,
  agentsLabel,
];
