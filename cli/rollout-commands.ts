/** `ferry rollout policy|status|pause|resume|abort GRAPH`: staged rollouts (docs/coordinator.md "Staged rollouts"). */
import { formatRolloutPolicy, MAX_ROLLOUT_PAUSE_SECONDS, parseBatches, parseMaxFailures, type RolloutPolicy } from '../protocol/rollout-policy.js';
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { parseDuration, short } from './format.js';
import { term } from './terminal-text.js';

const common = { ...connectionOptions, ...jsonOption };
const graphArg = { args: '<graph>', minArgs: 1, maxArgs: 1 } as const;

/** The policy the options describe; UsageError naming the option for anything malformed (the coordinator checks again). */
function policyFrom(batchesText: string | undefined, pauseText: string | undefined, failuresText: string | undefined): RolloutPolicy {
  if (batchesText === undefined) throw new UsageError('--batches is required (e.g. --batches 1,10%,100%), or --none to remove the policy');
  let batches;
  let maxFailures;
  try {
    batches = parseBatches(batchesText);
    maxFailures = parseMaxFailures(failuresText ?? '0');
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const last = batches[batches.length - 1]!;
  if (!('percent' in last) || last.percent !== 100) throw new UsageError(`--batches: the last batch must be 100% (the rest of the fleet), not '${batchesText.split(',').pop()}'`);
  const pauseSeconds = pauseText === undefined ? 0 : parseDuration(pauseText);
  if (pauseSeconds === undefined) throw new UsageError(`--pause: '${pauseText}' is not a duration (30s, 10m, 2h)`);
  if (pauseSeconds > MAX_ROLLOUT_PAUSE_SECONDS) throw new UsageError(`--pause: at most ${MAX_ROLLOUT_PAUSE_SECONDS / 86_400} days`);
  return { batches, pauseSeconds, maxFailures };
}

const policy: Command = {
  path: ['rollout', 'policy'],
  summary: "set (or --none: remove) a graph's staged-rollout policy",
  ...graphArg,
  description:
    'Configs submitted to the graph afterwards go out in batches: --batches lists cumulative targets, agents (N) or a share ' +
    'of the followers (P%), ending with 100%; --pause waits between settled batches; --max-failures (N or P% of released agents, ' +
    'default 0) halts the rollout when exceeded. Agents not yet reached keep the previous head.',
  options: {
    batches: { type: 'string', valueName: 'LIST', description: 'e.g. 1,10%,100% (at most 20 batches, the last 100%)' },
    pause: { type: 'string', valueName: 'DURATION', description: 'between batches, e.g. 10m (default 0)' },
    'max-failures': { type: 'string', valueName: 'N|P%', description: 'failures tolerated among released agents (default 0)' },
    none: { type: 'boolean', description: 'remove the policy: later configs go to every follower at once' },
    ...common,
  },
  async run({ args, options, stdout }) {
    const graph = args[0]!;
    const none = booleanOption(options, 'none');
    const batches = stringOption(options, 'batches');
    const pause = stringOption(options, 'pause');
    const failures = stringOption(options, 'max-failures');
    if (none && (batches !== undefined || pause !== undefined || failures !== undefined)) throw new UsageError('--none takes no --batches, --pause or --max-failures');
    const chosen = none ? null : policyFrom(batches, pause, failures);
    const result = await clientFrom(options).call('rollouts.policy', { graph, policy: chosen });
    if (booleanOption(options, 'json')) return writeJson(stdout, { graph, policy: chosen, ...result });
    stdout.write(chosen ? term`'${graph}' rolls out by: ${formatRolloutPolicy(chosen)}\n` : term`'${graph}' has no rollout policy: configs go to every follower at once\n`);
  },
};

const status: Command = {
  path: ['rollout', 'status'],
  summary: "a graph's rollout: config, base, batch, released/active/failed, status, next step",
  ...graphArg,
  options: common,
  async run({ args, options, stdout }) {
    const view = await clientFrom(options).call('rollouts.show', { graph: args[0]! });
    if (booleanOption(options, 'json')) return writeJson(stdout, view);
    const next = view.nextStepAt === null ? '-' : view.nextStepAt <= Date.now() ? 'now' : `in ${Math.ceil((view.nextStepAt - Date.now()) / 1000)}s (${new Date(view.nextStepAt).toISOString()})`;
    stdout.write(
      term`${[
        term`graph     ${view.id}\n`,
        term`policy    ${view.policy ? formatRolloutPolicy(view.policy) : '(none)'}\n`,
        term`status    ${view.status ?? 'no rollout yet'}${view.reason ? ` — ${view.reason}` : ''}\n`,
        term`config    ${view.configId ?? '-'}\n`,
        term`base      ${view.base ?? '(nothing)'}\n`,
        term`head      ${short(view.head ?? undefined)}\n`,
        term`batch     ${view.batch + 1}/${view.batches} (target ${view.target} agent(s))\n`,
        term`agents    ${view.released} released: ${view.active} active, ${view.failed} failed${view.acceptedFailures ? ` (${view.acceptedFailures} accepted)` : ''}, ${view.pending} pending\n`,
        term`next step ${next}\n`,
      ]}`,
    );
  },
};

function control(verb: 'pause' | 'resume' | 'abort', summary: string): Command {
  return {
    path: ['rollout', verb],
    summary,
    ...graphArg,
    options: common,
    async run({ args, options, stdout }) {
      const result = await clientFrom(options).call(`rollouts.${verb}`, { graph: args[0]! });
      if (booleanOption(options, 'json')) return writeJson(stdout, result);
      stdout.write(term`rollout on '${args[0]}': ${verb === 'abort' ? 'aborted (every agent goes back to the base)' : verb === 'pause' ? 'paused' : 'resumed'} (audit event #${String(result.seq)})\n`);
    },
  };
}

export const rolloutCommands: Command[] = [
  policy,
  status,
  control('pause', 'stop releasing further batches (failures still halt it)'),
  control('resume', 'resume a paused or halted rollout (a halted one accepts the failures so far)'),
  control('abort', 'end the rollout: the head returns to the base, released agents go back'),
];
