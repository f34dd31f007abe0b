import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OPERATIONS } from '../coordinator/api/operations.js';
import { startHttpServer } from '../coordinator/server.js';
import { MAX_WATCHES_PER_AGENT } from '../coordinator/api/desired-watches.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import type { Identity } from '../protocol/identity.js';
import { desiredProofMessage, verifyProof } from '../protocol/coordinator-proofs.js';
import { addTreeAsStorePath, enrollAgent, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let agent: Identity;
let firstConfig: string;
const target = fakeStorePath('watched');

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  writeTree(path.join(test.dir, 'tree'), 'watched', { small: 3, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
  firstConfig = (await test.adminClient.call('graphs.submit', { graph: 'web', ...signedConfig(test.admin, 'web', [], { 'x86_64-linux': target }, 'first') })).configId;
  agent = await enrollAgent(test, 'web');
});
afterAll(async () => {
  await test?.close();
});

/**
 * Holds a watch of `who` (20 s, nothing changing), does `act` 300 ms in, and
 * returns how the watch ended (undefined: answered, else the error) and
 * after how many seconds.
 */
async function refusalOfHeldWatch(who: Identity, act: () => unknown): Promise<{ refusal: unknown; seconds: number }> {
  const client = new CoordinatorHttpClient(test.http.url, who);
  const current = await client.call('agent.watch', { known: 'none', wait: '0' });
  const started = Date.now();
  const watched = client.call('agent.watch', { known: current.configId ?? 'none', wait: '20' }).then(
    () => undefined,
    (error: unknown) => error,
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  await act();
  const refusal = await watched;
  return { refusal, seconds: (Date.now() - started) / 1000 };
}

describe("an agent's watch", () => {
  it('answers as soon as a new config is submitted, not at its deadline', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const started = Date.now();
    const watched = client.call('agent.watch', { known: firstConfig, wait: '20' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { configId } = await test.adminClient.call('graphs.submit', { graph: 'web', ...signedConfig(test.admin, 'web', [firstConfig], { 'x86_64-linux': target }, 'second') });
    const answer = await watched;
    expect(answer.configId).toBe(configId);
    // Woken by the event: far from the 20 s deadline.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('answers "unchanged" at its deadline when nothing changes', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const current = await client.call('agent.watch', { known: 'none', wait: '0' });
    const started = Date.now();
    const answer = await client.call('agent.watch', { known: current.configId ?? 'none', wait: '1' });
    expect(answer).toStrictEqual({ unchanged: true, configId: current.configId });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('does no work while nothing happens: no desired answer is computed or signed for a quiet watch', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const current = await client.call('agent.watch', { known: 'none', wait: '0' });
    // Counted where the watch calls it (before: once a second while held, with a presence write each time; then once, at the deadline).
    const desired = vi.spyOn(OPERATIONS, 'agent.desired');
    const presence = vi.spyOn(test.coordinator.presence, 'touch');
    try {
      const answer = await client.call('agent.watch', { known: current.configId ?? 'none', wait: '3' });
      expect(answer).toStrictEqual({ unchanged: true, configId: current.configId });
      expect(desired).not.toHaveBeenCalled();
      // Still a sign of life.
      expect(presence.mock.calls.filter(([agentId]) => agentId === agent.keyId).length).toBeGreaterThanOrEqual(1);
    } finally {
      desired.mockRestore();
      presence.mockRestore();
    }
  });

  it('signs its answer for the challenge it was given, so the agent need not ask again', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const challenge = randomBytes(16).toString('hex');
    const answer = await client.call('agent.watch', { known: 'none', wait: '0', challenge });
    if ('unchanged' in answer) throw new Error('expected the signed answer, not word that nothing changed');
    expect(verifyProof(test.coordinator.identity.keyId, desiredProofMessage(agent.keyId, challenge, answer), answer.proof)).toBe(true);
    // Bound to this agent and this challenge: not another's, not a replay.
    expect(verifyProof(test.coordinator.identity.keyId, desiredProofMessage(agent.keyId, randomBytes(16).toString('hex'), answer), answer.proof)).toBe(false);
  });

  it('refuses a malformed watch query (400 INVALID): a bad challenge, a negative wait, a known that is no config id, an unknown field', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    for (const query of [{ challenge: 'nothex' }, { wait: '-1' }, { wait: 'soon' }, { known: '../etc' }, { colour: 'blue' }]) {
      await expect(client.get('/v1/agent/watch', { wait: '0', ...query }), JSON.stringify(query)).rejects.toMatchObject({ status: 400, code: 'INVALID' });
    }
  });

  it('sleeps through events that concern other graphs and other agents', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const current = await client.call('agent.watch', { known: 'none', wait: '0' });
    const { configId: elsewhere } = await test.adminClient.call('graphs.submit', { graph: 'other', ...signedConfig(test.admin, 'other', [], { 'x86_64-linux': target }, 'elsewhere') });
    const other = await enrollAgent(test, 'other');
    const started = Date.now();
    const watched = client.call('agent.watch', { known: current.configId ?? 'none', wait: '2' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Every look at this agent from here on: a woken watch reads its row to re-check its answer.
    const reads = vi.spyOn(test.coordinator.state, 'get');
    try {
      // A config for another graph, another agent moved and pinned: none of it changes this agent's answer.
      await test.adminClient.call('graphs.submit', { graph: 'other', ...signedConfig(test.admin, 'other', [elsewhere], { 'x86_64-linux': target }, 'elsewhere, again') });
      await test.adminClient.call('agents.pin', { agentId: other.keyId, configId: elsewhere });
      await test.adminClient.call('agents.assign', { agentId: other.keyId, graph: null });
      const answer = await watched;
      expect(answer.configId).toBe(current.configId);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
      // Woken once, at its deadline (then answered "unchanged"); never by the events above.
      expect(reads.mock.calls.filter(([table, id]) => table === 'agents' && id === agent.keyId)).toHaveLength(1);
    } finally {
      reads.mockRestore();
    }
  });

  it('wakes a pinned agent for its own pin, not for its graph', async () => {
    const pinned = await enrollAgent(test, 'web');
    const client = new CoordinatorHttpClient(test.http.url, pinned);
    await test.adminClient.call('agents.pin', { agentId: pinned.keyId, configId: firstConfig });
    const started = Date.now();
    const watched = client.call('agent.watch', { known: firstConfig, wait: '20' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const head = (await test.adminClient.call('graphs.show', { graph: 'web' })).head;
    const reads = vi.spyOn(test.coordinator.state, 'get');
    try {
      await test.adminClient.call('graphs.submit', { graph: 'web', ...signedConfig(test.admin, 'web', [head], { 'x86_64-linux': target }, 'while pinned') });
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The graph's new head did not wake it: its row was not read again.
      expect(reads.mock.calls.filter(([table, id]) => table === 'agents' && id === pinned.keyId)).toHaveLength(0);
    } finally {
      reads.mockRestore();
    }
    await test.adminClient.call('agents.pin', { agentId: pinned.keyId, configId: null });
    const answer = await watched;
    // Unpinned, it follows the graph again: its answer is the new head, given when the pin went.
    expect(answer.configId).not.toBe(firstConfig);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('answers a held watch of an agent revoked meanwhile with 403 REVOKED, at once', async () => {
    const revoked = await enrollAgent(test, 'web');
    const { refusal, seconds } = await refusalOfHeldWatch(revoked, () => test.adminClient.call('agents.revoke', { agentId: revoked.keyId }));
    expect(refusal).toBeInstanceOf(ApiError);
    expect((refusal as ApiError).code).toBe('REVOKED');
    expect(seconds).toBeLessThan(5);
  });

  it(`refuses an agent more than ${MAX_WATCHES_PER_AGENT} held watches (429 TOO_MANY_WATCHES), and takes new ones once they are answered`, async () => {
    // An attacker holding one agent key must not hold sockets and memory at will.
    const greedy = await enrollAgent(test, 'web');
    const client = new CoordinatorHttpClient(test.http.url, greedy);
    const current = await client.call('agent.watch', { known: 'none', wait: '0' });
    const known = current.configId ?? 'none';
    const held = Array.from({ length: MAX_WATCHES_PER_AGENT }, () => client.call('agent.watch', { known, wait: '2' }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expect(client.get('/v1/agent/watch', { known, wait: '2' })).rejects.toMatchObject({ status: 429, code: 'TOO_MANY_WATCHES' });
    // Another agent is not affected.
    await expect(new CoordinatorHttpClient(test.http.url, agent).call('agent.watch', { known: 'none', wait: '0' })).resolves.toBeDefined();
    await Promise.all(held);
    await expect(client.call('agent.watch', { known, wait: '0' })).resolves.toBeDefined();
  });

  it('answers held watches with 503 SHUTTING_DOWN when the server stops, so stopping waits for none of them', async () => {
    const second = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: () => undefined });
    const client = new CoordinatorHttpClient(second.url, agent);
    const current = await client.call('agent.watch', { known: 'none', wait: '0' });
    const watched = client.call('agent.watch', { known: current.configId ?? 'none', wait: '200' }).then(
      () => undefined,
      (error: unknown) => error,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    await second.close();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await watched).toMatchObject({ status: 503, code: 'SHUTTING_DOWN' });
  });

  // Last: it closes the coordinator. A held watch once woke on a closed database and answered a
  // plain-text 500 (TypeError: the database connection is not open).
  it('answers a held watch with 503 SHUTTING_DOWN when the coordinator closes, at once', async () => {
    const { refusal, seconds } = await refusalOfHeldWatch(agent, () => test.coordinator.close());
    expect(refusal).toBeInstanceOf(ApiError);
    expect((refusal as ApiError).status).toBe(503);
    expect((refusal as ApiError).code).toBe('SHUTTING_DOWN');
    expect(seconds).toBeLessThan(5);
  });
});
