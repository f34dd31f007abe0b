/**
 * Staged-rollout commands (docs/coordinator.md "Staged rollouts"). The
 * operators' (`ferry rollout policy|pause|resume|abort`) check the role as
 * the other graph commands do; the coordinator's own (advance, halt,
 * complete) are what api/rollout-driver.ts records from its timer and
 * from the commits it hears, and refuse any other actor: a rollout's
 * progress is what the coordinator observed, never what a client says.
 * Each returns the one event, or undefined when there is nothing to do.
 */
import { FerryError } from '../../protocol/errors.js';
import type { KeyId } from '../../protocol/identity.js';
import { SetRolloutPolicyInput, RolloutRefInput } from '../../protocol/api/inputs.js';
import { batchTarget, failuresExceed, formatRolloutPolicy, rolloutInProgress } from '../../protocol/rollout-policy.js';
import { allow, parse, type CommandContext } from './commands.js';
import { MAX_RELEASED_PER_EVENT, type EventDraft } from './events.js';
import { batchSettled, countedFailures, nextStepAt, releaseKey, releaseOrder } from './rollouts.js';
import type { RolloutRow } from './state.js';

/**
 * Sets or removes (null) a graph's rollout policy; the graph need not
 * exist yet (a policy set first covers its first config). Refuses
 * (CONFLICT) while a rollout of the graph is in progress: its batches were
 * planned by the policy it started with; abort it or let it finish first.
 */
export function setRolloutPolicy(context: CommandContext, input: unknown): EventDraft<'rollout.policy'> | undefined {
  allow(context, 'admin', 'operator');
  const { graph, policy } = parse(SetRolloutPolicyInput, input);
  const row = context.state.get('rollouts', graph);
  if (row && rolloutInProgress(row.status)) {
    throw new FerryError('CONFLICT', `the rollout of ${row.configId} on '${graph}' is ${row.status}: abort it (ferry rollout abort ${graph}) or let it complete before changing the policy`);
  }
  if (!row && policy === null) return undefined;
  return { action: 'rollout.policy', subject: graph, payload: { graph, policy } };
}

/** The graph's rollout row if a rollout is in progress; refuses (NOT_FOUND, CONFLICT) otherwise. */
function inProgress(context: CommandContext, graph: string): RolloutRow & { configId: NonNullable<RolloutRow['configId']> } {
  const row = context.state.get('rollouts', graph);
  if (!row?.configId) throw new FerryError('NOT_FOUND', `no rollout on graph '${graph}'`);
  if (!rolloutInProgress(row.status)) throw new FerryError('CONFLICT', `the rollout of ${row.configId} on '${graph}' is ${row.status} already`);
  return row as RolloutRow & { configId: NonNullable<RolloutRow['configId']> };
}

/** Pauses a running rollout: nobody else is released until it is resumed (failures still halt it). */
export function pauseRollout(context: CommandContext, input: unknown): EventDraft<'rollout.pause'> {
  allow(context, 'admin', 'operator');
  const { graph } = parse(RolloutRefInput, input);
  const row = inProgress(context, graph);
  if (row.status !== 'running') throw new FerryError('CONFLICT', `the rollout on '${graph}' is ${row.status}, not running`);
  return { action: 'rollout.pause', subject: graph, payload: { graph, configId: row.configId } };
}

/**
 * Resumes a paused or halted rollout. Resuming a halted one accepts the
 * failures so far (recorded in the event): the threshold counts only later
 * ones, so the operator who looked at them takes the rest of the rollout
 * on the same terms as before.
 */
export function resumeRollout(context: CommandContext, input: unknown): EventDraft<'rollout.resume'> {
  allow(context, 'admin', 'operator');
  const { graph } = parse(RolloutRefInput, input);
  const row = inProgress(context, graph);
  if (row.status === 'running') throw new FerryError('CONFLICT', `the rollout on '${graph}' is running already`);
  return { action: 'rollout.resume', subject: graph, payload: { graph, configId: row.configId, acceptedFailures: row.status === 'halted' ? row.failed : row.acceptedFailures } };
}

/**
 * Ends a rollout in progress: every agent of the graph goes back to the
 * rollout's base, the released ones included, as `graph rollback` would
 * (the event moves the head back to the base). Agents that already rolled
 * back by themselves stay where they are.
 */
export function abortRollout(context: CommandContext, input: unknown): EventDraft<'rollout.abort'> {
  allow(context, 'admin', 'operator');
  const { graph } = parse(RolloutRefInput, input);
  const row = inProgress(context, graph);
  return { action: 'rollout.abort', subject: graph, payload: { graph, configId: row.configId, base: row.base } };
}

/**
 * The coordinator's step of a running rollout, if one is due at
 * `context.now`: halt (failures over the threshold; also when paused),
 * release the next agents, or complete. `followers`: the ids of the
 * graph's enrolled, unpinned followers as the caller read them; each is
 * checked again here, in the transaction, so a stale list releases nobody
 * it should not. At most MAX_RELEASED_PER_EVENT agents per event: a larger
 * batch is released by the steps that follow at once.
 */
export function stepRollout(context: CommandContext, graph: string, followers: readonly string[]): EventDraft<'rollout.advance' | 'rollout.halt' | 'rollout.complete'> | undefined {
  allow(context, 'coordinator');
  const row = context.state.get('rollouts', graph);
  if (!row?.configId || !row.policy || (row.status !== 'running' && row.status !== 'paused')) return undefined;
  const { configId, policy } = row;
  const failed = countedFailures(row);
  if (failuresExceed(policy.maxFailures, failed, row.released)) {
    const reason = `${failed} of ${row.released} released agent(s) failed (${formatRolloutPolicy(policy)})`;
    return { action: 'rollout.halt', subject: graph, payload: { graph, configId, reason, failed: row.failed, released: row.released } };
  }
  const due = nextStepAt(row, context.now);
  if (row.status !== 'running' || due === null || due > context.now) return undefined;
  const last = policy.batches.length - 1;
  if (batchSettled(row) && row.batch >= last) {
    return { action: 'rollout.complete', subject: graph, payload: { graph, configId, released: row.released, failed: row.failed } };
  }
  const eligible = followers.filter((id) => {
    const agent = context.state.get('agents', id);
    return agent?.status === 'enrolled' && agent.desiredGraph === graph && agent.pinnedConfig === null;
  });
  const unreleased = eligible.filter((id) => !context.state.get('rolloutReleases', releaseKey(configId, id)));
  // Agents released earlier count toward the fleet a percentage is of, also if they left the graph since.
  const fleet = row.released + unreleased.length;
  const continuing = row.batch >= 0 && row.released < row.target;
  const batch = continuing ? row.batch : row.batch + 1;
  const planned = continuing ? row.target : batchTarget(policy, batch, fleet, row.target);
  const agents = releaseOrder(configId, unreleased).slice(0, Math.min(MAX_RELEASED_PER_EVENT, Math.max(0, planned - row.released)));
  // Fewer agents than planned are left (some left the graph): the target shrinks to what can be released.
  const target = Math.max(row.released, Math.min(planned, row.released + unreleased.length));
  return { action: 'rollout.advance', subject: graph, payload: { graph, configId, batch, target, agents: agents as KeyId[] } };
}
