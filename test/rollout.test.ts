// Staged rollouts with real processes: a real coordinator (in this process, HTTP + QUIC on
// 127.0.0.1, its rollout driver on a 200 ms tick) and three real `ferry agent run` processes
// following one graph with the policy "1 agent, then 100%". A config whose health check fails on
// the canary halts the rollout, and the two others never receive it (their desired answer stays on
// the base, they never report it); a config whose check passes goes to the canary, then to all.
// Hostile: an agent's key cannot pause or abort, and malformed policies are refused by name.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { loadIdentity } from '../protocol/identity.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { releaseOrder } from '../coordinator/domain/rollouts.js';
import type { PayloadOf } from '../coordinator/domain/events.js';
import { RolloutDriver } from '../coordinator/api/rollout-driver.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
const system = nixSystem();
const app = fakeStorePath('rollout-app');
const GRAPH = 'web';
let test: TestCoordinator;
let work: string;
const agents: { id: string; stateDir: string; process?: ChildProcess; log: string }[] = [];

const ACTIVATE = `#!/bin/sh
echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/active.config"
`;
// Fails on a machine whose state dir holds `fail-health` (the test puts it there).
const CHECK = `#!/bin/sh
if [ -f "$FERRY_STATE_DIR/fail-health" ]; then echo "this machine is unwell"; exit 1; fi
`;

beforeAll(async () => {
  test = await startTestCoordinator();
  // A faster clock than the default 1 s, so pauses of 0 s end quickly (the commit reactions do most of the work).
  new RolloutDriver(test.coordinator, 200);
  work = mkdtempSync(path.join(tmpdir(), 'ferry-rollout-'));
  const tree = path.join(work, 'tree');
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  for (const [name, text] of [['activate', ACTIVATE], ['check', CHECK]] as const) {
    writeFileSync(path.join(tree, 'bin', name), text);
    chmodSync(path.join(tree, 'bin', name), 0o755);
  }
  await addTreeAsStorePath(test.coordinator.castore, tree, app);
  for (let i = 0; i < 3; i++) {
    const stateDir = path.join(work, `agent-${i}`);
    const { agentId } = await enrollStateDir(test, { stateDir, name: `web-${i}`, pinnedTls: true });
    agents.push({ id: agentId, stateDir, log: '' });
  }
}, 60_000);

afterAll(async () => {
  for (const agent of agents) agent.process?.kill('SIGKILL');
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function startAgents(): void {
  for (const agent of agents) {
    agent.process = spawn(process.execPath, [ferryBin, 'agent', 'run', '--state-dir', agent.stateDir, '--poll', '1', '--health-retry-delay', '100'], { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.process.stderr!.on('data', (chunk: Buffer) => (agent.log += chunk.toString()));
  }
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; agent logs:\n${agents.map((agent) => agent.log).join('\n---\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function submit(message: string): Promise<string> {
  const head = test.coordinator.state.get('graphs', GRAPH)?.head;
  const config = signedConfig(test.admin, GRAPH, head ? [head] : [], { [system]: app }, message, { activate: 'bin/activate', health: { command: 'bin/check', timeoutSeconds: 5, retries: 0 } });
  return (await test.adminClient.call('graphs.submit', { graph: GRAPH, ...config })).configId;
}

const activeConfig = (stateDir: string): string | undefined => {
  try {
    return readFileSync(path.join(stateDir, 'active.config'), 'utf8').trim();
  } catch {
    return undefined;
  }
};
const reportsOf = (agentId: string, configId: string) =>
  [...test.coordinator.events()].filter((event) => event.action === 'agent.report' && event.subject === agentId && (event.payload as PayloadOf<'agent.report'>).configId === configId);
const rolloutEvents = () => [...test.coordinator.events()].filter((event) => event.action.startsWith('rollout.'));

describe('a staged rollout with real agents', () => {
  let base: string;

  it('all three run the base config (no policy yet)', async () => {
    base = await submit('base');
    for (const agent of agents) await test.adminClient.call('agents.assign', { agentId: agent.id, graph: GRAPH });
    startAgents();
    await until('every agent on the base', () => (agents.every((agent) => activeConfig(agent.stateDir) === base) ? true : undefined));
    await test.adminClient.call('rollouts.policy', { graph: GRAPH, policy: { batches: [{ agents: 1 }, { percent: 100 }], pauseSeconds: 0, maxFailures: { count: 0 } } });
  }, 60_000);

  it("halts when the canary's health check fails, and the rest of the fleet never receives the config", async () => {
    for (const agent of agents) writeFileSync(path.join(agent.stateDir, 'fail-health'), '');
    const bad = await submit('bad');
    const order = releaseOrder(bad, agents.map((agent) => agent.id));
    const halted = await until('the halt', async () => {
      const view = await test.adminClient.call('rollouts.show', { graph: GRAPH });
      return view.status === 'halted' ? view : undefined;
    });
    expect(halted).toMatchObject({ configId: bad, base, batch: 0, target: 1, released: 1, failed: 1, active: 0 });
    expect(halted.reason).toContain('1 of 1 released agent(s) failed');
    const [advance, halt] = rolloutEvents().filter((event) => (event.payload as { configId?: string }).configId === bad);
    expect(advance).toMatchObject({ action: 'rollout.advance', actorRole: 'coordinator', payload: { batch: 0, target: 1, agents: [order[0]] } });
    expect(halt).toMatchObject({ action: 'rollout.halt', actorRole: 'coordinator' });
    // The canary tried it and rolled back to the base.
    expect(reportsOf(order[0]!, bad).map((event) => (event.payload as PayloadOf<'agent.report'>).phase)).toContain('rolled-back');
    // Give the others every chance to (wrongly) receive it: several poll periods and driver ticks.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    for (const id of order.slice(1)) {
      const view = await test.adminClient.call('agents.show', { agentId: id });
      expect(view.desiredConfig, id).toBe(base);
      expect(reportsOf(id, bad), id).toEqual([]);
      expect(activeConfig(agents.find((agent) => agent.id === id)!.stateDir)).toBe(base);
    }
    expect(rolloutEvents().filter((event) => event.action === 'rollout.advance' && (event.payload as { configId: string }).configId === bad)).toHaveLength(1);
    // The head is the new config for the graph log; the fleet's desired answer is not.
    expect(test.coordinator.state.get('graphs', GRAPH)!.head).toBe(bad);
  }, 60_000);

  it('an agent key cannot pause or abort it; an operator aborts it and the head returns to the base', async () => {
    const asAgent = new CoordinatorHttpClient(test.http.url, loadIdentity(path.join(agents[0]!.stateDir, 'identity.key')));
    for (const verb of ['rollouts.pause', 'rollouts.abort', 'rollouts.resume'] as const) {
      const refused = await asAgent.call(verb, { graph: GRAPH }).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refused, verb).toBeInstanceOf(ApiError);
      expect((refused as ApiError).code, verb).toBe('FORBIDDEN');
    }
    const policy = await asAgent.call('rollouts.policy', { graph: GRAPH, policy: null }).catch((error: unknown) => error);
    expect((policy as ApiError).code).toBe('FORBIDDEN');
    expect((await test.adminClient.call('rollouts.show', { graph: GRAPH })).status).toBe('halted');
    // A policy cannot change under a rollout in progress.
    await expect(test.adminClient.call('rollouts.policy', { graph: GRAPH, policy: null })).rejects.toMatchObject({ code: 'CONFLICT' });
    await test.adminClient.call('rollouts.abort', { graph: GRAPH });
    expect(test.coordinator.state.get('graphs', GRAPH)!.head).toBe(base);
    expect((await test.adminClient.call('rollouts.show', { graph: GRAPH })).status).toBe('aborted');
  }, 30_000);

  it('a passing canary advances to all', async () => {
    for (const agent of agents) rmSync(path.join(agent.stateDir, 'fail-health'), { force: true });
    const good = await submit('good');
    const order = releaseOrder(good, agents.map((agent) => agent.id));
    const complete = await until('completion', async () => {
      const view = await test.adminClient.call('rollouts.show', { graph: GRAPH });
      return view.status === 'complete' ? view : undefined;
    });
    expect(complete).toMatchObject({ configId: good, released: 3, active: 3, failed: 0, batch: 1 });
    await until('every agent on the new config', () => (agents.every((agent) => activeConfig(agent.stateDir) === good) ? true : undefined));
    const events = rolloutEvents().filter((event) => (event.payload as { configId?: string }).configId === good);
    expect(events.map((event) => event.action)).toEqual(['rollout.advance', 'rollout.advance', 'rollout.complete']);
    expect(events[0]!.payload).toMatchObject({ batch: 0, agents: [order[0]] });
    expect(events[1]!.payload).toMatchObject({ batch: 1, target: 3 });
    expect(new Set((events[1]!.payload as { agents: string[] }).agents)).toEqual(new Set(order.slice(1)));
    // The canary reported it active before the others were released.
    const canaryActive = reportsOf(order[0]!, good).find((event) => (event.payload as PayloadOf<'agent.report'>).phase === 'active')!;
    expect(canaryActive.seq).toBeLessThan(events[1]!.seq);
  }, 60_000);
});

describe('hostile policies', () => {
  const refused = async (policy: unknown): Promise<string> => {
    const error = await test.adminClient.call('rollouts.policy', { graph: 'hostile', policy: policy as never }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).code).toBe('INVALID');
    return (error as ApiError).message;
  };

  it('refuses no batches, 101%, a last batch below 100%, huge lists and bad failure thresholds, by name', async () => {
    expect(await refused({ batches: [], pauseSeconds: 0, maxFailures: { count: 0 } })).toMatch(/at least one batch/);
    expect(await refused({ batches: [{ percent: 101 }], pauseSeconds: 0, maxFailures: { count: 0 } })).toMatch(/at most 100%/);
    expect(await refused({ batches: [{ agents: 1 }, { percent: 50 }], pauseSeconds: 0, maxFailures: { count: 0 } })).toMatch(/last batch must be 100%/);
    expect(await refused({ batches: [{ agents: 0 }, { percent: 100 }], pauseSeconds: 0, maxFailures: { count: 0 } })).toMatch(/at least 1/);
    expect(await refused({ batches: Array.from({ length: 10_000 }, () => ({ percent: 100 })), pauseSeconds: 0, maxFailures: { count: 0 } })).toMatch(/at most 20 batches/);
    expect(await refused({ batches: [{ percent: 100 }], pauseSeconds: -1, maxFailures: { count: 0 } })).toMatch(/pauseSeconds/);
    expect(await refused({ batches: [{ percent: 100 }], pauseSeconds: 0, maxFailures: { percent: 150 } })).toMatch(/at most 100%/);
    expect(await refused({ batches: [{ percent: 100, agents: 3 }], pauseSeconds: 0, maxFailures: { count: 0 } })).toMatch(/batches/);
    expect(test.coordinator.state.get('rollouts', 'hostile')).toBeUndefined();
  });

  it('refuses controls of a graph without a rollout', async () => {
    await expect(test.adminClient.call('rollouts.pause', { graph: 'nothing-here' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(test.adminClient.call('rollouts.show', { graph: 'nothing-here' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
