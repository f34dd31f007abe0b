// Continuous health and presence with real processes: a real coordinator (in this process, HTTP +
// QUIC on 127.0.0.1) and a real `ferry agent run` process, whose config's activation starts a
// "service" (a real background process) and whose periodic health check asks whether it runs.
// The service is killed with SIGKILL: outside the config's probation the agent reports degraded
// and keeps it; inside, it rolls back on its own. Then the agent process itself is killed: it goes
// stale, then offline (an audit event), and comes back (another) when it runs again. Its
// node_exporter textfile carries the health too, and a webhook registered for alerts receives each
// of degraded, rolled-back and offline, signed by the coordinator, which it verifies.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import type { AgentView } from '../protocol/api/views.js';
import type { AuditEvent } from '../coordinator/domain/events.js';
import { startAlertReceiver, type AlertReceiver } from './alert-receiver.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
const system = nixSystem();
const service = fakeStorePath('health-service');
let test: TestCoordinator;
let work: string;
let stateDir: string;
let agentId: string;
let agentProcess: ChildProcess | undefined;
let agentLog = '';
let hook: AlertReceiver;

// The service: started (again) by each activation, its pid and config in the agent's state dir.
const ACTIVATE = `#!/bin/sh
pidfile="$FERRY_STATE_DIR/service.pid"
if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null; fi
sleep 100000 </dev/null >/dev/null 2>&1 &
echo $! > "$pidfile"
echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/service.config"
`;
const CHECK = `#!/bin/sh
kill -0 "$(cat "$FERRY_STATE_DIR/service.pid")" 2>/dev/null || { echo "the service is not running"; exit 1; }
`;

beforeAll(async () => {
  test = await startTestCoordinator({ coordinator: { presence: { staleAfterMs: 2000, offlineAfterMs: 4000 } } });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-health-'));
  const tree = path.join(work, 'tree');
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  for (const [name, text] of [['activate', ACTIVATE], ['check', CHECK]] as const) {
    writeFileSync(path.join(tree, 'bin', name), text);
    chmodSync(path.join(tree, 'bin', name), 0o755);
  }
  await addTreeAsStorePath(test.coordinator.castore, tree, service);
  stateDir = path.join(work, 'agent');
  ({ agentId } = await enrollStateDir(test, { stateDir, name: 'health', pinnedTls: true }));
  hook = await startAlertReceiver(test.coordinator.identity.keyId);
  await test.adminClient.call('alerts.add', { url: hook.url, on: ['degraded', 'rolled-back', 'offline'] });
}, 60_000);

afterAll(async () => {
  agentProcess?.kill('SIGKILL');
  const pidfile = stateDir && path.join(stateDir, 'service.pid');
  if (pidfile && existsSync(pidfile)) killQuietly(Number(readFileSync(pidfile, 'utf8')));
  await test?.close();
  await hook?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function startAgent(): void {
  agentLog = '';
  const textfile = path.join(work, 'ferry.prom');
  agentProcess = spawn(process.execPath, [ferryBin, 'agent', 'run', '--state-dir', stateDir, '--poll', '1', '--health-retry-delay', '100', '--metrics-textfile', textfile], { stdio: ['ignore', 'ignore', 'pipe'] });
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
const servicePid = () => Number(readFileSync(path.join(stateDir, 'service.pid'), 'utf8'));
const eventsOf = (action: string): AuditEvent[] => [...test.coordinator.events()].filter((event) => event.action === action && event.subject === agentId);

async function submit(message: string, parents: string[], health: { probationSeconds?: number }): Promise<string> {
  const config = signedConfig(test.admin, 'health', parents, { [system]: service }, message, {
    activate: 'bin/activate',
    health: { command: 'bin/check', timeoutSeconds: 5, retries: 2, intervalSeconds: 1, unhealthyAfter: 2, ...health },
  });
  return (await test.adminClient.call('graphs.submit', { graph: 'health', ...config })).configId;
}

describe('continuous health', () => {
  let steady: string;

  it('reports healthy, then degraded when the service dies (no probation), and keeps the config', async () => {
    steady = await submit('steady', [], {});
    await test.adminClient.call('agents.assign', { agentId, graph: 'health' });
    startAgent();
    const healthy = await until('healthy', async () => {
      const agent = await view();
      return agent.currentConfig === steady && agent.health === 'healthy' ? agent : undefined;
    });
    expect(healthy.healthConfig).toBe(steady);

    killQuietly(servicePid());
    const degraded = await until('degraded', async () => {
      const agent = await view();
      return agent.health === 'degraded' ? agent : undefined;
    });
    expect(degraded.healthReason).toContain('the service is not running');
    expect(degraded.healthReason).toMatch(/failed 2 time\(s\) in a row/);
    // No probation: it only reports. The config still runs, and is not rolled back.
    expect(degraded).toMatchObject({ phase: 'active', currentConfig: steady, healthConfig: steady });
    // The node_exporter textfile says so too.
    const health = parsePrometheusTextFormat(readFileSync(path.join(work, 'ferry.prom'), 'utf8')).find((family) => family.name === 'ferry_agent_health');
    expect(health?.metrics).toEqual([{ labels: { config: steady, health: 'degraded' }, value: '1' }]);
    const recorded = eventsOf('agent.health').map((event) => (event.payload as { health: string }).health);
    expect(recorded).toEqual(['healthy', 'degraded']);
    // `ferry agent status` on the machine says so too, from the daemon's events.
    const local = spawnSync(process.execPath, [ferryBin, 'agent', 'status', '--state-dir', stateDir, '--json']);
    const status = JSON.parse(local.stdout.toString()) as { health: { message: string } | null; activated: { probation: boolean } | null; probationUntil: number | null };
    expect(status.health?.message).toMatch(/is degraded: health check 'bin\/check' failed 2 time/);
    expect(status).toMatchObject({ activated: { probation: true }, probationUntil: null });
    const [alert] = await hook.waitForAccepted(1);
    expect(alert).toMatchObject({ kind: 'degraded', agent: { id: agentId, name: 'health' }, config: steady, seq: eventsOf('agent.health')[1]!.seq });
    expect(alert!.reason).toContain('the service is not running');
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect((await view()).phase).toBe('active');
    expect(eventsOf('agent.health')).toHaveLength(2);
  }, 90_000);

  it('rolls back on its own when the service dies within the probation window', async () => {
    const probed = await submit('probation', [steady], { probationSeconds: 600 });
    await until('the new config healthy', async () => {
      const agent = await view();
      return agent.currentConfig === probed && agent.health === 'healthy' ? agent : undefined;
    });
    const probedPid = servicePid();
    killQuietly(probedPid);
    const rolledBack = await until('the rollback', async () => {
      const agent = await view();
      return agent.phase === 'rolled-back' ? agent : undefined;
    });
    // Back on the steady config: the coordinator knows which config runs again, and its activation restarted the service.
    expect(rolledBack.currentConfig).toBe(steady);
    expect(rolledBack.lastError).toContain('probation');
    expect(readFileSync(path.join(stateDir, 'service.config'), 'utf8').trim()).toBe(steady);
    expect(servicePid()).not.toBe(probedPid);
    const report = eventsOf('agent.report').at(-1)!;
    expect(report.payload).toMatchObject({ configId: probed, phase: 'rolled-back', running: steady });
    expect((await hook.waitForAccepted(2))[1]).toMatchObject({ kind: 'rolled-back', config: probed, seq: report.seq });
    // The steady config is checked again, healthy, and is not on probation: nothing cascades.
    await until('the steady config healthy again', async () => {
      const agent = await view();
      return agent.health === 'healthy' && agent.healthConfig === steady ? agent : undefined;
    });
    // The rolled-back config is not redeployed while it is the desired one.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect((await view()).currentConfig).toBe(steady);
  }, 90_000);
});

describe('presence', () => {
  it('an agent that stops goes stale, then offline (an event), and comes back (an event)', async () => {
    expect((await view()).presence).toBe('online');
    agentProcess!.kill('SIGKILL');
    await new Promise((resolve) => agentProcess!.once('exit', resolve));
    const seen: string[] = [];
    await until('offline', async () => {
      const agent = await view();
      if (seen.at(-1) !== agent.presence) seen.push(agent.presence);
      return agent.presence === 'offline' && agent.recordedPresence === 'offline' ? agent : undefined;
    });
    expect(seen).toEqual(['online', 'stale', 'offline']);
    const offline = eventsOf('agent.presence');
    expect(offline.map((event) => event.payload)).toEqual([{ agentId, presence: 'offline', lastSeen: expect.any(Number) }]);
    expect(offline[0]!.actorRole).toBe('coordinator');
    expect((await hook.waitForAccepted(3))[2]).toMatchObject({ kind: 'offline', agent: { id: agentId }, seq: offline[0]!.seq });
    // Every request the webhook got carried a valid signature (none refused), and nothing else was alerted.
    expect(hook.received.filter((request) => request.refusal !== undefined)).toEqual([]);

    startAgent();
    await until('back online', async () => {
      const agent = await view();
      return agent.presence === 'online' && agent.recordedPresence === 'online' ? agent : undefined;
    });
    expect(eventsOf('agent.presence').map((event) => (event.payload as { presence: string }).presence)).toEqual(['offline', 'online']);
    // Coming back is an event, not an alert.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(hook.accepted.map((alert) => alert.kind)).toEqual(['degraded', 'rolled-back', 'offline']);
  }, 60_000);
});
