import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OPERATIONS } from '../coordinator/api/operations.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import type { Identity } from '../protocol/identity.js';
import { addTreeAsStorePath, enrollAgent, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let agent: Identity;
let firstConfig: string;
const target = fakeStorePath('watched');

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  writeTree(path.join(test.dir, 'tree'), 'watched', { small: 3, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
  firstConfig = (await test.adminClient.post<{ configId: string }>('/v1/graphs/web/configs', signedConfig(test.admin, 'web', [], { 'x86_64-linux': target }, 'first'))).configId;
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
  const current = await client.get<{ configId: string | null }>('/v1/agent/watch', { known: 'none', wait: '0' });
  const started = Date.now();
  const watched = client.get('/v1/agent/watch', { known: current.configId ?? 'none', wait: '20' }).then(
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
    const watched = client.get<{ configId: string | null }>('/v1/agent/watch', { known: firstConfig, wait: '20' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { configId } = await test.adminClient.post<{ configId: string }>('/v1/graphs/web/configs', signedConfig(test.admin, 'web', [firstConfig], { 'x86_64-linux': target }, 'second'));
    const answer = await watched;
    expect(answer.configId).toBe(configId);
    // Woken by the event: far from the 20 s deadline.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('answers at its deadline when nothing changes', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const current = await client.get<{ configId: string | null }>('/v1/agent/watch', { known: 'none', wait: '0' });
    const started = Date.now();
    const answer = await client.get<{ configId: string | null }>('/v1/agent/watch', { known: current.configId ?? 'none', wait: '1' });
    expect(answer.configId).toBe(current.configId);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('does no work while nothing happens: the desired answer is computed and signed once, when it is sent', async () => {
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const current = await client.get<{ configId: string | null }>('/v1/agent/watch', { known: 'none', wait: '0' });
    // Counted where the watch calls it (before: once a second while held, with a presence write each time).
    const desired = vi.spyOn(OPERATIONS['agent.desired'], 'run');
    try {
      const answer = await client.get<{ configId: string | null }>('/v1/agent/watch', { known: current.configId ?? 'none', wait: '3' });
      expect(answer.configId).toBe(current.configId);
      expect(desired).toHaveBeenCalledTimes(1);
    } finally {
      desired.mockRestore();
    }
  });

  it('answers a held watch of an agent revoked meanwhile with 403 REVOKED, at once', async () => {
    const revoked = await enrollAgent(test, 'web');
    const { refusal, seconds } = await refusalOfHeldWatch(revoked, () => test.adminClient.post(`/v1/agents/${revoked.keyId}/revoke`, {}));
    expect(refusal).toBeInstanceOf(ApiError);
    expect((refusal as ApiError).code).toBe('REVOKED');
    expect(seconds).toBeLessThan(5);
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
