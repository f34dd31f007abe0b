/**
 * Staged rollouts, the state side (docs/coordinator.md "Staged rollouts"):
 * which agents a rollout releases next, and which config an agent of a
 * graph under a rollout should run. The commands (rollout-commands.ts)
 * decide with these, the reducer keeps the rows they read, and the desired
 * answer (api/queries.ts desiredConfigOf) asks `rolloutConfigFor`.
 */
import { createHash } from 'node:crypto';
import { rolloutInProgress } from '../../protocol/rollout-policy.js';
import type { GraphRow, RolloutRow, StateStore } from './state.js';

/** The id of the release row of `agentId` in the rollout of `configId`. */
export function releaseKey(configId: string, agentId: string): string {
  return `${configId}:${agentId}`;
}

/**
 * Where an agent stands in the release order of `configId`: SHA-256 of
 * `<config id>\n<agent id>`, hex. A fixed order per config, unrelated to
 * enrollment order or names, so the canary differs from one config to the
 * next (no machine is always first) yet anyone can recompute it.
 */
export function releaseRank(configId: string, agentId: string): string {
  return createHash('sha256').update(`${configId}\n${agentId}`).digest('hex');
}

/** `agentIds` in the release order of `configId` (ties, impossible for distinct ids, by id). */
export function releaseOrder(configId: string, agentIds: readonly string[]): string[] {
  return agentIds
    .map((id) => ({ id, rank: releaseRank(configId, id) }))
    .sort((a, b) => (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : a.id < b.id ? -1 : 1))
    .map(({ id }) => id);
}

/**
 * The config an unpinned agent following `graph` should run, given the
 * graph's head (`graph.head`). The one place a rollout bends the desired
 * answer:
 * - no rollout of the head: the head;
 * - a rollout of the head in progress (running, paused, halted): the head
 *   if it released the agent, else the rollout's base (the head before it;
 *   null for a graph's first config: nothing). Agents that enroll or join
 *   the graph during a rollout are released by a later batch, like others;
 * - a rollout of the head aborted while it was the graph's first config
 *   (nothing to move the head back to): its base (nothing), until the head
 *   moves again;
 * - a finished rollout: the head.
 */
export function rolloutConfigFor(state: StateStore, graph: GraphRow, agentId: string): string | null {
  const rollout = state.get('rollouts', graph.id);
  if (!rollout || rollout.configId !== graph.head) return graph.head;
  if (rolloutInProgress(rollout.status)) return state.get('rolloutReleases', releaseKey(graph.head, agentId)) ? graph.head : rollout.base;
  // An abort with a base moved the head away; one without left it, and holds until the head moves (a later event).
  if (rollout.status === 'aborted' && graph.updatedSeq < rollout.updatedSeq) return rollout.base;
  return graph.head;
}

/** Whether every agent the rollout released so far has an outcome, and its current batch is fully out. */
export function batchSettled(rollout: RolloutRow): boolean {
  return rollout.batch >= 0 && rollout.released >= rollout.target && rollout.active + rollout.failed >= rollout.released;
}

/** Failures that count against the threshold now: those since the operator last resumed a halted rollout. */
export function countedFailures(rollout: RolloutRow): number {
  return Math.max(0, rollout.failed - rollout.acceptedFailures);
}

/**
 * When the rollout takes its next step by itself (ms), or null: not
 * running, or waiting for released agents to report. A batch not fully
 * out yet (released below its target) continues at once.
 */
export function nextStepAt(rollout: RolloutRow, now: number): number | null {
  if (rollout.status !== 'running' || !rollout.policy) return null;
  if (rollout.batch < 0 || rollout.released < rollout.target) return now;
  if (rollout.settledAt === null) return null;
  return rollout.settledAt + rollout.policy.pauseSeconds * 1000;
}
