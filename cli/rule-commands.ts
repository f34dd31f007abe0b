/** `ferry rules …`: targeting rules, applied by the coordinator to every agent under rule control (docs/coordinator.md "Rules"). */
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command, type OptionValues } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { table } from './format.js';
import { term } from './terminal-text.js';
import type { FleetChange } from '../protocol/api/views.js';

const common = { ...connectionOptions, ...jsonOption };

/** `--before RULE` or `--position N` (0: tried first), at most one of them. */
function placeOptions(options: OptionValues): { before?: string; position?: number } {
  const before = stringOption(options, 'before');
  const given = stringOption(options, 'position');
  if (before !== undefined && given !== undefined) throw new UsageError('give --before or --position, not both');
  if (given === undefined) return before === undefined ? {} : { before };
  const position = Number(given);
  if (!/^[0-9]+$/.test(given) || !Number.isSafeInteger(position)) throw new UsageError(`--position '${given}' is not a non-negative integer (0: tried first)`);
  return { position };
}

const order = {
  before: { type: 'string' as const, valueName: 'RULE', description: 'tried just before this rule' },
  position: { type: 'string' as const, valueName: 'N', description: 'tried at this place (0: first)' },
};

/** What a change did, in a line. */
export function describeChange(change: FleetChange): string {
  if (change.seq === null) return 'nothing changed';
  const relabelled = change.relabelled > 0 ? `${change.relabelled} agent(s) relabelled, ` : '';
  return `${relabelled}${change.placed} agent(s) placed anew (audit event #${change.seq})`;
}

const rulesAdd: Command = {
  path: ['rules', 'add'],
  summary: 'add a rule: agents whose labels match follow a graph (first matching rule wins)',
  args: '<name>',
  description: "Example: ferry rules add barns --where 'labels.site=barn-*' --follow edge. Rules select on operator labels only; --all matches every agent.",
  minArgs: 1,
  maxArgs: 1,
  options: {
    where: { type: 'string', multiple: true, valueName: 'CLAUSE', description: 'labels.k=v, labels.k=a,b, labels.k=glob-*, labels.k!=v, labels.k, !labels.k (ANDed)' },
    all: { type: 'boolean', description: 'match every agent (no --where)' },
    follow: { type: 'string', valueName: 'GRAPH', description: 'the graph matching agents follow' },
    pin: { type: 'string', valueName: 'CONFIG', description: 'pin them to this config of the graph' },
    ...order,
    ...common,
  },
  async run({ args, options, stdout }) {
    const where = stringListOption(options, 'where');
    if (where.length === 0 && !booleanOption(options, 'all')) throw new UsageError('give --where (e.g. --where labels.site=barn-3), or --all for every agent');
    if (where.length > 0 && booleanOption(options, 'all')) throw new UsageError('give --where or --all, not both');
    const follow = stringOption(options, 'follow');
    if (!follow) throw new UsageError('--follow GRAPH is required');
    const change = await clientFrom(options).call('rules.add', { name: args[0]!, where, follow, pin: stringOption(options, 'pin') ?? null, ...placeOptions(options) });
    if (booleanOption(options, 'json')) return writeJson(stdout, change);
    stdout.write(term`added rule ${args[0]}: ${describeChange(change)}\n`);
  },
};

const rulesLs: Command = {
  path: ['rules', 'ls'],
  summary: 'list the rules, in the order they are tried',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const { rules } = await clientFrom(options).call('rules.list');
    if (booleanOption(options, 'json')) return writeJson(stdout, rules);
    stdout.write(table(['#', 'RULE', 'WHERE', 'FOLLOW', 'PIN'], rules.map((rule) => [rule.position, rule.id, rule.where.length === 0 ? '(every agent)' : rule.where.join(' '), rule.follow, rule.pin])));
  },
};

const rulesRm: Command = {
  path: ['rules', 'rm'],
  summary: 'remove a rule: its agents go where the other rules put them (nowhere if none matches)',
  args: '<name>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const change = await clientFrom(options).call('rules.remove', { name: args[0]! });
    if (booleanOption(options, 'json')) return writeJson(stdout, change);
    stdout.write(term`removed rule ${args[0]}: ${describeChange(change)}\n`);
  },
};

const rulesMove: Command = {
  path: ['rules', 'move'],
  summary: 'change where a rule is tried: --before RULE or --position N',
  args: '<name>',
  minArgs: 1,
  maxArgs: 1,
  options: { ...order, ...common },
  async run({ args, options, stdout }) {
    const place = placeOptions(options);
    if (place.before === undefined && place.position === undefined) throw new UsageError('give --before RULE or --position N');
    const change = await clientFrom(options).call('rules.move', { name: args[0]!, ...place });
    if (booleanOption(options, 'json')) return writeJson(stdout, change);
    stdout.write(term`moved rule ${args[0]}: ${describeChange(change)}\n`);
  },
};

export const ruleCommands: Command[] = [rulesAdd, rulesLs, rulesRm, rulesMove];
