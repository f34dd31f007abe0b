// Batch sizing, release order, thresholds, the CLI's policy syntax, and a rollout driven through
// the commands and the one reducer in memory: replaying its log rebuilds the same state.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { batchTarget, failuresExceed, parseBatches, parseMaxFailures, RolloutPolicySchema, type RolloutPolicy } from '../../protocol/rollout-policy.js';
import { releaseOrder, releaseRank, rolloutConfigFor } from './rollouts.js';
import { stepRollout, abortRollout, setRolloutPolicy } from './rollout-commands.js';
import { applyEvent, replayLog } from './reducer.js';
import { MemoryStateStore, type StateStore } from './state.js';
import type { AuditEvent, EventDraft } from './events.js';
import type { CommandContext } from './commands.js';

/** A 64-hex id (key ids and config ids both are), named for reading. */
const hex = (name: string): string => createHash('sha256').update(name).digest('hex');
const BASE = hex('base');
const NEXT = hex('next');

const policy = (batches: string, maxFailures = '0', pauseSeconds = 0): RolloutPolicy => RolloutPolicySchema.parse({ batches: parseBatches(batches), pauseSeconds, maxFailures: parseMaxFailures(maxFailures) });

describe('batch sizing', () => {
  it('targets are cumulative: a count, a share rounded up, never below the previous, never above the fleet', () => {
    const p = policy('1,10%,50%,100%');
    expect([0, 1, 2, 3].map((batch) => batchTarget(p, batch, 3, 0))).toEqual([1, 1, 2, 3]);
    expect(batchTarget(p, 1, 200, 1)).toBe(20);
    expect(batchTarget(p, 2, 200, 20)).toBe(100);
    expect(batchTarget(p, 3, 200, 100)).toBe(200);
    // A count larger than the fleet is the fleet; a share smaller than what went out already keeps it.
    expect(batchTarget(policy('5,100%'), 0, 3, 0)).toBe(3);
    expect(batchTarget(policy('50,10%,100%'), 1, 100, 50)).toBe(50);
    expect(batchTarget(p, 0, 0, 0)).toBe(0);
  });

  it('thresholds: a count is exceeded above it, a share above its fraction of the released', () => {
    expect(failuresExceed({ count: 0 }, 0, 10)).toBe(false);
    expect(failuresExceed({ count: 0 }, 1, 10)).toBe(true);
    expect(failuresExceed({ count: 2 }, 2, 10)).toBe(false);
    expect(failuresExceed({ percent: 10 }, 1, 10)).toBe(false);
    expect(failuresExceed({ percent: 10 }, 2, 10)).toBe(true);
    expect(failuresExceed({ percent: 10 }, 1, 1)).toBe(true);
  });
});

describe('release order', () => {
  it('is sha256(config, agent) order: deterministic, per config, a permutation', () => {
    const ids = Array.from({ length: 50 }, (_, i) => `agent-${i}`);
    const a = releaseOrder('config-a', ids);
    expect(releaseOrder('config-a', [...ids].reverse())).toEqual(a);
    expect([...a].sort()).toEqual([...ids].sort());
    for (let i = 1; i < a.length; i++) expect(releaseRank('config-a', a[i - 1]!) < releaseRank('config-a', a[i]!)).toBe(true);
    // Another config, another canary order (50 agents: the same order by chance is negligible).
    expect(releaseOrder('config-b', ids)).not.toEqual(a);
  });
});

describe('the CLI syntax', () => {
  it('parses batches and failure thresholds, and refuses malformed ones by name', () => {
    expect(parseBatches('1,10%,100%')).toEqual([{ agents: 1 }, { percent: 10 }, { percent: 100 }]);
    expect(parseMaxFailures('5%')).toEqual({ percent: 5 });
    expect(() => parseBatches('1,,100%')).toThrow(/'' is neither/);
    expect(() => parseBatches('ten,100%')).toThrow(/'ten' is neither/);
    expect(() => parseBatches(Array(1_000_000).fill('1').join(','))).toThrow(/at most 20 batches/);
    expect(() => parseMaxFailures('-1')).toThrow(/--max-failures/);
    expect(RolloutPolicySchema.safeParse({ batches: parseBatches('101%'), pauseSeconds: 0, maxFailures: { count: 0 } }).success).toBe(false);
  });
});

/** A fleet in memory: graph `web` with a base config, `n` enrolled followers, driven by commands through applyEvent. */
function fleet(n: number) {
  const store = new MemoryStateStore();
  const log: AuditEvent[] = [];
  let now = 1_000_000;
  const apply = (draft: EventDraft | undefined, role: 'admin' | 'coordinator' = 'coordinator'): AuditEvent | undefined => {
    if (!draft) return undefined;
    const event = { seq: log.length + 1, hlc: '0', wallTime: now, actorKey: 'k', actorRole: role, action: draft.action, subject: draft.subject, payload: draft.payload, requestSignature: null, prevHash: '0'.repeat(64), hash: '0'.repeat(64) } as AuditEvent;
    applyEvent(store, event);
    log.push(event);
    return event;
  };
  const context = (role: 'admin' | 'coordinator'): CommandContext => ({ state: store, actor: { keyId: 'k', role }, now, hasStorePathClosure: () => true, collectingGarbage: false, all: (table) => [...store.tables[table].values()] });
  const ids = Array.from({ length: n }, (_, i) => hex(`agent-${i}`));
  store.put('graphs', { id: 'web', head: BASE as never, updatedSeq: 1 });
  for (const id of ids) store.put('agents', { id, name: id, type: 't', status: 'enrolled', labels: {}, tokenId: 't', factsRevision: 1, system: null, desiredGraph: 'web', pinnedConfig: null, currentConfig: null, phase: null, lastError: null, health: null, healthReason: null, healthConfig: null, healthAt: null, recordedPresence: null, retrySeq: null, stopRequested: false, control: 'manual', rule: null, enrolledSeq: 1, updatedSeq: 1 });
  const initial = (target: StateStore) => {
    target.put('graphs', store.get('graphs', 'web')!);
    for (const id of ids) target.put('agents', { ...store.get('agents', id)!, updatedSeq: 1 });
  };
  return {
    store,
    log,
    ids,
    initial,
    admin: () => context('admin'),
    step: () => apply(stepRollout(context('coordinator'), 'web', ids)),
    apply,
    advanceClock: (ms: number) => (now += ms),
    submit: (id: string) => {
      const head = store.get('graphs', 'web')!.head;
      // The reducer needs the parent config row and the config rows; a minimal config.submit.
      if (!store.get('configs', head)) store.put('configs', { id: head, graph: 'web', parents: [], body: {} as never, forced: false, seq: 1 });
      store.put('configs', { id: id as never, graph: 'web', parents: [head], body: {} as never, forced: false, seq: log.length + 1 });
      store.put('graphs', { id: 'web', head: id as never, updatedSeq: log.length + 1 });
      const row = store.get('rollouts', 'web')!;
      store.put('rollouts', { ...row, configId: id as never, base: head, status: 'running', batch: -1, target: 0, released: 0, active: 0, failed: 0, acceptedFailures: 0, settledAt: null, reason: null, startedSeq: log.length + 1, updatedSeq: log.length + 1 });
    },
    report: (agentId: string, configId: string, phase: 'active' | 'failed') =>
      apply({ action: 'agent.report', subject: agentId, payload: { agentId: agentId as never, configId: configId as never, phase, error: null } }, 'admin'),
  };
}

describe('a rollout through the commands and the reducer', () => {
  it('releases in order, waits for reports and the pause, halts over the threshold, aborts back to the base', () => {
    const f = fleet(20);
    f.apply(setRolloutPolicy(f.admin(), { graph: 'web', policy: policy('1,25%,100%', '10%', 60) }), 'admin');
    f.submit(NEXT);
    const order = releaseOrder(NEXT, f.ids);
    const first = f.step()!;
    expect(first.payload).toMatchObject({ batch: 0, target: 1, agents: [order[0]] });
    const desired = (id: string) => rolloutConfigFor(f.store, f.store.get('graphs', 'web')!, id);
    expect(desired(order[0]!)).toBe(NEXT);
    expect(order.slice(1).map(desired)).toEqual(Array(19).fill(BASE));
    // Nothing more until the canary reports, then until the pause is over.
    expect(f.step()).toBeUndefined();
    f.report(order[0]!, NEXT, 'active');
    expect(f.step()).toBeUndefined();
    f.advanceClock(60_000);
    expect(f.step()!.payload).toMatchObject({ batch: 1, target: 5, agents: order.slice(1, 5) });
    // A report of another config, or of an agent not released, counts for nothing.
    f.report(order[9]!, NEXT, 'failed');
    f.report(order[1]!, BASE, 'failed');
    expect(f.store.get('rollouts', 'web')).toMatchObject({ released: 5, active: 1, failed: 0 });
    f.report(order[1]!, NEXT, 'failed');
    // 1 of 5 is 20%, over 10%: halted, and nobody else is released.
    expect(f.step()!.action).toBe('rollout.halt');
    f.advanceClock(3_600_000);
    expect(f.step()).toBeUndefined();
    expect(order.slice(5).map(desired)).toEqual(Array(15).fill(BASE));
    f.apply(abortRollout(f.admin(), { graph: 'web' }), 'admin');
    expect(f.store.get('graphs', 'web')!.head).toBe(BASE);
    expect(f.ids.map(desired)).toEqual(Array(20).fill(BASE));
    // Only the coordinator steps a rollout.
    expect(() => stepRollout(f.admin(), 'web', f.ids)).toThrow(/may not/);
  });

  it('a batch above MAX_RELEASED_PER_EVENT goes out in several events; replay rebuilds the same rows', () => {
    const f = fleet(2500);
    f.apply(setRolloutPolicy(f.admin(), { graph: 'web', policy: policy('100%') }), 'admin');
    f.submit(NEXT);
    const sizes: number[] = [];
    for (let event = f.step(); event?.action === 'rollout.advance'; event = f.step()) sizes.push((event.payload as { agents: string[] }).agents.length);
    expect(sizes).toEqual([1000, 1000, 500]);
    for (const id of f.ids) f.report(id, NEXT, 'active');
    expect(f.step()!.action).toBe('rollout.complete');
    // The rollout events replay into a store holding the same starting point (rows the helper wrote directly).
    const replayed = new MemoryStateStore();
    for (const [table, rows] of Object.entries(f.store.tables)) if (table !== 'rolloutReleases' && table !== 'rollouts' && table !== 'agents') for (const row of rows.values()) replayed.put(table as never, row as never);
    f.initial(replayed);
    const started = f.store.get('rollouts', 'web')!;
    replayed.put('rollouts', { ...started, batch: -1, target: 0, released: 0, active: 0, failed: 0, settledAt: null, status: 'running', updatedSeq: 1 });
    replayLog(f.log.filter((event) => event.action !== 'rollout.policy'), replayed);
    expect(replayed.get('rollouts', 'web')).toEqual(f.store.get('rollouts', 'web'));
    expect(replayed.tables.rolloutReleases).toEqual(f.store.tables.rolloutReleases);
  });
});
