// `ferry push` from a real Nix store to a coordinator running as a child
// process (QUIC), then a fetch of the same closure through the data client
// into an empty castore: every NAR byte-identical to `nix-store --dump`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore, exportNar } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { fetchConfigClosure, signedConfig } from './data-plane-fixture.js';
import { buildFixtureClosure, nix, nixEnv, nixUnavailableReason, type FixtureClosure } from './nix-fixtures/index.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping ferry push real-Nix tests: ${skipReason}`);
const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');

describe.skipIf(skipReason !== undefined)('ferry push with real Nix', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let server: ChildProcess;
  let url: string;
  let fixture: FixtureClosure;
  const ferry = (...args: string[]) => {
    const result = spawnSync(process.execPath, [ferryBin, ...args], { env });
    return { status: result.status ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
  };

  beforeAll(async () => {
    fixture = buildFixtureClosure();
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-push-'));
    env = { ...nixEnv, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'data'), XDG_CACHE_HOME: path.join(dir, 'cache') };
    expect(ferry('coordinator', 'init', '--name', 'push').status).toBe(0);
    server = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    url = await new Promise((resolve, reject) => {
      server.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
        if (match && /QUIC data plane:\s+127\.0\.0\.1:\d+/.test(out)) resolve(match[1]!);
      });
      server.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
    });
  });
  afterAll(() => {
    server?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('pushes the closure over QUIC once, then has nothing to send', () => {
    const first = ferry('push', fixture.app, '--url', url, '--json');
    expect(first.status, first.stderr).toBe(0);
    const report = JSON.parse(first.stdout) as { transport: string; registered: string[]; closureSize: number; blobsSent: number; bytesSent: number };
    expect(report.transport).toBe('quic');
    expect(report.registered.sort()).toEqual([...fixture.paths].sort());
    expect(report.blobsSent).toBeGreaterThan(0);
    const second = ferry('push', fixture.app, '--url', url);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/new store paths: 0, already present: \d+/);
    expect(second.stdout).toMatch(/sent 0 blobs, 0 templates and 0 directories, 0 B/);
    const log = ferry('audit', 'log', '--action', 'store.push', '--url', url, '--json');
    // JSON lines, one event each.
    expect(log.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { action: string }).action)).toEqual(['store.push', 'store.push']);
  }, 120_000);

  it('fetches the pushed closure as an agent into an empty castore, NARs identical to nix-store --dump', async () => {
    const admin = loadIdentity(path.join(dir, 'config', 'keys', 'push-admin.key'));
    const adminClient = new CoordinatorHttpClient(url, admin);
    const { configId } = await adminClient.call('graphs.submit', { graph: 'demo', ...signedConfig(admin, 'demo', [], { 'x86_64-linux': fixture.app }) });
    const agent = Identity.generate();
    const { token } = await adminClient.call('tokens.create', { uses: 1, autoApprove: true });
    await new CoordinatorHttpClient(url, agent).call('enroll', { token, name: 'fetcher', facts: { system: 'x86_64-linux', hostname: 'fetcher' } });
    await adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'demo' });

    const { client, info } = await openDataClient(url, agent);
    const store = LocalCastore.open(path.join(dir, 'agent-castore'));
    try {
      const report = await fetchConfigClosure(client, store, configId, { coordinatorKey: info.coordinatorKey });
      expect(client.transportKind).toBe('quic');
      expect(report.storePaths.map((info) => info.storePath).sort()).toEqual([...fixture.paths].sort());
      for (const storePath of fixture.paths) {
        const chunks: Uint8Array[] = [];
        for await (const chunk of exportNar(store, store.getStorePath(storePath)!.root)) chunks.push(chunk);
        expect(Buffer.concat(chunks).equals(nix(['--dump', storePath], { command: 'nix-store' })), storePath).toBe(true);
      }
    } finally {
      store.close();
      await client.close();
    }
  }, 120_000);
});
