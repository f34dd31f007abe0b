// The agent's daemon loop in-process against a real coordinator (HTTP + QUIC on 127.0.0.1):
// what it keeps open between deployments.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { API_ROUTES } from '../protocol/api/routes.js';
import { WatchQuerySchema } from '../protocol/config.js';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
const target = fakeStorePath('daemon');

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-daemon-'));
  writeTree(path.join(work, 'tree'), 'daemon', { small: 20, large: 1 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'tree'), target);
});
afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('the agent daemon', () => {
  /** Enrolls `name`, gives it a config of the tree and runs its daemon until it is active; then `check` while it goes on running. */
  async function deployWithDaemon(name: string, pinnedTls: boolean, check: (stateDir: string, quicSessionsBefore: number) => Promise<void>): Promise<void> {
    const stateDir = path.join(work, name);
    const { agentId } = await enrollStateDir(test, { stateDir, name, pinnedTls });
    const { configId } = await test.adminClient.call('graphs.submit', { graph: name, ...signedConfig(test.admin, name, [], { [nixSystem()]: target }, 'first', { activate: 'true' }) });
    await test.adminClient.call('agents.assign', { agentId, graph: name });
    const before = test.quic.sessions().opened;
    const agent = new Agent(stateDir, { log: () => undefined, pollIntervalMs: 30_000 });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      await until('the agent to be active', () => (test.coordinator.state.get('agents', agentId)?.currentConfig === configId ? true : undefined));
      await check(stateDir, before);
      expect(stop.signal.aborted).toBe(false);
    } finally {
      stop.abort();
      await running;
      await agent.close();
    }
  }

  it('deploys over QUIC, then keeps no QUIC session open while it watches for the next config', async () => {
    // Enrolled without pinned TLS: its HTTP is not encrypted, so every data request goes over QUIC.
    await deployWithDaemon('daemon', false, async (_stateDir, before) => {
      // The closure came over QUIC…
      expect(test.quic.sessions().opened).toBeGreaterThan(before);
      // …and the session is closed once the round is over, while the daemon goes on watching (over HTTP).
      await until('the QUIC session to close', () => (test.quic.sessions().open === 0 ? true : undefined));
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(test.quic.sessions().open).toBe(0);
    });
  }, 60_000);

  it('with pinned TLS, fetches a small closure over its warm HTTPS connection and opens no QUIC session at all', async () => {
    await deployWithDaemon('daemon-pinned', true, async (stateDir, before) => {
      const fetched = readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').split('\n').filter((line) => line.includes('"fetched"'));
      expect(fetched).toHaveLength(1);
      expect(test.quic.sessions().opened).toBe(before);
    });
  }, 60_000);

  it('sends one request per quiet round: the watch, whose "unchanged" keeps the answer the agent verified last', async () => {
    const stateDir = path.join(work, 'quiet');
    await enrollStateDir(test, { stateDir, name: 'quiet', pinnedTls: true });
    // Counted where each route validates its input: the watch's query, and the desired route's.
    const watches = vi.spyOn(WatchQuerySchema, 'safeParse');
    const asks = vi.spyOn(API_ROUTES['agent.desired'].input, 'safeParse');
    const agent = new Agent(stateDir, { log: () => undefined, pollIntervalMs: 1000 });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      await until('four watches', () => (watches.mock.calls.length >= 4 ? true : undefined));
      // The first round asks; every later one uses what its watch brought.
      expect(asks).toHaveBeenCalledTimes(1);
    } finally {
      stop.abort();
      await running;
      await agent.close();
      watches.mockRestore();
      asks.mockRestore();
    }
  }, 30_000);

  it('tells a failure on the machine (the store dir is a file) from being offline, reports it, and recovers', async () => {
    const stateDir = path.join(work, 'blocked');
    const storeDir = path.join(work, 'blocked-store');
    const { agentId } = await enrollStateDir(test, { stateDir, storeDir, name: 'blocked', pinnedTls: true });
    writeFileSync(storeDir, 'not a directory');
    const { configId } = await test.adminClient.call('graphs.submit', { graph: 'blocked', ...signedConfig(test.admin, 'blocked', [], { [nixSystem()]: target }, 'first', { activate: 'true' }) });
    await test.adminClient.call('agents.assign', { agentId, graph: 'blocked' });

    const agent = new Agent(stateDir, { log: () => undefined, pollIntervalMs: 30_000 });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      const failed = await until('the failure to be reported', () => {
        const row = test.coordinator.state.get('agents', agentId);
        return row?.phase === 'failed' ? row : undefined;
      });
      expect(failed.lastError).toMatch(/EEXIST|ENOTDIR/);
      const kinds = readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { kind: string }).kind);
      expect(kinds).toContain('error');
      expect(kinds).not.toContain('offline');
      // Fixed on the machine: the next attempt (backing off, well under a minute) deploys.
      rmSync(storeDir);
      await until('the agent to be active', () => (test.coordinator.state.get('agents', agentId)?.currentConfig === configId ? true : undefined), 30_000);
    } finally {
      stop.abort();
      await running;
      await agent.close();
    }
  }, 60_000);
});
