/** `ferry agent …`: the machine side. */
import { statSync } from 'node:fs';
import path from 'node:path';
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, type Command, type OptionSpec, type OptionValues } from './command.js';
import { oneLine, table } from './format.js';
import { counted, openInput } from './io.js';
import { createProgress } from './progress.js';
import { block, term, type TerminalOutput } from './terminal-text.js';
import { DEFAULT_WATCH_SECONDS, MAX_WATCH_SECONDS } from '../protocol/config.js';

/** The agent's modules (castore, the data plane) load only for the command that runs. */
const loadAgent = () => import('../agent/index.js');

const stateDirOption: Record<string, OptionSpec> = {
  'state-dir': { type: 'string', valueName: 'DIR', description: 'agent state directory (default: $FERRY_AGENT_STATE_DIR or /var/lib/ferry)' },
};

/**
 * The agent's log, escaped for the terminal: its lines quote the coordinator, activation output
 * and files on disk. An entry's further lines are indented, so none passes for an entry of its
 * own. Every Agent the CLI makes gets it, so none falls back to writing raw stderr.
 */
function agentLog(stderr: TerminalOutput): (line: string) => void {
  return (line) => stderr.write(term`${block(line).indented('  ')}\n`);
}

function stateDirFrom(options: OptionValues): string {
  return path.resolve(stringOption(options, 'state-dir') ?? process.env.FERRY_AGENT_STATE_DIR ?? '/var/lib/ferry');
}

function positiveInteger(options: OptionValues, name: string, fallback: number): number {
  const text = stringOption(options, name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new UsageError(`--${name} '${text}' is not a non-negative integer`);
  return value;
}

/** `--keep-generations N`: at least 1 (the current generation is always kept). */
function keepGenerationsOption(options: OptionValues): number | undefined {
  const text = stringOption(options, 'keep-generations');
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1 || value > 10_000) throw new UsageError(`--keep-generations '${text}' is not a whole number from 1 to 10000`);
  return value;
}

const enroll: Command = {
  path: ['agent', 'enroll'],
  summary: 'enroll this machine with a coordinator, using a join string from `ferry tokens create`',
  args: '<join-string>',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...stateDirOption,
    'store-dir': { type: 'string', valueName: 'DIR', description: 'where store paths are materialized (default /nix/store: closures run at their real paths)' },
    name: { type: 'string', valueName: 'NAME', description: 'agent name (default: the hostname)' },
    type: { type: 'string', valueName: 'TYPE', description: 'agent type, e.g. gateway (default: machine)' },
    'no-wait': { type: 'boolean', description: 'do not wait for an admin to approve the enrollment' },
    ...jsonOption,
  },
  async run({ args, options, stdout, stderr }) {
    const { Agent } = await loadAgent();
    const stateDir = stateDirFrom(options);
    const name = stringOption(options, 'name');
    const type = stringOption(options, 'type');
    const result = await Agent.enroll(args[0]!, {
      stateDir,
      storeDir: path.resolve(stringOption(options, 'store-dir') ?? '/nix/store'),
      ...(name ? { name } : {}),
      ...(type ? { type } : {}),
    });
    let status = result.status;
    if (status === 'enrolling' && !booleanOption(options, 'no-wait')) {
      stderr.write(term`enrolled as ${result.agentId}; waiting for an admin to approve (ferry agents approve ${result.agentId})…\n`);
      const agent = new Agent(stateDir, { log: agentLog(stderr) });
      while (status === 'enrolling') {
        await new Promise((resolve) => setTimeout(resolve, 2000));
        status = await agent.enrollmentStatus();
      }
    }
    if (booleanOption(options, 'json')) return writeJson(stdout, { ...result, status, stateDir });
    stdout.write(term`agent ${result.agentId}: ${status}\nstate: ${stateDir}\nstart it with: ferry agent run --state-dir ${stateDir}\n`);
    return status === 'enrolled' || status === 'enrolling' ? 0 : 1;
  },
};

const run: Command = {
  path: ['agent', 'run'],
  summary: 'run the agent: follow the desired config, deploy, health-check, roll back, report',
  maxArgs: 0,
  options: {
    ...stateDirOption,
    poll: {
      type: 'string',
      valueName: 'SECONDS',
      description: `longest wait between rounds (default ${DEFAULT_WATCH_SECONDS}, at most ${MAX_WATCH_SECONDS}; a new config is seen at once: the coordinator holds the watch)`,
    },
    'health-retry-delay': { type: 'string', valueName: 'MS', description: 'pause between health-check attempts (default 1000)' },
    http: { type: 'boolean', description: 'fetch over HTTP, not QUIC' },
    once: { type: 'boolean', description: 'one round, then exit (0 unless the round failed)' },
    'keep-generations': {
      type: 'string',
      valueName: 'N',
      description: 'after each successful deployment, keep this many generations (the current one and the newest others) and collect the rest (default 5; reported in the facts)',
    },
    'metrics-textfile': {
      type: 'string',
      valueName: 'PATH',
      description: "rewrite this node_exporter textfile (e.g. /var/lib/node_exporter/textfile/ferry.prom) after each deployment: its config and result, duration, bytes fetched",
    },
  },
  async run({ options, stderr }) {
    const { Agent } = await loadAgent();
    const agent = new Agent(stateDirFrom(options), {
      pollIntervalMs: positiveInteger(options, 'poll', DEFAULT_WATCH_SECONDS) * 1000,
      healthRetryDelayMs: positiveInteger(options, 'health-retry-delay', 1000),
      keepGenerations: keepGenerationsOption(options),
      httpOnly: booleanOption(options, 'http'),
      log: agentLog(stderr),
      logEvents: true,
      ...(stringOption(options, 'metrics-textfile') ? { metricsTextfile: path.resolve(stringOption(options, 'metrics-textfile')!) } : {}),
    });
    try {
      if (booleanOption(options, 'once')) {
        const result = await agent.runOnce();
        stderr.write(term`round: ${result}\n`);
        return result === 'failed' || result === 'rolled-back' ? 1 : 0;
      }
      stderr.write(term`ferry agent ${agent.state.name} (${agent.identity.keyId}) following ${agent.state.coordinator.httpUrl}\n`);
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await agent.run(controller.signal);
    } finally {
      await agent.close();
    }
  },
};

const status: Command = {
  path: ['agent', 'status'],
  summary: "this machine's agent: coordinator, current generation, deployment in progress, recent events",
  maxArgs: 0,
  options: { ...stateDirOption, ...jsonOption },
  async run({ options, stdout, stderr }) {
    const { Agent } = await loadAgent();
    const agent = new Agent(stateDirFrom(options), { log: agentLog(stderr) });
    const current = agent.generations.current();
    const events = agent.events.read().slice(-10);
    const state = agent.state;
    // What the daemon's health monitor last found for the running config (its events; the daemon keeps the rest in memory).
    const health = current ? (agent.events.read().filter((event) => event.kind === 'health' && event.configId === current.configId).at(-1) ?? null) : null;
    const activated = current && state.activated?.generation === current.number ? state.activated : null;
    const probationSeconds = current?.health?.probationSeconds ?? 0;
    const probationUntil = activated?.probation && probationSeconds > 0 ? activated.at + probationSeconds * 1000 : null;
    if (booleanOption(options, 'json')) {
      return writeJson(stdout, { agentId: agent.identity.keyId, name: state.name, coordinator: state.coordinator.httpUrl, pinnedTls: state.coordinator.pinnedTls, storeDir: state.storeDir, current: current ?? null, activated, probationUntil, health, deploying: state.deploying, pendingReports: state.pendingReports.length, refused: state.refused, events });
    }
    stdout.write(
      term`${[
        term`agent       ${state.name} (${agent.identity.keyId})\n`,
        term`coordinator ${state.coordinator.httpUrl} (${state.coordinator.pinnedTls ? 'TLS, its certificate pinned' : 'not encrypted: enroll with a join string from `ferry tokens create` to encrypt'})\n`,
        term`store dir   ${state.storeDir}\n`,
        term`current     ${current ? `generation ${current.number}: ${current.configId.slice(0, 12)} -> ${current.target}` : '(none)'}\n`,
        activated ? term`activated   ${new Date(activated.at).toISOString()}${probationUntil ? `, on probation until ${new Date(probationUntil).toISOString()}` : ''}\n` : [],
        current?.health?.intervalSeconds ? term`health      ${health ? `${oneLine(health.message)} (${new Date(health.at).toISOString()})` : 'not checked yet'}\n` : [],
        term`deploying   ${state.deploying ?? '-'}\nunsent reports ${state.pendingReports.length}\n\nrecent events:\n`,
        events.map((event) => term`  ${new Date(event.at).toISOString()}  ${event.kind.padEnd(12)} ${oneLine(event.message)}\n`),
      ]}`,
    );
  },
};

const generations: Command = {
  path: ['agent', 'generations'],
  summary: 'list the generations on this machine (* marks the current one)',
  maxArgs: 0,
  options: { ...stateDirOption, ...jsonOption },
  async run({ options, stdout, stderr }) {
    const { Agent, readAgentState } = await loadAgent();
    readAgentState(stateDirFrom(options));
    const agent = new Agent(stateDirFrom(options), { log: agentLog(stderr) });
    const list = agent.generations.list();
    const current = agent.generations.current()?.number;
    if (booleanOption(options, 'json')) return writeJson(stdout, list.map((entry) => ({ ...entry, current: entry.number === current })));
    stdout.write(
      list.length === 0
        ? term`no generations yet\n`
        : table(
            ['  GEN', 'CONFIG', 'GRAPH', 'TARGET', 'CREATED'],
            list.map((entry) => [`${entry.number === current ? '*' : ' '} ${entry.number}`, entry.configId.slice(0, 12), entry.graph ?? '-', entry.target, new Date(entry.createdAt).toISOString()]),
          ),
    );
  },
};

const rollback: Command = {
  path: ['agent', 'rollback'],
  summary: 'switch back to an earlier generation (default: the previous one) and re-activate it; the coordinator is told',
  maxArgs: 0,
  options: { ...stateDirOption, to: { type: 'string', valueName: 'N', description: 'generation number to switch to' }, ...jsonOption },
  async run({ options, stdout, stderr }) {
    const { Agent } = await loadAgent();
    const agent = new Agent(stateDirFrom(options), { log: agentLog(stderr) });
    try {
      const to = stringOption(options, 'to');
      const target = await agent.rollback(to === undefined ? undefined : positiveInteger(options, 'to', 0));
      if (booleanOption(options, 'json')) return writeJson(stdout, target);
      stdout.write(term`now on generation ${target.number} (${target.configId.slice(0, 12)} -> ${target.target})\n`);
    } finally {
      await agent.close();
    }
  },
};

const gc: Command = {
  path: ['agent', 'gc'],
  summary: 'delete old generations and the store paths nothing kept references',
  maxArgs: 0,
  options: { ...stateDirOption, keep: { type: 'string', valueName: 'N', description: 'generations to keep besides the current one (default 5)' }, ...jsonOption },
  async run({ options, stdout, stderr }) {
    const { Agent } = await loadAgent();
    const agent = new Agent(stateDirFrom(options), { log: agentLog(stderr) });
    try {
      const result = await agent.gc(positiveInteger(options, 'keep', 5));
      if (booleanOption(options, 'json')) return writeJson(stdout, result);
      stdout.write(term`removed ${result.removedGenerations.length} generations and ${result.removedStorePaths.length} store paths\n`);
    } finally {
      await agent.close();
    }
  },
};

const applyBundle: Command = {
  path: ['agent', 'apply-bundle'],
  summary: 'verify and deploy a bundle from `ferry bundle create`, with no network (reported when next online)',
  description:
    'Refuses a bundle not made for this agent, an expired one, and (unless --force) one whose config is older than the one running. ' +
    'The coordinator records, when the agent next reaches it, that the config came from a bundle and whether it was forced.',
  args: '<file.tar|->',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...stateDirOption,
    force: { type: 'boolean', description: 'apply a config older than the one running (reported as forced); never a bundle for another agent or an expired one' },
    ...jsonOption,
  },
  async run({ args, options, stdout, stderr, stdin }) {
    const { Agent } = await loadAgent();
    const agent = new Agent(stateDirFrom(options), { log: () => undefined });
    try {
      const json = booleanOption(options, 'json');
      const total = args[0] === '-' ? undefined : statSync(args[0]!).size;
      const progress = createProgress(stderr, 'verifying bundle', 'bytes', json);
      const outcome = await agent.applyBundle(
        counted(openInput(args[0]!, stdin), (read) => progress.update(read, total)),
        { force: booleanOption(options, 'force') },
      );
      progress.done();
      if (json) return writeJson(stdout, outcome);
      stdout.write(term`config ${outcome.configId}: ${outcome.result}${outcome.forced ? ' (forced: older than the config it replaced)' : ''}\n`);
      return outcome.result === 'active' ? 0 : 1;
    } finally {
      await agent.close();
    }
  },
};

export const agentCommands: Command[] = [enroll, run, status, generations, rollback, gc, applyBundle];
