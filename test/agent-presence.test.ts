// Presence (docs/coordinator.md, "Presence"): an agent holding a watch is online whatever its last
// request; one that holds none turns stale, then offline, by the coordinator's thresholds; the API
// shows it on every agent and selects by it (`--where presence=…`). The coordinator's clock is moved
// by the test (within the request signatures' allowed skew).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let offset = 0;

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false, coordinator: { now: () => Date.now() + offset, presence: { staleAfterMs: 60_000, offlineAfterMs: 120_000 } } });
});
afterAll(async () => {
  await test?.close();
});

/** An enrolled agent in no graph (its watch is answered unchanged at its deadline). */
async function enrolled(name: string): Promise<Identity> {
  const agent = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true });
  await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name, facts: { system: 'x86_64-linux', hostname: name } });
  return agent;
}

const presenceOf = async (agent: Identity) => (await test.adminClient.call('agents.show', { agentId: agent.keyId })).presence;
const selected = async (presence: string) => (await test.adminClient.call('agents.list', { where: [`presence=${presence}`], limit: 100 })).agents.map((agent) => agent.id);

describe('presence', () => {
  it('is online while a watch is held, and stale then offline by the thresholds once none is', async () => {
    const watcher = await enrolled('watcher');
    const quiet = await enrolled('quiet');
    await new CoordinatorHttpClient(test.http.url, quiet).call('agent.status', { configId: null, phase: 'active', error: null });
    const client = new CoordinatorHttpClient(test.http.url, watcher);
    const held = client.call('agent.watch', { known: 'none', wait: '30' }).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await presenceOf(watcher)).toBe('online');
    expect(await presenceOf(quiet)).toBe('online');

    offset = 90_000; // past stale, before offline
    expect(await presenceOf(quiet)).toBe('stale');
    expect(await presenceOf(watcher)).toBe('online');
    expect(await selected('stale')).toEqual([quiet.keyId]);

    offset = 150_000;
    expect(await presenceOf(quiet)).toBe('offline');
    expect(await presenceOf(watcher)).toBe('online');
    expect(await selected('offline')).toContain(quiet.keyId);
    expect(await selected('online')).toContain(watcher.keyId);
    expect(await selected('online')).not.toContain(quiet.keyId);

    // Heard from again: back online.
    await new CoordinatorHttpClient(test.http.url, quiet).call('agent.status', { configId: null, phase: 'active', error: null });
    expect(await presenceOf(quiet)).toBe('online');
    offset = 0;
    void held;
  });

  it('names presence among the fields --where knows, and refuses a presence it does not have', async () => {
    const refused = await test.adminClient.call('agents.list', { where: ['presense=online'], limit: 10 }).catch((error: unknown) => error);
    expect((refused as Error).message).toMatch(/'presense' is not an agent field \(.*presence/);
    const unknown = await test.adminClient.call('agents.list', { where: ['presence=gone'], limit: 10 }).catch((error: unknown) => error);
    expect((unknown as Error).message).toMatch(/presence is online, stale, offline/);
  });
});
