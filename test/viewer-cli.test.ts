// The audit CLI around the viewer, as an operator runs it (child processes
// against a coordinator with a scripted history): `audit replay` and `audit
// show` against the coordinator and offline against an export, `audit log
// --follow`, and `audit view`'s login link.
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addKey } from '../coordinator/domain/commands.js';
import type { EventDetail, StateResult } from '../protocol/api/viewer-views.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { coordinatorActor } from './fleet-simulator.js';
import { startScriptedCoordinator, type ScriptedCoordinator } from './viewer-fixture.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');

describe('ferry audit replay | show | log --follow | view', () => {
  let scripted: ScriptedCoordinator;
  let env: NodeJS.ProcessEnv;
  let exportFile: string;
  let pubkey: string;

  // Asynchronous: the coordinator serves the CLI from this very process.
  function ferry(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [ferryBin, ...args], { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
      });
    });
  }

  beforeAll(async () => {
    scripted = await startScriptedCoordinator();
    env = { ...process.env, FERRY_CONFIG_DIR: path.join(scripted.dir, 'config'), FERRY_URL: scripted.http.url, FERRY_KEY: scripted.viewerKeyFile };
    exportFile = path.join(scripted.dir, 'audit.jsonl');
    const exported = await ferry(['audit', 'export', '-o', exportFile]);
    expect(exported.status, exported.stderr).toBe(0);
    // Says what it wrote, and how to check it (a pipe gets no progress lines for a short export).
    expect(exported.stderr).toMatch(new RegExp(`wrote the audit log to ${exportFile} \\(\\d+(\\.\\d)? (B|KiB|MiB)\\); verify it offline with: ferry audit verify --file`));
    pubkey = scripted.coordinator.identity.keyId;
  });
  afterAll(() => scripted.close());

  it('replay prints the fleet at a seq or a time, the same from the coordinator and from an export', async () => {
    const { marks } = scripted;
    const text = await ferry(['audit', 'replay', '--at', String(marks.fail)]);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`fleet after event ${marks.fail} \\(agent.report`));
    expect(text.stdout).toMatch(/chain verified through seq \d+/);
    expect(text.stdout).toMatch(/gw-1\s+\S+\s+enrolled\s+edge\s+\S+\s+\S+\s+failed/);
    expect(text.stdout).toMatch(/SUCCEEDED\s+FAILED\s+PENDING\s+UNREPORTED/);

    const live = JSON.parse((await ferry(['audit', 'replay', '--at', String(marks.fail), '--json'])).stdout) as StateResult;
    const offline = JSON.parse((await ferry(['audit', 'replay', '--at', String(marks.fail), '--json', '--file', exportFile, '--pubkey', pubkey])).stdout) as StateResult;
    expect(offline.state).toEqual(live.state);
    expect(live.seq).toBe(marks.fail);

    const time = new Date(live.position!.wallTime).toISOString();
    const byTime = JSON.parse((await ferry(['audit', 'replay', '--at', time, '--json'])).stdout) as StateResult;
    expect(byTime.position!.wallTime).toBe(live.position!.wallTime);
    const start = JSON.parse((await ferry(['audit', 'replay', '--at', '0', '--json'])).stdout) as StateResult;
    expect(start.state.counts).toMatchObject({ agents: 0, keys: 0 });

    const outside = await ferry(['audit', 'replay', '--at', '999999']);
    expect(outside.status).toBe(1);
    expect(outside.stderr).toMatch(/\[OUT_OF_RANGE\].*outside the log/);
    expect((await ferry(['audit', 'replay', '--file', exportFile])).stderr).toMatch(/--pubkey is required/);
  });

  it('show prints one event with its verification status and the rows it changed', async () => {
    const { marks } = scripted;
    const shown = await ferry(['audit', 'show', String(marks.fail)]);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`event ${marks.fail}: agent.report`));
    expect(shown.stdout).toMatch(/chain: +verified in the hash chain/);
    expect(shown.stdout).toMatch(/request: +signed/);
    expect(shown.stdout).toContain('phase: activating → failed');
    expect(shown.stdout).toContain('lastError: — → health check failed: bin/check exited with 1');
    const submit = await ferry(['audit', 'show', String(marks.submit1)]);
    expect(submit.stdout).toMatch(/config: +signature valid/);
    const live = JSON.parse((await ferry(['audit', 'show', String(marks.fail), '--json'])).stdout) as EventDetail;
    const offline = JSON.parse((await ferry(['audit', 'show', String(marks.fail), '--json', '--file', exportFile, '--pubkey', pubkey])).stdout) as EventDetail;
    expect(offline.diff).toEqual(live.diff);
    expect(offline.event).toEqual(live.event);
  });

  it('log --follow prints events as they are recorded', async () => {
    const child = spawn(process.execPath, [ferryBin, 'audit', 'log', '--follow', '--after', String(scripted.coordinator.lastSeq)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    try {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(out).toBe('');
      const key = Identity.generate();
      scripted.coordinator.record(coordinatorActor(scripted.coordinator), (context) => addKey(context, { keyId: key.keyId, role: 'viewer', label: 'followed' }));
      const deadline = Date.now() + 15_000;
      while (!out.includes('key.add') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(out).toMatch(new RegExp(`${scripted.coordinator.lastSeq}\\s.*key.add\\s+${key.keyId}`));
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('view prints a one-time login link; with --file it serves the export read-only', async () => {
    const view = await ferry(['audit', 'view']);
    expect(view.status, view.stderr).toBe(0);
    const url = /^(http:\/\/\S+\/viewer\/login\?token=\S+)$/m.exec(view.stdout)![1]!;
    const login = await fetch(url, { redirect: 'manual' });
    expect(login.status).toBe(303);
    expect((await fetch(url, { redirect: 'manual' })).status).toBe(401);

    const pusher = await new CoordinatorHttpClient(scripted.http.url, scripted.pusher).call('viewer.session').catch((error: unknown) => error);
    expect(pusher).toMatchObject({ status: 403 });

    const wrongKey = spawn(process.execPath, [ferryBin, 'audit', 'view', '--file', exportFile, '--pubkey', Identity.generate().keyId], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        wrongKey.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (/login\?token=/.test(out)) resolve();
        });
        wrongKey.on('exit', (code) => reject(new Error(`exited with ${code}: ${out}`)));
      });
      expect(out).toMatch(/CHAIN BROKEN at seq \d+: the checkpoint's signature is not the coordinator's/);
      const link = /^(http:\/\/\S+\/viewer\/login\?token=\S+)$/m.exec(out)![1]!;
      const session = (await fetch(link, { redirect: 'manual' })).headers.get('set-cookie')!.split(';')[0]!;
      const info = (await (await fetch(new URL('/viewer/api/info', link), { headers: { cookie: session } })).json()) as { mode: string; verification: { ok: boolean } };
      expect(info).toMatchObject({ mode: 'file', verification: { ok: false } });
      // Read-only, and no signed requests offline.
      const signed = await new CoordinatorHttpClient(new URL(link).origin, scripted.admin).call('viewer.session').catch((error: unknown) => error);
      expect(signed).toMatchObject({ status: 401 });
    } finally {
      wrongKey.kill('SIGTERM');
    }
  });
});
