// `POST /v1/agent/health` (an agent's health transitions, audited) and presence events, against a
// real coordinator over HTTP on 127.0.0.1: what is recorded, what is refused and why, and the
// per-agent rate limit that keeps a flapping check from flooding the audit log. The coordinator's
// clock is moved by the test (within the request signatures' allowed skew).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { PresenceEvents } from '../coordinator/api/presence-events.js';
import * as commands from '../coordinator/domain/commands.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { bootstrap } from './fleet-simulator.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let offset = 0;
let first: string;
let second: string;

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false, coordinator: { now: () => Date.now() + offset, healthEvents: { burst: 2, windowMs: 60_000 } } });
  writeTree(path.join(test.dir, 'tree'), 'checked', { small: 1, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), fakeStorePath('checked'));
  first = (await test.adminClient.call('graphs.submit', { graph: 'checked', ...signedConfig(test.admin, 'checked', [], { 'x86_64-linux': fakeStorePath('checked') }, 'one', { activate: 'true' }) })).configId;
  second = (await test.adminClient.call('graphs.submit', { graph: 'checked', ...signedConfig(test.admin, 'checked', [first], { 'x86_64-linux': fakeStorePath('checked') }, 'two', { activate: 'true' }) })).configId;
});
afterAll(async () => {
  await test?.close();
});

async function enrolled(name: string): Promise<{ identity: Identity; client: CoordinatorHttpClient }> {
  const identity = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true });
  const client = new CoordinatorHttpClient(test.http.url, identity);
  await client.call('enroll', { token, name, facts: { system: 'x86_64-linux', hostname: name } });
  return { identity, client };
}

async function refusal(call: Promise<unknown>): Promise<ApiError> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(ApiError);
  return error as ApiError;
}

const healthEvents = (agentId: string) => [...test.coordinator.events()].filter((event) => event.action === 'agent.health' && event.subject === agentId);

describe('health reports', () => {
  it('records transitions of the config the agent runs, once each, and resets when another config runs', async () => {
    const { identity, client } = await enrolled('reporter');
    // Not running anything yet: health of a config it does not run is refused.
    expect((await refusal(client.call('agent.health', { configId: first, health: 'healthy' }))).code).toBe('CONFLICT');
    await client.call('agent.status', { configId: first, phase: 'active', error: null });
    expect(await client.call('agent.health', { configId: first, health: 'healthy' })).toMatchObject({ outcome: 'recorded', seq: expect.any(Number) });
    expect(await client.call('agent.health', { configId: first, health: 'healthy' })).toEqual({ outcome: 'unchanged', seq: null, retryAfterMs: null });
    const shown = await test.adminClient.call('agents.show', { agentId: identity.keyId });
    expect(shown).toMatchObject({ health: 'healthy', healthConfig: first, healthReason: null });
    expect(shown.healthAt).toBeGreaterThan(0);
    expect(healthEvents(identity.keyId).map((event) => event.payload)).toEqual([{ agentId: identity.keyId, configId: first, health: 'healthy', reason: null, suppressed: 0 }]);
    expect(healthEvents(identity.keyId)[0]!.actorRole).toBe('agent');

    // Another config active: its health is unknown until the agent says.
    await client.call('agent.status', { configId: second, phase: 'active', error: null });
    expect(await test.adminClient.call('agents.show', { agentId: identity.keyId })).toMatchObject({ health: null, healthConfig: null, currentConfig: second });
    // A rollback names the config that runs again, which the coordinator then shows as current.
    await client.call('agent.status', { configId: second, phase: 'rolled-back', error: 'degraded in probation', running: first });
    expect(await test.adminClient.call('agents.show', { agentId: identity.keyId })).toMatchObject({ phase: 'rolled-back', currentConfig: first });
  });

  it('defers transitions beyond the burst until the window allows, then records the net change with the suppressed count', async () => {
    const { identity, client } = await enrolled('flapper');
    await client.call('agent.status', { configId: first, phase: 'active', error: null });
    expect((await client.call('agent.health', { configId: first, health: 'healthy' })).outcome).toBe('recorded');
    expect((await client.call('agent.health', { configId: first, health: 'degraded', reason: 'exit 1' })).outcome).toBe('recorded');
    const deferred = await client.call('agent.health', { configId: first, health: 'healthy', suppressed: 0 });
    expect(deferred.outcome).toBe('deferred');
    expect(deferred.retryAfterMs).toBeGreaterThan(50_000);
    expect(deferred.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(healthEvents(identity.keyId)).toHaveLength(2);
    // Still degraded as far as the log knows; an unchanged report is no event and not deferred.
    expect((await client.call('agent.health', { configId: first, health: 'degraded', reason: 'exit 1' })).outcome).toBe('unchanged');

    offset = 61_000;
    try {
      const recorded = await client.call('agent.health', { configId: first, health: 'healthy', suppressed: 2 });
      expect(recorded.outcome).toBe('recorded');
      expect(healthEvents(identity.keyId).at(-1)!.payload).toMatchObject({ health: 'healthy', suppressed: 2 });
    } finally {
      offset = 0;
    }
  });

  it('refuses hostile reports with a clear error, and other roles', async () => {
    const { client } = await enrolled('hostile');
    await client.call('agent.status', { configId: first, phase: 'active', error: null });
    const invalid: [unknown, RegExp][] = [
      [{ configId: first, health: 'sick' }, /health/],
      [{ configId: first, health: 'degraded', reason: 'x'.repeat(8193) }, /reason/],
      [{ configId: first, health: 'degraded', suppressed: -1 }, /suppressed/],
      [{ configId: first, health: 'degraded', suppressed: 1.5 }, /suppressed/],
      [{ configId: 'f'.repeat(63), health: 'healthy' }, /configId/],
      [{ configId: first, health: 'healthy', agentId: 'someone-else' }, /agentId|unrecognized/i],
    ];
    for (const [input, field] of invalid) {
      const error = await refusal(client.callUnchecked('agent.health', input as never));
      expect(error.code, JSON.stringify(input).slice(0, 80)).toBe('INVALID');
      expect(error.message).toMatch(field);
    }
    expect((await refusal(client.call('agent.health', { configId: 'a'.repeat(64), health: 'healthy' }))).code).toBe('NOT_FOUND');
    // A report's `running` (the config a rollback went back to) is said only of a rollback, and of a config that exists.
    const running = await refusal(client.callUnchecked('agent.status', { configId: second, phase: 'active', error: null, running: first } as never));
    expect(running.code).toBe('INVALID');
    expect(running.message).toMatch(/running is only said of a rolled-back report/);
    expect((await refusal(client.call('agent.status', { configId: second, phase: 'rolled-back', error: 'x', running: 'a'.repeat(64) }))).code).toBe('NOT_FOUND');
    expect((await refusal(client.callUnchecked('agent.status', { configId: second, phase: 'rolled-back', error: 'x', running: 'nope' } as never))).code).toBe('INVALID');
    expect(test.coordinator.state.get('agents', client.identity!.keyId)!.currentConfig).toBe(first);
    // An admin's key is not an agent: health is only ever said by the agent itself.
    expect((await refusal(test.adminClient.call('agent.health', { configId: first, health: 'healthy' }))).code).toBe('FORBIDDEN');
  });
});

describe('presence events', () => {
  it('count the offline threshold from the coordinator start, so a restart does not declare the fleet offline', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-presence-events-'));
    let clock = 1_800_000_000_000;
    const open = () => Coordinator.open(dir, { now: () => clock, presence: { staleAfterMs: 60_000, offlineAfterMs: 120_000 } });
    let coordinator = open();
    try {
      const { adminActor } = bootstrap(coordinator);
      const agent = Identity.generate();
      const created = coordinator.execute(adminActor, (context) => {
        const made = commands.createToken(context, { uses: 1, autoApprove: true });
        return { draft: made.draft, result: made.token };
      })!;
      coordinator.record({ keyId: agent.keyId, role: 'agent' }, (context) => commands.enrollAgent(context, { token: created.result, name: 'quiet', facts: { system: 'x86_64-linux', hostname: 'quiet' } }));
      coordinator.presence.touch(agent.keyId);
      coordinator.presence.flush();
      const presenceEvents = () => [...coordinator.events()].filter((event) => event.action === 'agent.presence').map((event) => event.payload);

      // Down for an hour: on restart the agent is offline by its last-seen time, but gets the whole threshold to come back.
      coordinator.close();
      clock += 3_600_000;
      coordinator = open();
      const sweeper = new PresenceEvents(coordinator, 60_000);
      expect(coordinator.presence.presenceOf(agent.keyId)).toBe('offline');
      sweeper.sweep();
      expect(presenceEvents()).toEqual([]);
      clock += 119_000;
      sweeper.sweep();
      expect(presenceEvents()).toEqual([]);
      clock += 2_000;
      sweeper.sweep();
      sweeper.sweep();
      expect(presenceEvents()).toEqual([{ agentId: agent.keyId, presence: 'offline', lastSeen: 1_800_000_000_000 }]);
      expect(coordinator.state.get('agents', agent.keyId)!.recordedPresence).toBe('offline');

      // Heard from again: recorded back, once, right after the request.
      coordinator.presence.touch(agent.keyId);
      coordinator.presence.touch(agent.keyId);
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      expect(presenceEvents()).toHaveLength(2);
      expect(presenceEvents()[1]).toEqual({ agentId: agent.keyId, presence: 'online', lastSeen: clock });

      // Only the coordinator records presence.
      expect(() => coordinator.record({ keyId: agent.keyId, role: 'agent' }, (context) => commands.recordPresence(context, { agentId: agent.keyId, presence: 'offline', lastSeen: null }))).toThrow(/may not/);
    } finally {
      coordinator.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
