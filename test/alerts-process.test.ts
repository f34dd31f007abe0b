// Alerts with a real coordinator process (`ferry coordinator serve`): a webhook registered with
// `ferry alerts add`, a local receiver (node:http on 127.0.0.1) that verifies each alert with the
// coordinator's key, answering 500 at first; the coordinator is killed with SIGKILL while it is
// retrying, started again, and the alert still arrives — once, with the same body — and
// `ferry alerts ls` says it was delivered.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { startAlertReceiver, type AlertReceiver } from './alert-receiver.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
let dir: string;
let env: NodeJS.ProcessEnv;
let server: ChildProcess | undefined;
let hook: AlertReceiver | undefined;

function ferry(args: string[]): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [ferryBin, ...args], { env });
  return { status: result.status ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

async function serve(): Promise<string> {
  const child = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--no-quic'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  server = child;
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
  });
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-alerts-process-'));
  env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'data') };
});
afterEach(async () => {
  server?.kill('SIGKILL');
  server = undefined;
  await hook?.close();
  hook = undefined;
  rmSync(dir, { recursive: true, force: true });
});

describe('alerts from a coordinator process', () => {
  it('are signed, verified by the receiver, and still delivered after a SIGKILL mid-retry', async () => {
    const init = ferry(['coordinator', 'init', '--name', 'alerting', '--json']);
    expect(init.status, init.stderr).toBe(0);
    const { coordinatorKey, adminKeyFile } = JSON.parse(init.stdout) as { coordinatorKey: string; adminKeyFile: string };
    let url = await serve();
    hook = await startAlertReceiver(coordinatorKey);
    hook.answer = 500;

    const added = ferry(['alerts', 'add', hook.url, '--on', 'rolled-back,degraded', '--json', '--url', url]);
    expect(added.status, added.stderr).toBe(0);
    const { alertId } = JSON.parse(added.stdout) as { alertId: string };
    const badUrl = ferry(['alerts', 'add', 'ftp://example.com/', '--on', 'offline', '--url', url]);
    expect(badUrl.status).toBe(1);
    expect(badUrl.stderr).toMatch(/\[INVALID\]: url: a webhook URL is http:\/\/ or https:\/\//);
    expect(ferry(['alerts', 'add', hook.url, '--on', 'exploded', '--url', url]).stderr).toMatch(/--on: 'exploded' is not an alert kind \(rolled-back, degraded, offline, audit-broken\)/);

    // An agent (its requests signed with its own key) reports a rollback.
    const admin = new CoordinatorHttpClient(url, loadIdentity(adminKeyFile));
    const agentKey = Identity.generate();
    const { token } = await admin.call('tokens.create', { uses: 1, autoApprove: true });
    await new CoordinatorHttpClient(url, agentKey).call('enroll', { token, name: 'gw-1', facts: { system: 'x86_64-linux', hostname: 'gw-1' } });
    const { seq } = await new CoordinatorHttpClient(url, agentKey).call('agent.status', { configId: null, phase: 'rolled-back', error: 'probation: health check failed' });

    // Retried (500, then 500 again after its backoff): the coordinator is killed while it retries.
    const attempts = await hook.waitForReceived(2);
    expect(attempts.every((attempt) => attempt.payload?.seq === seq)).toBe(true);
    const listed = JSON.parse(ferry(['alerts', 'ls', '--json', '--url', url]).stdout) as { id: string; url: string; delivery: { pending: number; lastOutcome: string; lastStatus: number } }[];
    expect(listed).toEqual([expect.objectContaining({ id: alertId, url: hook.url, delivery: expect.objectContaining({ pending: 1, lastOutcome: 'retrying', lastStatus: 500 }) })]);
    server!.kill('SIGKILL');
    await new Promise((resolve) => server!.once('exit', resolve));
    hook.answer = 200;
    const before = hook.received.length;

    url = await serve();
    const [alert] = await hook.waitForAccepted(1, 30_000);
    expect(alert).toEqual({
      id: `${alertId}:rolled-back:${seq}`,
      alertId,
      kind: 'rolled-back',
      seq,
      action: 'agent.report',
      agent: { id: agentKey.keyId, name: 'gw-1' },
      config: null,
      reason: 'probation: health check failed',
      coordinator: { name: 'alerting', key: coordinatorKey },
      time: expect.any(Number),
    });
    expect(hook.received.length).toBeGreaterThan(before);
    // The same bytes on every attempt, before and after the restart (each signed afresh).
    expect(new Set(hook.received.map((attempt) => attempt.body.toString())).size).toBe(1);
    expect(new Set(hook.received.map((attempt) => attempt.signature)).size).toBe(hook.received.length);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(hook.accepted).toHaveLength(1);
    const after = JSON.parse(ferry(['alerts', 'ls', '--json', '--url', url]).stdout) as { delivery: Record<string, unknown> }[];
    expect(after[0]!.delivery).toMatchObject({ pending: 0, lastOutcome: 'delivered', lastStatus: 200, delivered: 1, failed: 0, dropped: 0 });
    const table = ferry(['alerts', 'ls', '--url', url]).stdout;
    expect(table).toContain(alertId);
    expect(table).toMatch(/delivered \(200\)/);
    expect(ferry(['alerts', 'rm', alertId, '--url', url]).status).toBe(0);
    expect(JSON.parse(ferry(['alerts', 'ls', '--json', '--url', url]).stdout)).toEqual([]);
  });
});
