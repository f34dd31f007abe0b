/**
 * A graph's staged-rollout policy (docs/coordinator.md "Staged rollouts"):
 * the wire and event shape, and the arithmetic every side agrees on.
 *
 * - `batches`: cumulative targets, in order. Each is a count of agents
 *   (`{ agents: 1 }`: "the first agent") or a percentage of the graph's
 *   eligible followers (`{ percent: 10 }`, rounded up), and the last is
 *   always `{ percent: 100 }` (the rest), so a rollout that is not halted
 *   ends with everyone. `1,10%,100%` is a canary, then a tenth, then all.
 * - `pauseSeconds`: how long a settled batch (every released agent
 *   reported the config active, or failed) waits before the next.
 * - `maxFailures`: failures tolerated among released agents before the
 *   rollout halts: a count, or a percentage of the agents released so far
 *   (`{ percent: 10 }`: halted once more than 10% failed). `{ count: 0 }`:
 *   the first failure halts.
 */
import { z } from 'zod';

/** At most this many batches: a policy is shown whole in `rollout status` and stored in every policy event. */
export const MAX_ROLLOUT_BATCHES = 20;
/** A pause is at most a week: longer is an abandoned rollout, better aborted. */
export const MAX_ROLLOUT_PAUSE_SECONDS = 7 * 86_400;
/** Counts (batch sizes, tolerated failures) are at most this: far above any fleet one coordinator serves. */
export const MAX_ROLLOUT_COUNT = 1_000_000;

const Count = z.number().int().min(1, 'a batch of agents is at least 1').max(MAX_ROLLOUT_COUNT, `a batch is at most ${MAX_ROLLOUT_COUNT} agents`);
const Percent = z.number().int().min(1, 'a percentage is at least 1%').max(100, 'a percentage is at most 100%');

export const RolloutBatchSchema = z.union([z.strictObject({ agents: Count }), z.strictObject({ percent: Percent })]);
export type RolloutBatch = z.infer<typeof RolloutBatchSchema>;

export const MaxFailuresSchema = z.union([
  z.strictObject({ count: z.number().int().min(0).max(MAX_ROLLOUT_COUNT, `at most ${MAX_ROLLOUT_COUNT} failures`) }),
  z.strictObject({ percent: z.number().int().min(0).max(100, 'a percentage is at most 100%') }),
]);
export type MaxFailures = z.infer<typeof MaxFailuresSchema>;

export const RolloutPolicySchema = z.strictObject({
  batches: z
    .array(RolloutBatchSchema)
    .min(1, 'a policy has at least one batch')
    .max(MAX_ROLLOUT_BATCHES, `a policy has at most ${MAX_ROLLOUT_BATCHES} batches`)
    .refine((batches) => {
      // Checked with min(1) in the same pass: an empty list is that issue, not this one.
      const last = batches[batches.length - 1];
      return last === undefined || ('percent' in last && last.percent === 100);
    }, 'the last batch must be 100% (the rest of the fleet)'),
  pauseSeconds: z.number().int().min(0).max(MAX_ROLLOUT_PAUSE_SECONDS, `a pause is at most ${MAX_ROLLOUT_PAUSE_SECONDS} seconds (a week)`),
  maxFailures: MaxFailuresSchema,
});
export type RolloutPolicy = z.infer<typeof RolloutPolicySchema>;

export const RolloutStatusSchema = z.enum(['running', 'paused', 'halted', 'aborted', 'complete']);
export type RolloutStatus = z.infer<typeof RolloutStatusSchema>;

/** A rollout still deciding who runs what: the head reaches only the agents it released. */
export function rolloutInProgress(status: RolloutStatus | null): status is 'running' | 'paused' | 'halted' {
  return status === 'running' || status === 'paused' || status === 'halted';
}

/**
 * How many agents batch `batch` (0-based) has released in all once done,
 * among `eligible` agents (released ones included): its own target, at
 * least the previous batches' (`previous`), at most `eligible`. A
 * percentage rounds up, so 10% of 3 agents is 1, not 0.
 */
export function batchTarget(policy: RolloutPolicy, batch: number, eligible: number, previous: number): number {
  const entry = policy.batches[Math.min(batch, policy.batches.length - 1)]!;
  const own = 'agents' in entry ? entry.agents : Math.ceil((entry.percent * eligible) / 100);
  return Math.min(eligible, Math.max(previous, own));
}

/** Whether `failed` failures among `released` agents exceed what `maxFailures` tolerates. */
export function failuresExceed(maxFailures: MaxFailures, failed: number, released: number): boolean {
  if ('count' in maxFailures) return failed > maxFailures.count;
  // failed / released > percent / 100, in integers.
  return failed * 100 > maxFailures.percent * released;
}

/** A policy as the CLI writes it: `1,10%,100%; pause 600s; max failures 0`. */
export function formatRolloutPolicy(policy: RolloutPolicy): string {
  const batches = policy.batches.map((batch) => ('agents' in batch ? String(batch.agents) : `${batch.percent}%`)).join(',');
  const failures = 'count' in policy.maxFailures ? String(policy.maxFailures.count) : `${policy.maxFailures.percent}%`;
  return `batches ${batches}; pause ${policy.pauseSeconds}s; max failures ${failures}`;
}

/**
 * Parses the CLI's `--batches 1,10%,100%` (at most MAX_ROLLOUT_BATCHES
 * entries, counted before anything is built) and `--max-failures 0|N|P%`.
 * Throws RangeError naming the bad entry; the schema checks the rest.
 */
export function parseBatches(text: string): RolloutBatch[] {
  const parts = text.split(',', MAX_ROLLOUT_BATCHES + 1);
  if (parts.length > MAX_ROLLOUT_BATCHES) throw new RangeError(`--batches: at most ${MAX_ROLLOUT_BATCHES} batches`);
  return parts.map((part) => {
    const match = /^(\d{1,7})(%?)$/.exec(part.trim());
    if (!match) throw new RangeError(`--batches: '${part}' is neither a number of agents (N) nor a percentage (P%)`);
    return match[2] ? { percent: Number(match[1]) } : { agents: Number(match[1]) };
  });
}

/** Parses `--max-failures 0`, `N` or `P%`; throws RangeError on anything else. */
export function parseMaxFailures(text: string): MaxFailures {
  const match = /^(\d{1,7})(%?)$/.exec(text.trim());
  if (!match) throw new RangeError(`--max-failures: '${text}' is neither a count (N) nor a percentage (P%)`);
  return match[2] ? { percent: Number(match[1]) } : { count: Number(match[1]) };
}
