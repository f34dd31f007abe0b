// The systemd units in deploy/ as an operator installs them: each ExecStart runs the real CLI
// (paths moved to a temp dir, the address to a free port), so a unit whose command or options
// the CLI does not know fails here rather than on a fleet. systemd itself does not exist here.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const ferryBin = path.join(repo, 'bin', 'ferry');
let dir: string;
let env: NodeJS.ProcessEnv;

/** The unit's ExecStart (node flags, the ferry arguments with `replacements` applied) and Environment. */
function execStart(unit: string, replacements: Record<string, string>): { nodeFlags: string[]; args: string[]; environment: Record<string, string> } {
  const text = readFileSync(path.join(repo, 'deploy', unit), 'utf8');
  const line = /^ExecStart=\/usr\/bin\/env node (.*)$/m.exec(text)?.[1];
  if (!line) throw new Error(`${unit}: no ExecStart=/usr/bin/env node … line`);
  const words = line.split(' ').filter(Boolean);
  const bin = words.findIndex((word) => word.endsWith('/bin/ferry'));
  expect(words[bin]).toBe('/opt/ferry/bin/ferry');
  const environment = Object.fromEntries(
    [...text.matchAll(/^Environment=(.*)$/gm)].flatMap(([, assignments]) => assignments!.split(' ').filter(Boolean).map((assignment) => assignment.split(/=(.*)/s).slice(0, 2))),
  ) as Record<string, string>;
  return { nodeFlags: words.slice(0, bin), args: words.slice(bin + 1).map((word) => replacements[word] ?? word), environment };
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-units-'));
  env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'config') };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('deploy/ units', () => {
  it('ferry-coordinator.service serves, and stops cleanly on SIGTERM with a signed checkpoint', async () => {
    const dataDir = path.join(dir, 'coordinator');
    const init = spawnSync(process.execPath, [ferryBin, 'coordinator', 'init', '--data-dir', dataDir, '--name', 'unit'], { env, encoding: 'utf8' });
    expect(init.status, init.stderr).toBe(0);
    const { nodeFlags, args, environment } = execStart('ferry-coordinator.service', { '/var/lib/ferry-coordinator': dataDir, '0.0.0.0:7070': '127.0.0.1:0' });
    expect(args.slice(0, 2)).toEqual(['coordinator', 'serve']);
    const child = spawn(process.execPath, [...nodeFlags, ferryBin, ...args], { env: { ...env, ...environment }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (/QUIC data plane:\s+127\.0\.0\.1:\d+/.test(out)) resolve();
      });
      void exited.then((code) => reject(new Error(`exited with ${code}: ${out}${err}`)));
    });
    const url = /HTTP API:\s+(http:\/\/\S+)/.exec(out)![1]!;
    expect(((await (await fetch(`${url}/v1/info`)).json()) as { name: string }).name).toBe('unit');
    // An event after init's own checkpoint, so the one at shutdown is new.
    const token = spawnSync(process.execPath, [ferryBin, 'tokens', 'create', '--url', url, '--json'], { env, encoding: 'utf8' });
    expect(token.status, token.stderr).toBe(0);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('coordinator stopped');
    // The audit log ends on a checkpoint of its last event, signed at shutdown.
    const coordinator = Coordinator.open(dataDir);
    try {
      expect(coordinator.lastSeq).toBeGreaterThan(2);
      expect(coordinator.checkpoints().at(-1)?.seq).toBe(coordinator.lastSeq);
      expect((await coordinator.verifyAudit()).lastCheckpoint?.seq).toBe(coordinator.lastSeq);
    } finally {
      coordinator.close();
    }
  }, 30_000);

  it('ferry-agent.service: its command and options are the CLI’s (an unenrolled state dir is refused by name)', () => {
    const stateDir = path.join(dir, 'agent');
    const { nodeFlags, args, environment } = execStart('ferry-agent.service', { '/var/lib/ferry': stateDir });
    expect(args.slice(0, 2)).toEqual(['agent', 'run']);
    expect(environment).toEqual({ MALLOC_TRIM_THRESHOLD_: '131072' });
    const run = spawnSync(process.execPath, [...nodeFlags, ferryBin, ...args], { env: { ...env, ...environment }, encoding: 'utf8' });
    // Exit 1 with AGENT_STATE, not 2 (a usage error: an unknown option or command).
    expect(run.status, run.stderr).toBe(1);
    expect(run.stderr).toContain(`[AGENT_STATE]: ${stateDir} holds no enrolled agent`);
  });
});
