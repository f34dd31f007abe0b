// Retry, stop and retention with real processes: a real coordinator (in this process, HTTP + QUIC on
// 127.0.0.1) and a real `ferry agent run` process. A config whose activation fails (the machine lacks
// a file) is rolled back and refused; fixing the machine is not enough, `agents retry` (audited, in
// the signed desired answer, waking the watch) makes the agent try again, and it succeeds. The agent
// keeps --keep-generations generations after each deployment (and reports it in its facts). The
// coordinator's GC keeps exactly what the graph needs (the newest N configs, what agents run), is
// recorded with the kept set's digest, leaves a castore fsck finds clean, and the agent still deploys
// after it. `agents assign … none --stop` runs the config's deactivate command and leaves no generation
// active (phase stopped). Non-admin keys cannot gc; keys that may not deploy cannot retry.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { fsck } from '../castore/index.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import type { AgentView } from '../protocol/api/views.js';
import type { AuditEvent } from '../coordinator/domain/events.js';
import { keptConfigsDigest } from '../coordinator/retention.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
const system = nixSystem();
const KEEP_GENERATIONS = 2;
let test: TestCoordinator;
let work: string;
let stateDir: string;
let agentId: string;
let agentProcess: ChildProcess | undefined;
let agentLog = '';
const allowFile = () => path.join(work, 'allow');

// A config with NEEDS_ALLOW set fails to activate until the machine has the file `allow` (the environment an operator fixes).
const ACTIVATE = `#!/bin/sh
if [ -n "$NEEDS_ALLOW" ] && [ ! -f "$FERRY_STATE_DIR/../allow" ]; then echo "the machine is not ready: no allow file"; exit 1; fi
echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/running"
`;
const DEACTIVATE = `#!/bin/sh
echo "$FERRY_COMMAND $FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/deactivated"
rm -f "$FERRY_STATE_DIR/running"
`;

const targets = new Map<string, string>();

/** A store path of its own per version (its files differ), held by the coordinator. */
async function version(name: string): Promise<string> {
  const tree = path.join(work, 'trees', name);
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  for (const [file, text] of [['activate', ACTIVATE], ['deactivate', DEACTIVATE]] as const) {
    writeFileSync(path.join(tree, 'bin', file), text);
    chmodSync(path.join(tree, 'bin', file), 0o755);
  }
  writeFileSync(path.join(tree, 'version'), `${name}\n`.repeat(100));
  const storePath = fakeStorePath(`retention-${name}`);
  await addTreeAsStorePath(test.coordinator.castore, tree, storePath);
  targets.set(name, storePath);
  return storePath;
}

let head: string | null = null;
async function submit(name: string, extra: { deactivate?: string; needsAllow?: boolean } = {}): Promise<string> {
  const target = await version(name);
  const config = signedConfig(test.admin, 'retention', head ? [head] : [], { [system]: target }, name, { activate: 'bin/activate' });
  const environment: Record<string, string> = extra.needsAllow ? { NEEDS_ALLOW: '1' } : {};
  const body = { ...config.body, activation: { ...config.body.activation, environment }, ...(extra.deactivate ? { deactivate: extra.deactivate } : {}) };
  const { configId } = await import('../castore/config-id.js');
  const { configSigningMessage } = await import('../protocol/config.js');
  const signature = Buffer.from(test.admin.sign(configSigningMessage(configId(body)))).toString('base64');
  head = (await test.adminClient.call('graphs.submit', { graph: 'retention', body, signature })).configId;
  return head;
}

beforeAll(async () => {
  // Grace 0: what no config needs is collected at once (the grace period has a test of its own below).
  test = await startTestCoordinator({ coordinator: { retention: { keepConfigs: 2, graceSeconds: 0 } } });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-retention-'));
  stateDir = path.join(work, 'agent');
  ({ agentId } = await enrollStateDir(test, { stateDir, name: 'retention', pinnedTls: true }));
}, 60_000);

afterAll(async () => {
  agentProcess?.kill('SIGKILL');
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function startAgent(): void {
  agentProcess = spawn(process.execPath, [ferryBin, 'agent', 'run', '--state-dir', stateDir, '--poll', '5', '--keep-generations', String(KEEP_GENERATIONS)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  agentProcess.stderr!.on('data', (chunk: Buffer) => (agentLog += chunk.toString()));
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; agent log:\n${agentLog}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const view = (): Promise<AgentView> => test.adminClient.call('agents.show', { agentId });
const reportsOf = (configId: string, phase: string): AuditEvent[] =>
  [...test.coordinator.events()].filter((event) => event.action === 'agent.report' && (event.payload as { configId: string; phase: string }).configId === configId && (event.payload as { phase: string }).phase === phase);
const generationNumbers = () => readdirSync(path.join(stateDir, 'generations')).filter((entry) => /^\d+$/.test(entry)).map(Number).sort((a, b) => a - b);
const activeOn = (configId: string) => until(`${configId} active`, async () => ((await view()).currentConfig === configId && (await view()).phase === 'active' ? true : undefined));

describe('retry', () => {
  let v1: string;
  let v2: string;

  it('a config whose activation failed is refused until `agents retry`, then deployed at once', async () => {
    v1 = await submit('v1');
    await test.adminClient.call('agents.assign', { agentId, graph: 'retention' });
    startAgent();
    await activeOn(v1);

    v2 = await submit('v2', { needsAllow: true });
    const rolledBack = await until('rolled back', async () => {
      const agent = await view();
      return agent.phase === 'rolled-back' ? agent : undefined;
    });
    expect(rolledBack).toMatchObject({ currentConfig: v1, desiredConfig: v2 });
    expect(rolledBack.lastError).toContain('the machine is not ready');

    // The machine is fixed, but the agent refuses the config that failed: it does not try again on its own.
    writeFileSync(allowFile(), '');
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(reportsOf(v2, 'activating')).toHaveLength(1);
    expect((await view()).currentConfig).toBe(v1);

    const { seq } = await test.adminClient.call('agents.retry', { agentId });
    expect(seq).toBeGreaterThan(0);
    // The watch (held for 5 s per round) is woken by the retry: the agent deploys well before another poll would matter.
    await activeOn(v2);
    expect(reportsOf(v2, 'activating')).toHaveLength(2);
    const retry = [...test.coordinator.events()].find((event) => event.seq === seq)!;
    expect(retry).toMatchObject({ action: 'agent.retry', subject: agentId, actorKey: test.admin.keyId, actorRole: 'admin' });
    expect((await view()).retrySeq).toBe(seq);
    expect(readFileSync(path.join(stateDir, 'running'), 'utf8').trim()).toBe(v2);
    expect(agentLog).toMatch(/retry: retry ordered by the coordinator/);
  }, 90_000);

  it('after each successful deployment the agent keeps --keep-generations generations, and says so in its facts', async () => {
    // Generations so far: v1, v2 (failed), v2 again. The agent collects right after it reported `active`.
    const collected = () => until(`${KEEP_GENERATIONS} generations`, () => (generationNumbers().length === KEEP_GENERATIONS ? true : undefined), 10_000);
    await collected();
    const v3 = await submit('v3');
    await activeOn(v3);
    const v4 = await submit('v4');
    await activeOn(v4);
    await collected();
    const generations = generationNumbers();
    expect(generations).toHaveLength(KEEP_GENERATIONS);
    const profile = readFileSync(path.join(stateDir, 'generations', String(generations.at(-1)), 'config.json'), 'utf8');
    expect(JSON.parse(profile).configId).toBe(v4);
    // The store dir holds only what the kept generations need.
    const storeEntries = readdirSync(path.join(stateDir, 'store')).filter((entry) => !entry.startsWith('.'));
    expect(storeEntries.sort()).toEqual([targets.get('v3')!, targets.get('v4')!].map((storePath) => path.basename(storePath)).sort());
    const facts = (await test.adminClient.call('agents.show', { agentId })).facts;
    expect(facts['keepGenerations']).toBe(KEEP_GENERATIONS);
  }, 90_000);
});

describe('coordinator GC', () => {
  it('a dry run removes and records nothing', async () => {
    const before = test.coordinator.lastSeq;
    const dry = await test.adminClient.call('gc', { dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, seq: null, keepConfigs: 2 });
    expect(dry.removedStorePaths.sort()).toEqual([targets.get('v1')!, targets.get('v2')!].sort());
    expect(test.coordinator.lastSeq).toBe(before);
    expect(test.coordinator.castore.getStorePath(targets.get('v1')!)).toBeDefined();
  });

  it('keeps exactly the newest configs and what the agent runs, records it, fsck passes, and the agent deploys after it', async () => {
    const graph = await test.adminClient.call('graphs.show', { graph: 'retention', limit: 10 });
    const [v4, v3, v2, v1] = graph.configs.map((config) => config.id);
    const report = await test.adminClient.call('gc', {});
    expect(report.keptConfigs.sort()).toEqual([v3!, v4!].sort());
    expect(report.removedStorePaths.sort()).toEqual([targets.get('v1')!, targets.get('v2')!].sort());
    expect(report.removedBlobs).toBeGreaterThan(0);
    expect(report.keptConfigsDigest).toBe(keptConfigsDigest([v3!, v4!]));
    const event = [...test.coordinator.events()].find((candidate) => candidate.seq === report.seq)!;
    expect(event).toMatchObject({ action: 'store.gc', actorRole: 'admin', payload: { keptConfigs: 2, keptConfigsDigest: report.keptConfigsDigest, removedStorePaths: 2 } });
    // The store grew only with what is kept.
    for (const name of ['v1', 'v2']) expect(test.coordinator.castore.getStorePath(targets.get(name)!)).toBeUndefined();
    for (const name of ['v3', 'v4']) expect(test.coordinator.castore.getStorePath(targets.get(name)!)).toBeDefined();
    expect((await fsck(test.coordinator.castore)).problems).toEqual([]);
    // A collected config cannot be deployed again: pins and graph rollbacks to it are refused, by name.
    await expect(test.adminClient.call('agents.pin', { agentId, configId: v1! })).rejects.toMatchObject({ code: 'MISSING_STORE_PATH' });
    await expect(test.adminClient.call('graphs.rollback', { graph: 'retention', to: v2! })).rejects.toMatchObject({ code: 'MISSING_STORE_PATH' });
    // A second GC finds nothing more to remove.
    expect((await test.adminClient.call('gc', { dryRun: true })).removedStorePaths).toEqual([]);

    const v5 = await submit('v5', { deactivate: 'bin/deactivate' });
    await activeOn(v5);
    expect(readFileSync(path.join(stateDir, 'running'), 'utf8').trim()).toBe(v5);
  }, 90_000);

  it('keeps store paths pushed within the grace period, though no config names them', async () => {
    const other = await startTestCoordinator({ quic: false });
    try {
      const tree = path.join(work, 'trees', 'pushed');
      mkdirSync(tree, { recursive: true });
      writeFileSync(path.join(tree, 'file'), 'pushed, not submitted yet\n');
      const pushed = fakeStorePath('retention-pushed');
      await addTreeAsStorePath(other.coordinator.castore, tree, pushed);
      const report = await other.adminClient.call('gc', {});
      expect(report).toMatchObject({ graceSeconds: 3600, keepConfigs: 10, recentStorePaths: 1, removedStorePaths: [], removedBlobs: 0 });
      expect(other.coordinator.castore.getStorePath(pushed)).toBeDefined();
    } finally {
      await other.close();
    }
  });
});

describe('stop', () => {
  it('`agents assign … none --stop` runs the deactivate command and leaves no generation active (phase stopped)', async () => {
    const v5 = (await view()).currentConfig!;
    await test.adminClient.call('agents.assign', { agentId, graph: null, stop: true });
    const stopped = await until('stopped', async () => {
      const agent = await view();
      return agent.phase === 'stopped' ? agent : undefined;
    });
    expect(stopped).toMatchObject({ currentConfig: null, desiredConfig: null, stopRequested: true, lastError: null });
    expect(readFileSync(path.join(stateDir, 'deactivated'), 'utf8').trim()).toBe(`deactivation ${v5}`);
    expect(existsSync(path.join(stateDir, 'running'))).toBe(false);
    expect(existsSync(path.join(stateDir, 'profile'))).toBe(false);
    expect(reportsOf(v5, 'stopped')).toHaveLength(1);
    // A stop goes with no graph.
    await expect(test.adminClient.call('agents.assign', { agentId, graph: 'retention', stop: true })).rejects.toMatchObject({ code: 'INVALID' });

    // Assigned again, it deploys the head.
    await test.adminClient.call('agents.assign', { agentId, graph: 'retention' });
    await activeOn(v5);
    expect((await view()).stopRequested).toBe(false);
  }, 90_000);
});

describe('hostile: who may gc and retry', () => {
  it('only admins may gc; only admins and operators may retry; nothing is recorded for the others', async () => {
    const keys: Record<string, Identity> = {};
    for (const role of ['operator', 'viewer', 'pusher'] as const) {
      keys[role] = Identity.generate();
      await test.adminClient.call('keys.add', { keyId: keys[role]!.keyId, role, label: role });
    }
    const agentKey = loadIdentity(path.join(stateDir, 'identity.key'));
    const before = test.coordinator.lastSeq;
    for (const role of ['operator', 'viewer', 'pusher'] as const) {
      const client = new CoordinatorHttpClient(test.http.url, keys[role]!);
      await expect(client.call('gc', {})).rejects.toMatchObject({ code: 'FORBIDDEN' });
      await expect(client.call('gc', { dryRun: true })).rejects.toMatchObject({ code: 'FORBIDDEN' });
      if (role !== 'operator') await expect(client.call('agents.retry', { agentId })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    }
    // The agent itself (its own key) may neither: a retry is the coordinator's decision.
    const agentClient = new CoordinatorHttpClient(test.http.url, agentKey);
    await expect(agentClient.call('gc', {})).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(agentClient.call('agents.retry', { agentId })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(test.coordinator.lastSeq).toBe(before);
    await expect(test.adminClient.call('gc', { keepConfigs: 0 })).rejects.toMatchObject({ code: 'INVALID' });
    await expect(test.adminClient.call('agents.retry', { agentId: 'nope' })).rejects.toMatchObject({ code: 'INVALID' });
    const operator = new CoordinatorHttpClient(test.http.url, keys['operator']!);
    expect((await operator.call('agents.retry', { agentId })).seq).toBeGreaterThan(before);
    // Stopping a pinned agent is refused: its pin would keep it running.
    const running = (await view()).currentConfig!;
    await test.adminClient.call('agents.pin', { agentId, configId: running });
    await expect(test.adminClient.call('agents.assign', { agentId, graph: null, stop: true })).rejects.toMatchObject({ code: 'CONFLICT' });
  });
});
