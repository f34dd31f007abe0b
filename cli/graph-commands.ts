/** `ferry config submit|show|diff` and `ferry graph ls|log|rollback`. */
import { existsSync, realpathSync } from 'node:fs';
import { ApiError } from '../protocol/http-client.js';
import { DEFAULT_DIFF_PACKAGES, MAX_DIFF_PACKAGES } from '../protocol/api/config-diff.js';
import { formatBytes } from './progress.js';
import { formatHlc } from '../protocol/hlc.js';
import { asStorePath, isStorePath, type StorePath } from '../nix/store-path.js';
import { asConfigId, configSigningMessage, DEFAULT_UNHEALTHY_AFTER, type ConfigBody, type HealthCheck } from '../protocol/config.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command, type OptionValues } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { parseKeyValues, short, table } from './format.js';
import { block, term } from './terminal-text.js';
import { SecretRefSchema, secretRefsProblem, type SecretRef } from '../protocol/secret-refs.js';

const common = { ...connectionOptions, ...jsonOption };

function positiveInt(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new UsageError(`${name} must be a non-negative integer`);
  return value;
}

/** `--health-interval`, `--health-failures` and `--probation` as a HealthCheck's periodic fields (none without an interval). */
function periodicHealth(options: OptionValues): Pick<HealthCheck, 'intervalSeconds' | 'unhealthyAfter' | 'probationSeconds'> {
  const interval = stringOption(options, 'health-interval');
  const failures = stringOption(options, 'health-failures');
  const probation = stringOption(options, 'probation');
  if (interval === undefined) {
    if (failures !== undefined || probation !== undefined) throw new UsageError('--health-failures and --probation need --health-interval (a periodic check)');
    return {};
  }
  const intervalSeconds = positiveInt(interval, '--health-interval', 0);
  if (intervalSeconds < 1) throw new UsageError('--health-interval must be at least 1 second');
  const unhealthyAfter = failures === undefined ? undefined : positiveInt(failures, '--health-failures', 0);
  if (unhealthyAfter === 0) throw new UsageError('--health-failures must be at least 1');
  return { intervalSeconds, ...(unhealthyAfter ? { unhealthyAfter } : {}), ...(probation !== undefined ? { probationSeconds: positiveInt(probation, '--probation', 0) } : {}) };
}

/**
 * `--secret NAME[:PATH][:MODE][:OWNER]` options as references, each field
 * validated (SecretRefSchema: a relative path without `..`, an octal mode,
 * a user name or uid) and the list too (no name or path twice). Empty
 * fields take their default (`db:::postgres`).
 */
export function parseSecretRefs(values: readonly string[]): SecretRef[] {
  const refs = values.map((value) => {
    const [name = '', path = '', mode = '', owner = '', ...extra] = value.split(':');
    if (extra.length > 0) throw new UsageError(`--secret '${value}': NAME[:PATH][:MODE][:OWNER] has at most 4 fields`);
    const parsed = SecretRefSchema.safeParse({ name, ...(path ? { path } : {}), ...(mode ? { mode } : {}), ...(owner ? { owner } : {}) });
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UsageError(`--secret '${value}': ${issue.path.join('.') || 'value'}: ${issue.message}`);
    }
    return parsed.data;
  });
  const problem = secretRefsProblem(refs);
  if (problem) throw new UsageError(`--secret: ${problem}`);
  return refs;
}

const submit: Command = {
  path: ['config', 'submit'],
  summary: 'submit a new config to a graph (signed by your key, on the head you see)',
  args: '<graph>',
  description:
    'Each --target names the store path a system runs (a /nix/store path or a ./result link); the coordinator must ' +
    'already hold it (ferry push). If someone moved the head since you looked, the submission is refused unless --force.',
  minArgs: 1,
  maxArgs: 1,
  options: {
    target: { type: 'string', multiple: true, valueName: 'SYSTEM=PATH', description: 'e.g. x86_64-linux=/nix/store/…-system' },
    activate: { type: 'string', valueName: 'CMD', description: 'activation command, relative to the store path (e.g. bin/activate)' },
    env: { type: 'string', multiple: true, valueName: 'K=V', description: 'environment for the activation' },
    timeout: { type: 'string', valueName: 'SECONDS', description: 'activation timeout (default 300)' },
    deactivate: { type: 'string', valueName: 'CMD', description: "run when agents are told to stop (agents assign … none --stop), relative to the store path; optional" },
    health: { type: 'string', valueName: 'CMD', description: 'health check command, relative to the store path' },
    'health-timeout': { type: 'string', valueName: 'SECONDS', description: 'health check timeout (default 60)' },
    'health-retries': { type: 'string', valueName: 'N', description: 'health check retries (default 3)' },
    'health-interval': { type: 'string', valueName: 'SECONDS', description: 'also run the health check this often while the config is active (reports healthy/degraded)' },
    'health-failures': { type: 'string', valueName: 'N', description: 'with --health-interval: failures in a row before degraded (default 3)' },
    probation: { type: 'string', valueName: 'SECONDS', description: 'with --health-interval: degraded this soon after activation rolls back (default 0: only report)' },
    'env-secret': {
      type: 'string',
      multiple: true,
      valueName: 'K=V',
      description: "a variable whose value is a secret: encrypted here to the graph's enrolled agents (secret env.GRAPH.K, admins), never in the config, its event, the viewer or exports",
    },
    secret: {
      type: 'string',
      multiple: true,
      valueName: 'NAME[:PATH][:MODE][:OWNER]',
      description: 'a secret (ferry secrets set) the agent decrypts at activation into $FERRY_SECRETS_DIR/PATH (default NAME), mode (default 0400), owner when it runs as root',
    },
    message: { type: 'string', short: 'm', valueName: 'TEXT', description: 'what this config changes' },
    force: { type: 'boolean', description: 'submit even if the head moved (recorded as forced)' },
    ...common,
  },
  async run({ args, options, stdout }) {
    const graph = args[0]!;
    const activate = stringOption(options, 'activate');
    if (!activate) throw new UsageError('--activate is required');
    const targets = parseKeyValues(stringListOption(options, 'target'), '--target');
    if (Object.keys(targets).length === 0) throw new UsageError('at least one --target SYSTEM=PATH is required');
    const storePaths: Record<string, StorePath> = {};
    for (const [system, given] of Object.entries(targets)) {
      const target = !given.startsWith('/nix/store/') && existsSync(given) ? realpathSync(given) : given;
      if (!isStorePath(target)) throw new UsageError(`--target ${system}=${given}: not a store path (/nix/store/<hash>-<name>, or a symlink such as ./result that resolves to one)`);
      storePaths[system] = asStorePath(target);
    }
    const healthCommand = stringOption(options, 'health');
    if (!healthCommand && ['health-timeout', 'health-retries', 'health-interval', 'health-failures', 'probation'].some((name) => stringOption(options, name) !== undefined)) {
      throw new UsageError('the --health-… options and --probation need --health CMD');
    }
    const health = healthCommand
      ? { command: healthCommand, timeoutSeconds: positiveInt(stringOption(options, 'health-timeout'), '--health-timeout', 60), retries: positiveInt(stringOption(options, 'health-retries'), '--health-retries', 3), ...periodicHealth(options) }
      : null;
    const envSecrets = parseKeyValues(stringListOption(options, 'env-secret'), '--env-secret');
    const client = clientFrom(options);
    if (!client.identity) throw new UsageError('a key is needed to sign the config');
    // `--env-secret K=V`: V becomes a secret (env.GRAPH.K) encrypted here to the graph's enrolled agents and your key; the
    // config references it, to be exposed as K. Nothing of V is in the config, its event, the viewer or an export.
    const envRefs: SecretRef[] = [];
    if (Object.keys(envSecrets).length > 0) {
      const { encryptAndSet, selectedAgents } = await import('./secret-commands.js');
      for (const [key, value] of Object.entries(envSecrets)) {
        const name = `env.${graph}.${key}`;
        const selector = { where: [`desiredGraph=${graph}`] };
        await encryptAndSet(client, client.identity, name, new TextEncoder().encode(value), await selectedAgents(client, selector), selector);
        envRefs.push({ name, env: key });
      }
    }
    const secrets = [...parseSecretRefs(stringListOption(options, 'secret')), ...envRefs];
    const refsProblem = secretRefsProblem(secrets);
    if (refsProblem) throw new UsageError(`--env-secret: ${refsProblem}`);
    let head: string | null = null;
    try {
      head = (await client.call('graphs.show', { graph, limit: 1 })).head;
    } catch (error) {
      if (!(error instanceof ApiError && error.code === 'NOT_FOUND')) throw error;
    }
    const body: ConfigBody = {
      graph,
      parents: head ? [asConfigId(head)] : [],
      targets: storePaths,
      activation: { command: activate, environment: parseKeyValues(stringListOption(options, 'env'), '--env'), timeoutSeconds: positiveInt(stringOption(options, 'timeout'), '--timeout', 300) },
      health,
      message: stringOption(options, 'message') ?? '',
      author: client.identity.keyId,
      hlc: formatHlc({ wall: Date.now(), counter: 0, node: client.identity.keyId.slice(0, 8) }),
      // Only when given: a config without it has the id it had before the field existed.
      ...(stringOption(options, 'deactivate') ? { deactivate: stringOption(options, 'deactivate')! } : {}),
      // Absent, not empty, without --secret: the body (and its id) is what it was before secrets existed.
      ...(secrets.length > 0 ? { secrets } : {}),
    };
    const { configId } = await import('../castore/config-id.js');
    const signature = Buffer.from(client.identity.sign(configSigningMessage(configId(body)))).toString('base64');
    const result = await client.call('graphs.submit', { graph, body, signature, force: booleanOption(options, 'force') });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`config ${result.configId} is the new head of '${graph}'${result.forced ? ` (forced over ${result.previousHead})` : ''}\n`);
  },
};

function periodicSummary(health: HealthCheck): string {
  if (health.intervalSeconds === undefined) return '';
  const probation = health.probationSeconds ? `, probation ${health.probationSeconds}s` : '';
  return `; every ${health.intervalSeconds}s, degraded after ${health.unhealthyAfter ?? DEFAULT_UNHEALTHY_AFTER} failures${probation}`;
}

const show: Command = {
  path: ['config', 'show'],
  summary: 'a config: targets, activation, health check, and how its agents are doing',
  args: '<config-id>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const config = await clientFrom(options).call('configs.show', { configId: args[0]! });
    if (booleanOption(options, 'json')) return writeJson(stdout, config);
    const s = config.summary;
    stdout.write(
      term`${[
        term`config   ${config.id}\n`,
        term`graph    ${config.graph}${config.forced ? ' (forced)' : ''}\n`,
        term`parents  ${config.body.parents.join(', ') || '-'}\n`,
        // A message may have several lines (like a commit message): kept, escaped, aligned under `message`.
        term`message  ${block(config.body.message).indented('         ')}\n`,
        Object.entries(config.body.targets).map(([system, target]) => term`target   ${system} = ${target}\n`),
        term`activate ${config.body.activation.command} (timeout ${config.body.activation.timeoutSeconds}s)\n`,
        term`health   ${config.body.health ? `${config.body.health.command} (${config.body.health.retries} retries${periodicSummary(config.body.health)})` : '-'}\n`,
        (config.body.secrets ?? []).map((ref) => term`secret   ${ref.name} -> ${ref.path ?? ref.name} (${ref.mode ?? '0400'}${ref.owner ? `, ${ref.owner}` : ''})\n`),
        term`agents   ${s.succeeded} succeeded, ${s.failed} failed, ${s.pending} pending, ${s.unreported} unreported\n`,
      ]}`,
    );
  },
};

const diff: Command = {
  path: ['config', 'diff'],
  summary: 'what changes between two configs\' closures, as nix store diff-closures lists it, and what an agent fetches',
  args: '[<from-config>] <config>',
  description:
    'Per system: packages whose versions changed or whose size changed by 8 KiB or more (`name: 1.0 → 2.0, +12.3 KiB`, ∅ for absent), ' +
    'then what an agent running the first config fetches for the second: the files (by content) it lacks, and what is left ' +
    'of them with reference-aware dedup (files restored from normalized blobs it holds). File bytes, uncompressed, before group deltas. ' +
    'With one config, it is compared with its parent.',
  minArgs: 1,
  maxArgs: 2,
  options: {
    system: { type: 'string', valueName: 'SYSTEM', description: 'only this system (e.g. x86_64-linux)' },
    limit: { type: 'string', valueName: 'N', description: `packages listed per system (default ${DEFAULT_DIFF_PACKAGES}, at most ${MAX_DIFF_PACKAGES})` },
    ...common,
  },
  async run({ args, options, stdout }) {
    const [from, configId] = args.length === 2 ? [args[0]!, args[1]!] : [undefined, args[0]!];
    const result = await clientFrom(options).call('configs.diff', { configId, from, system: stringOption(options, 'system'), limit: stringOption(options, 'limit') });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`config ${result.configId} compared with ${result.from ?? 'nothing (it has no parent)'}\n`);
    for (const system of result.systems) {
      const fetch = system.fetch;
      const saved = fetch.withTemplates.restoredBlobs > 0 || fetch.withTemplates.normalizedBlobs > 0;
      stdout.write(
        term`${[
          term`\n${system.system}: ${system.fromTarget ?? '∅'} → ${system.toTarget ?? '∅'}\n`,
          system.packages.map((entry) => term`  ${entry.line}\n`),
          system.packageCount === 0 ? term`  (no package listed)\n` : '',
          system.truncated ? term`  … ${system.packageCount - system.packages.length} more packages (--limit, or --json)\n` : '',
          term`  closure: ${system.before.paths} paths, ${formatBytes(system.before.narSize)} → ${system.after.paths} paths, ${formatBytes(system.after.narSize)}; store paths +${system.addedPaths} -${system.removedPaths}`,
          system.unlistedChanged > 0 ? term`; ${system.unlistedChanged} rebuilt package(s) not listed (same versions, size within 8 KiB)` : '',
          term`\n  fetch: ${fetch.newBlobs} new files, ${formatBytes(fetch.newBytes)}`,
          saved ? term`; ${formatBytes(fetch.withTemplates.bytes)} with reference-aware dedup (${fetch.withTemplates.restoredBlobs} restored from normalized blobs, ${fetch.withTemplates.normalizedBlobs} normalized blobs fetched)` : '',
          term`\n`,
        ]}`,
      );
    }
    if (result.omittedSystems > 0) stdout.write(term`\n${result.omittedSystems} more system(s) not shown: ask with --system\n`);
  },
};

const graphLs: Command = {
  path: ['graph', 'ls'],
  summary: 'list artifact graphs and their heads',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const { graphs } = await clientFrom(options).call('graphs.list');
    if (booleanOption(options, 'json')) return writeJson(stdout, graphs);
    stdout.write(table(['GRAPH', 'HEAD', 'AUDIT SEQ'], graphs.map((g) => [g.id, g.head, g.updatedSeq])));
  },
};

const graphLog: Command = {
  path: ['graph', 'log'],
  summary: "a graph's configs, newest first, with the head marked",
  args: '<graph>',
  minArgs: 1,
  maxArgs: 1,
  options: { limit: { type: 'string', valueName: 'N', description: 'how many (default 20)' }, ...common },
  async run({ args, options, stdout }) {
    const result = await clientFrom(options).call('graphs.show', { graph: args[0]!, limit: stringOption(options, 'limit') ?? '20' });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(
      table(
        ['', 'CONFIG', 'PARENT', 'OK/FAIL/PEND/UNREP', 'MESSAGE'],
        result.configs.map((c) => [c.head ? '*' : '', short(c.id), short(c.body.parents[0]), `${c.summary.succeeded}/${c.summary.failed}/${c.summary.pending}/${c.summary.unreported}`, `${c.forced ? '[forced] ' : ''}${c.body.message}`]),
      ),
    );
  },
};

const graphRollback: Command = {
  path: ['graph', 'rollback'],
  summary: "move a graph's head back (to its parent, or --to an earlier config); history is kept",
  args: '<graph>',
  minArgs: 1,
  maxArgs: 1,
  options: { to: { type: 'string', valueName: 'CONFIG', description: 'config to make the head' }, ...common },
  async run({ args, options, stdout }) {
    const to = stringOption(options, 'to');
    const result = await clientFrom(options).call('graphs.rollback', { graph: args[0]!, to });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`'${args[0]}' head moved back from ${result.from} to ${result.to}\n`);
  },
};

export const graphCommands: Command[] = [submit, show, diff, graphLs, graphLog, graphRollback];
