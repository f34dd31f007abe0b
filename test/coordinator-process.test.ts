// The coordinator as an operator runs it: `ferry coordinator init` and
// `serve` in child processes, the admin CLI against it, and a SIGKILL in the
// middle of a burst of commands that must lose no acknowledged command.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { buildFixtureClosure, nix, nixUnavailableReason } from './nix-fixtures/index.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
let dir: string;
let env: NodeJS.ProcessEnv;
let server: ChildProcess | undefined;

function ferry(args: string[], input?: Buffer): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [ferryBin, ...args], { env, input });
  return { status: result.status ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

async function serve(): Promise<string> {
  server = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    server!.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    server!.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
  });
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-coordinator-process-'));
  env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'data') };
});
afterEach(() => {
  server?.kill('SIGKILL');
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

describe('ferry coordinator', () => {
  it('init + serve + the admin CLI: tokens, approval, --where, configs, audit verify and offline export', async () => {
    const init = ferry(['coordinator', 'init', '--name', 'test', '--json']);
    expect(init.status, init.stderr).toBe(0);
    const created = JSON.parse(init.stdout) as { coordinatorKey: string; adminKeyFile: string; tlsFingerprint: string };
    expect(ferry(['coordinator', 'init']).stderr).toMatch(/already holds a coordinator/);
    const url = await serve();
    const cli = (...args: string[]) => ferry([...args, '--url', url]);

    const token = JSON.parse(cli('tokens', 'create', '--uses', '1', '--label', 'site=barn-3', '--json').stdout) as { token: string; join: string };
    expect(token.join).toContain(`coordinator=${created.coordinatorKey}`);
    const agent = Identity.generate();
    await new CoordinatorHttpClient(url, agent).call('enroll', { token: token.token, name: 'gw-1', facts: { system: 'aarch64-linux', hostname: 'gw-1' } });
    expect(cli('agents', 'ls', '--where', 'status=enrolling').stdout).toContain('gw-1');
    expect(cli('agents', 'approve', 'gw-1').status).toBe(0);
    const listed = JSON.parse(cli('agents', 'ls', '--where', 'labels.site=barn-3', '--where', 'system=aarch64-linux', '--json').stdout) as { id: string; status: string }[];
    expect(listed).toEqual([expect.objectContaining({ id: agent.keyId, status: 'enrolled' })]);
    expect(JSON.parse(cli('agents', 'ls', '--where', 'labels.site=elsewhere', '--json').stdout)).toEqual([]);

    const missing = cli('config', 'submit', 'edge', '--target', 'aarch64-linux=/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x', '--activate', 'bin/activate');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/\[MISSING_STORE_PATH\]/);

    const verified = JSON.parse(cli('audit', 'verify', '--json').stdout) as { ok: boolean; events: number };
    expect(verified.ok).toBe(true);
    const exportFile = path.join(dir, 'audit.jsonl');
    expect(cli('audit', 'export', '-o', exportFile).status).toBe(0);
    expect(ferry(['audit', 'verify', '--file', exportFile, '--pubkey', created.coordinatorKey]).stdout).toMatch(/audit log OK: \d+ events/);
    const wrongKey = ferry(['audit', 'verify', '--file', exportFile, '--pubkey', Identity.generate().keyId]);
    expect(wrongKey.status).toBe(1);
    expect(wrongKey.stdout).toMatch(/BROKEN at seq/);
    expect(cli('audit', 'log', '--action', 'agent.approve').stdout).toContain(agent.keyId);
    expect(loadIdentity(created.adminKeyFile).keyId).toBe(JSON.parse(cli('keys', 'ls', '--json').stdout)[0].id);
    // A key added from its OpenSSH public key file (`id_ed25519.pub`: the blob is SSH-encoded type and key).
    const viewer = Identity.generate();
    const sshString = (bytes: Uint8Array) => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), bytes]);
    const publicKeyFile = path.join(dir, 'viewer.pub');
    writeFileSync(publicKeyFile, `ssh-ed25519 ${Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(viewer.publicKey)]).toString('base64')} viewer@host\n`);
    expect(cli('keys', 'add', publicKeyFile, '--role', 'viewer').status).toBe(0);
    expect(JSON.parse(cli('keys', 'ls', '--json').stdout)).toContainEqual(expect.objectContaining({ id: viewer.keyId, role: 'viewer' }));

    // A context that knows the fingerprint talks TLS to the coordinator's port, and only to that certificate.
    const addContext = (name: string, fingerprint: string) => ferry(['context', 'add', name, '--url', url, '--key', created.adminKeyFile, '--fingerprint', fingerprint]);
    expect(addContext('pinned', created.tlsFingerprint.toUpperCase().replace(/(..)(?!$)/g, '$1:')).status).toBe(0);
    expect(JSON.parse(ferry(['agents', 'ls', '--context', 'pinned', '--json']).stdout)).toEqual([expect.objectContaining({ id: agent.keyId })]);
    expect(addContext('forged', 'ab'.repeat(32)).status).toBe(0);
    const forged = ferry(['agents', 'approve', 'gw-1', '--context', 'forged']);
    expect(forged.status).toBe(1);
    expect(forged.stderr).toMatch(/\[TLS_FINGERPRINT_MISMATCH\].*refusing/);
    // The same without a context (a pipeline: --url, --key, --fingerprint or $FERRY_FINGERPRINT).
    expect(JSON.parse(cli('agents', 'ls', '--fingerprint', created.tlsFingerprint, '--json').stdout)).toHaveLength(1);
    expect(cli('agents', 'ls', '--fingerprint', 'cd'.repeat(32)).stderr).toMatch(/\[TLS_FINGERPRINT_MISMATCH\]/);
    const notAFingerprint = addContext('typo', '12:34');
    expect(notAFingerprint.status).toBe(2);
    expect(notAFingerprint.stderr).toMatch(/--fingerprint: '12:34' is not a SHA-256/);
  });

  it.skipIf(nixUnavailableReason() !== undefined)('submits a config whose target was ingested from the real Nix store', async () => {
    ferry(['coordinator', 'init']);
    const { lib } = buildFixtureClosure();
    const ingest = ferry(['castore', 'ingest', '--store-path', lib, '-'], nix(['--dump', lib], { command: 'nix-store' }));
    expect(ingest.status, ingest.stderr).toBe(0);
    const url = await serve();
    const submitted = ferry(['config', 'submit', 'edge', '--target', `x86_64-linux=${lib}`, '--activate', 'bin/lib-tool', '-m', 'first', '--json', '--url', url]);
    expect(submitted.status, submitted.stderr).toBe(0);
    const { configId } = JSON.parse(submitted.stdout) as { configId: string };
    expect(ferry(['graph', 'log', 'edge', '--url', url]).stdout).toContain(configId.slice(0, 12));
  });

  it('loses no acknowledged command when killed with SIGKILL mid-burst, and the chain stays valid', async () => {
    ferry(['coordinator', 'init', '--name', 'kill']);
    const url = await serve();
    const admin = new CoordinatorHttpClient(url, loadIdentity(path.join(dir, 'config', 'keys', 'kill-admin.key')));
    const acknowledged: string[] = [];
    let failures = 0;
    const worker = async (): Promise<void> => {
      for (;;) {
        try {
          acknowledged.push((await admin.call('tokens.create', { uses: 1 })).tokenId);
        } catch {
          failures++;
          return;
        }
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    while (acknowledged.length < 150) await new Promise((resolve) => setTimeout(resolve, 5));
    server!.kill('SIGKILL');
    await Promise.all(workers);
    expect(failures).toBe(8);
    const coordinator = Coordinator.open(path.join(dir, 'data'));
    try {
      expect(await coordinator.verifyAudit()).toMatchObject({ ok: true });
      for (const tokenId of acknowledged) expect(coordinator.state.get('tokens', tokenId), tokenId).toBeDefined();
      expect(coordinator.lastSeq).toBeGreaterThanOrEqual(acknowledged.length + 2);
    } finally {
      coordinator.close();
    }
  });
});
