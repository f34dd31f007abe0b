/**
 * `ferry params set|unset|ls` (docs/secrets.md, "Per-machine parameters"):
 * non-secret values in layers — a graph's defaults (`--graph`), a group of
 * agents by operator labels (`--where labels.K=V`), one agent (`--agent`).
 * Each agent's effective values (`ferry agents show`) reach its commands as
 * environment variables; a change re-activates the agents it changes.
 */
import type { CoordinatorHttpClient } from '../protocol/http-client.js';
import { ParamKeySchema, ParamValueSchema } from '../protocol/params.js';
import { GraphNameSchema } from '../protocol/config.js';
import { KeyIdSchema } from '../protocol/identity.js';
import type { ParamLayer } from '../protocol/api/params.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command, type OptionValues } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { resolveAgent } from './fleet-commands.js';
import { table } from './format.js';
import { term } from './terminal-text.js';

const common = { ...connectionOptions, ...jsonOption };

const layerOptions = {
  graph: { type: 'string', valueName: 'GRAPH', description: "the graph's defaults (its followers)" },
  where: { type: 'string', multiple: true, valueName: 'labels.K=V', description: 'a group: the agents whose operator labels match (all clauses)' },
  agent: { type: 'string', valueName: 'AGENT', description: 'one agent (id, id prefix or name)' },
} as const;

/** The layer the options name: exactly one of --graph, --where, --agent; refuses (UsageError) none, several, or a bad graph name. */
async function layerFrom(client: CoordinatorHttpClient, options: OptionValues): Promise<ParamLayer> {
  const graph = stringOption(options, 'graph');
  const where = stringListOption(options, 'where');
  const agent = stringOption(options, 'agent');
  const given = [graph !== undefined, where.length > 0, agent !== undefined].filter(Boolean).length;
  if (given !== 1) throw new UsageError('name one layer: --graph GRAPH, --where labels.K=V… or --agent AGENT');
  if (graph !== undefined) {
    const parsed = GraphNameSchema.safeParse(graph);
    if (!parsed.success) throw new UsageError(`--graph '${graph.slice(0, 140)}': ${parsed.error.issues[0]!.message}`);
    return { graph: parsed.data };
  }
  if (agent !== undefined) return { agent: KeyIdSchema.parse(await resolveAgent(client, agent)) };
  return { where };
}

/** `KEY=VALUE` arguments as a map; refuses (UsageError naming the argument) a bad name, value or repeat. */
function assignments(args: readonly string[]): Record<string, string> {
  const values: Record<string, string> = {};
  for (const arg of args) {
    const equals = arg.indexOf('=');
    if (equals < 0) throw new UsageError(`'${arg.slice(0, 140)}': give KEY=VALUE`);
    const key = paramKey(arg.slice(0, equals));
    const value = ParamValueSchema.safeParse(arg.slice(equals + 1));
    if (!value.success) throw new UsageError(`${key}: ${value.error.issues[0]!.message}`);
    if (key in values) throw new UsageError(`${key} is given twice`);
    values[key] = value.data;
  }
  return values;
}

function paramKey(text: string): string {
  const parsed = ParamKeySchema.safeParse(text);
  if (!parsed.success) throw new UsageError(`parameter '${text.slice(0, 140)}': ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

/** A layer for people: `graph web`, `where labels.site=barn-3`, `agent <id>`. */
function layerText(layer: ParamLayer): string {
  if ('graph' in layer) return `graph ${layer.graph}`;
  if ('agent' in layer) return `agent ${layer.agent}`;
  return `where ${layer.where.join(' ')}`;
}

const set: Command = {
  path: ['params', 'set'],
  summary: 'set per-machine parameters in one layer: --graph (defaults) < --where (label group) < --agent (operators)',
  args: 'KEY=VALUE…',
  description:
    "Parameters are not secret: they are recorded in clear in the audit log (use ferry secrets for credentials). Each agent's " +
    'effective values are its graph\'s defaults, then each label group it matches (oldest group first), then its own; its ' +
    'commands get them as environment variables (over the config\'s --env of the same name, never FERRY_* or PATH). A change ' +
    're-activates only the agents whose effective values it changes.',
  minArgs: 1,
  maxArgs: 256,
  options: { ...layerOptions, ...common },
  async run({ args, options, stdout }) {
    const values = assignments(args);
    const client = clientFrom(options);
    const layer = await layerFrom(client, options);
    const result = await client.call('params.set', { layer, values });
    if (booleanOption(options, 'json')) return writeJson(stdout, { layer, values, ...result });
    stdout.write(result.seq === null ? term`${layerText(layer)}: unchanged\n` : term`${layerText(layer)}: set ${Object.keys(values).join(', ')} (audit event ${result.seq})\n`);
  },
};

const unset: Command = {
  path: ['params', 'unset'],
  summary: 'remove parameters from one layer (operators)',
  args: 'KEY…',
  minArgs: 1,
  maxArgs: 256,
  options: { ...layerOptions, ...common },
  async run({ args, options, stdout }) {
    const keys = args.map(paramKey);
    const client = clientFrom(options);
    const layer = await layerFrom(client, options);
    const result = await client.call('params.unset', { layer, keys });
    if (booleanOption(options, 'json')) return writeJson(stdout, { layer, keys, ...result });
    stdout.write(term`${layerText(layer)}: unset ${keys.join(', ')} (audit event ${result.seq})\n`);
  },
};

const ls: Command = {
  path: ['params', 'ls'],
  summary: 'every layer of parameters, graphs and groups and agents (ferry agents show: one agent\'s effective values)',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const { layers } = await clientFrom(options).call('params.list');
    if (booleanOption(options, 'json')) return writeJson(stdout, layers);
    stdout.write(
      table(
        ['LAYER', 'KEY', 'VALUE'],
        layers.flatMap((layer) => Object.entries(layer.values).map(([key, value]) => [layerText(layer.layer), key, value.length > 80 ? `${value.slice(0, 80)}…` : value])),
      ),
    );
  },
};

export const paramCommands: Command[] = [set, unset, ls];
