// End to end with real processes on 127.0.0.1: a coordinator (`ferry
// coordinator serve`), agents (`ferry agent run`) with temp state and store
// dirs, the real-Nix fixture closure pushed with `ferry push`. Covers
// activation + health check, upgrade, a failing health check rolled back,
// pin, graph rollback, a coordinator restart while agents run, an agent
// killed with SIGKILL mid-deployment and restarted, and revocation. The
// materialized store paths' NARs equal `nix-store --dump` of the originals.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPath } from '../nix/nar/index.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { loadIdentity } from '../protocol/identity.js';
import { buildFixtureClosure, nix, nixEnv, nixUnavailableReason, type FixtureClosure } from './nix-fixtures/index.js';
import { freePort } from './cli-process.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping agent end-to-end tests: ${skipReason}`);
const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');


async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
}

async function narOf(dir: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of dumpPath(dir)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe.skipIf(skipReason !== undefined)('coordinator and agents, end to end', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let url: string;
  let listen: string;
  let coordinator: ChildProcess | undefined;
  const agents = new Map<string, { stateDir: string; storeDir: string; process?: ChildProcess; id: string; log?: string }>();
  let admin: CoordinatorHttpClient;
  let v1: FixtureClosure;
  let v2: FixtureClosure;

  const ferry = (...args: string[]) => {
    const result = spawnSync(process.execPath, [ferryBin, ...args], { env });
    return { status: result.status ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
  };
  const ok = (...args: string[]) => {
    const result = ferry(...args, ...(args[0] === 'agent' || args[0] === 'bundle' ? [] : ['--url', url]));
    expect(result.status, `ferry ${args.join(' ')}: ${result.stderr}`).toBe(0);
    return result.stdout;
  };

  async function startCoordinator(): Promise<void> {
    coordinator = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--listen', listen], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    coordinator.stderr!.on('data', () => undefined);
    await new Promise<void>((resolve, reject) => {
      coordinator!.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (/QUIC data plane:\s+127\.0\.0\.1:\d+/.test(out)) resolve();
      });
      coordinator!.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
    });
  }

  function startAgent(name: string): void {
    const agent = agents.get(name)!;
    agent.process = spawn(process.execPath, [ferryBin, 'agent', 'run', '--state-dir', agent.stateDir, '--poll', '1', '--health-retry-delay', '100'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    agent.log = '';
    agent.process.stderr!.on('data', (chunk: Buffer) => (agent.log += chunk.toString()));
  }

  const agentRecord = (name: string) => admin.call('agents.show', { agentId: agents.get(name)!.id });
  const converged = (name: string, configId: string, phase = 'active') =>
    waitFor(`${name} to be ${phase} on ${configId.slice(0, 12)}`, async () => {
      const record = await agentRecord(name);
      return record.phase === phase && (phase !== 'active' || record.currentConfig === configId) ? record : undefined;
    });
  const marker = (name: string) => readFileSync(path.join(agents.get(name)!.stateDir, 'marker'), 'utf8').trim();
  /** The kinds of an agent's recorded events (its events.jsonl), oldest first. */
  const eventKinds = (name: string) =>
    readFileSync(path.join(agents.get(name)!.stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { kind: string }).kind);
  /**
   * Resolves once the coordinator has heard from the agent three separate
   * times after `since` (ms): its daemon has then decided at least one
   * round that began after `since`. A round's requests before its decision
   * are at most its facts report (no reports are queued here); the end of
   * its watch comes after the decision, and a deployment it decides on
   * records its `deploy` event before it reports anything.
   */
  async function roundDecidedAfter(name: string, since: number): Promise<void> {
    const heard = new Set<number>();
    await waitFor(`a round of ${name} decided after ${since}`, async () => {
      const { lastSeen } = await agentRecord(name);
      if (lastSeen !== null && lastSeen > since) heard.add(lastSeen);
      return heard.size >= 3 || undefined;
    });
  }
  const submit = (target: string, extra: string[] = []) =>
    (
      JSON.parse(
        ok(
          'config', 'submit', 'web',
          '--target', `x86_64-linux=${target}`,
          '--activate', 'echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/marker"',
          '--health', 'test -x bin/app && grep -q "$FERRY_CONFIG_ID" "$FERRY_STATE_DIR/marker"',
          '--health-retries', '1',
          ...extra,
          '--json',
        ),
      ) as { configId: string }
    ).configId;

  beforeAll(async () => {
    v1 = buildFixtureClosure();
    v2 = buildFixtureClosure('v2');
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-'));
    env = { ...nixEnv, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'coordinator'), XDG_CACHE_HOME: path.join(dir, 'cache') };
    expect(ferry('coordinator', 'init', '--name', 'e2e').status).toBe(0);
    listen = `127.0.0.1:${await freePort()}`;
    url = `http://${listen}`;
    await startCoordinator();
    admin = new CoordinatorHttpClient(url, loadIdentity(path.join(dir, 'config', 'keys', 'e2e-admin.key')));
    ok('push', v1.app);
    ok('push', v2.app);
    const join = (JSON.parse(ok('tokens', 'create', '--uses', '3', '--auto-approve', '--label', 'site=lab', '--json')) as { join: string }).join;
    // Agents reach the coordinator over HTTPS on its HTTP port, its certificate pinned (test/pinned-https.test.ts).
    expect(join).toContain('&tls=pinned');
    for (const name of ['alpha', 'beta', 'gamma']) {
      const stateDir = path.join(dir, name);
      const enrolled = JSON.parse(ok('agent', 'enroll', join, '--state-dir', stateDir, '--store-dir', path.join(stateDir, 'store'), '--name', name, '--json')) as { agentId: string; status: string };
      expect(enrolled.status).toBe('enrolled');
      expect(JSON.parse(readFileSync(path.join(stateDir, 'agent.json'), 'utf8')).coordinator).toMatchObject({ httpUrl: `https://${listen}`, pinnedTls: true });
      agents.set(name, { stateDir, storeDir: path.join(stateDir, 'store'), id: enrolled.agentId });
    }
    startAgent('alpha');
    startAgent('beta');
  }, 120_000);

  afterAll(() => {
    for (const agent of agents.values()) agent.process?.kill('SIGKILL');
    coordinator?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let first: string;
  let second: string;

  it('deploys a config to every assigned agent: store paths byte-identical, read-only, mtime 1', async () => {
    first = submit(v1.app, ['-m', 'first']);
    ok('agents', 'assign', 'alpha', 'beta', 'web');
    for (const name of ['alpha', 'beta']) {
      await converged(name, first);
      expect(marker(name)).toBe(first);
      const { storeDir } = agents.get(name)!;
      for (const storePath of v1.paths) {
        const location = path.join(storeDir, path.basename(storePath));
        expect((await narOf(location)).equals(nix(['--dump', storePath], { command: 'nix-store' })), location).toBe(true);
        const stat = lstatSync(location);
        if (!stat.isSymbolicLink()) expect(stat.mode & 0o222).toBe(0);
        expect(stat.mtimeMs).toBe(1000);
      }
      expect(readdirSync(storeDir).filter((entry) => entry.startsWith('.'))).toEqual([]);
      // Each byte is kept once: the castore adopts the store's files and drops its own copy of them
      // (no pack, no blob file left), yet still knows and verifies every blob (fsck reads the store files).
      const { stateDir } = agents.get(name)!;
      await waitFor(`${name} to release the castore's copy`, () => readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').includes('"adopted"') || undefined);
      const castoreDir = path.join(stateDir, 'castore');
      expect(existsSync(path.join(castoreDir, 'packs')) ? readdirSync(path.join(castoreDir, 'packs')) : []).toEqual([]);
      expect(existsSync(path.join(castoreDir, 'blobs')) ? readdirSync(path.join(castoreDir, 'blobs'), { recursive: true }).filter((entry) => String(entry).length > 2) : []).toEqual([]);
      const fsck = ferry('castore', 'fsck', '--data-dir', stateDir, '--nars', '--json');
      expect(fsck.status, fsck.stderr).toBe(0);
      const checked = JSON.parse(fsck.stdout) as { blobs: number; problems: unknown[] };
      expect(checked.problems).toEqual([]);
      expect(checked.blobs).toBeGreaterThan(3);
    }
    // The daemon's log (the journal, under systemd) says what it did as it does it.
    expect(agents.get('alpha')!.log).toMatch(new RegExp(`ferry agent: deploy: starting deployment of ${first}[^]*ferry agent: active: generation 1 \\(${first}\\) is active`));
    // The coordinator shows what the agent did (its recent events ring, not audited).
    const shown = JSON.parse(ok('agents', 'show', 'alpha', '--json')) as { activity: { events: { kind: string }[] } };
    expect(shown.activity.events.map((event) => event.kind)).toEqual(expect.arrayContaining(['deploy', 'fetched', 'materialized', 'switched', 'active']));
    // One daemon per state directory (a second is refused); local commands take turns with it.
    const secondDaemon = ferry('agent', 'run', '--state-dir', agents.get('alpha')!.stateDir);
    expect(secondDaemon.status).toBe(1);
    expect(secondDaemon.stderr).toMatch(new RegExp(`\\[AGENT_BUSY\\].*already has a ferry agent running \\(pid ${agents.get('alpha')!.process!.pid}\\)`));
    expect(JSON.parse(ok('agent', 'gc', '--state-dir', agents.get('alpha')!.stateDir, '--json'))).toMatchObject({ removedGenerations: [] });
    const generations = JSON.parse(ok('agent', 'generations', '--state-dir', agents.get('alpha')!.stateDir, '--json')) as { number: number; current: boolean }[];
    expect(generations).toEqual([expect.objectContaining({ number: 1, current: true })]);
  }, 60_000);

  it('upgrades, then rolls back automatically when the health check fails', async () => {
    second = submit(v2.app, ['-m', 'second']);
    for (const name of ['alpha', 'beta']) await converged(name, second);
    const broken = JSON.parse(
      ok('config', 'submit', 'web', '--target', `x86_64-linux=${v1.app}`, '--activate', 'echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/marker"', '--health', 'echo "service did not start" >&2; exit 3', '--health-retries', '1', '-m', 'broken', '--json'),
    ) as { configId: string };
    for (const name of ['alpha', 'beta']) {
      const record = await converged(name, broken.configId, 'rolled-back');
      expect(record.currentConfig).toBe(second);
      expect(record.lastError).toContain('service did not start');
      // The previous generation was re-activated.
      expect(marker(name)).toBe(second);
    }
    // The table shows why on the agent's line: the failure, then the last line of the command's output.
    const rolledBackLines = ok('agents', 'status').split('\n').filter((line) => line.includes('rolled-back'));
    expect(rolledBackLines).toHaveLength(2);
    for (const line of rolledBackLines) expect(line).toMatch(/health check .* failed 2 time\(s\), last exit 3: service did not start$/);
    const summary = JSON.parse(ok('config', 'show', broken.configId, '--json')) as { summary: Record<string, number> };
    expect(summary.summary).toMatchObject({ failed: 2 });
    // Rolling the graph back to `second` makes it desired again; nothing to do for agents already running it.
    ok('graph', 'rollback', 'web', '--to', second);
    expect((await agentRecord('alpha')).desiredConfig).toBe(second);
  }, 90_000);

  it('follows a pin, and a local rollback is reported', async () => {
    ok('agents', 'pin', 'beta', first);
    await converged('beta', first);
    expect(marker('beta')).toBe(first);
    ok('agents', 'pin', 'beta', 'none');
    await converged('beta', second);
    const beta = agents.get('beta')!;
    // While its daemon runs: the two take turns on the state dir (agent/state-lock.ts), and the
    // daemon reads the refusal the rollback wrote instead of deploying `second` again.
    const rolled = JSON.parse(ok('agent', 'rollback', '--state-dir', beta.stateDir, '--json')) as { configId: string };
    expect(rolled.configId).toBe(first);
    await converged('beta', first);
    await roundDecidedAfter('beta', Date.now());
    const kinds = eventKinds('beta');
    expect(kinds.slice(kinds.lastIndexOf('rollback'))).not.toContain('deploy');
    expect(marker('beta')).toBe(first);
    expect(await agentRecord('beta')).toMatchObject({ desiredConfig: second, currentConfig: first });
    expect(beta.process!.exitCode).toBeNull();
  }, 90_000);

  it('keeps agents running through a coordinator restart, then deploys what was submitted meanwhile', async () => {
    const offlineBefore = eventKinds('alpha').filter((kind) => kind === 'offline').length;
    coordinator!.kill('SIGKILL');
    await new Promise((resolve) => coordinator!.once('exit', resolve));
    // The round that finds the coordinator gone ends with an `offline` event, the running generation untouched.
    await waitFor('alpha to find the coordinator gone', () => eventKinds('alpha').filter((kind) => kind === 'offline').length > offlineBefore);
    expect(marker('alpha')).toBe(second); // still running the last good config
    await startCoordinator();
    const third = submit(v1.app, ['-m', 'third, after the restart']);
    await converged('alpha', third);
    // It says it was offline, then back: in its events and in its log (the journal).
    const kinds = eventKinds('alpha');
    expect(kinds.lastIndexOf('online')).toBeGreaterThan(kinds.lastIndexOf('offline'));
    expect(kinds.lastIndexOf('offline')).toBeGreaterThanOrEqual(0);
    expect(agents.get('alpha')!.log).toMatch(/ferry agent: offline: coordinator unreachable: [^]*ferry agent: online: coordinator reachable again/);
  }, 90_000);

  it('converges after SIGKILL mid-deployment: no half store path, profile on a complete generation', async () => {
    const gamma = agents.get('gamma')!;
    ok('agents', 'assign', 'gamma', 'web');
    startAgent('gamma');
    await waitFor('gamma to start deploying', () => existsSync(path.join(gamma.stateDir, 'events.jsonl')) && readFileSync(path.join(gamma.stateDir, 'events.jsonl'), 'utf8').includes('"deploy"'));
    const killed = gamma.process!;
    killed.kill('SIGKILL');
    // Restarted once it is gone, as a supervisor restarts it: a process killed in the middle of an fsync
    // lives on until the disk answers, and a second daemon is refused while the first one is alive.
    if (killed.exitCode === null && killed.signalCode === null) await new Promise((resolve) => killed.once('exit', resolve));
    startAgent('gamma');
    const desired = (await agentRecord('gamma')).desiredConfig!;
    await converged('gamma', desired);
    expect(readdirSync(gamma.storeDir).filter((entry) => entry.startsWith('.'))).toEqual([]);
    const current = JSON.parse(ok('agent', 'status', '--state-dir', gamma.stateDir, '--json')) as { current: { configId: string; location: string } };
    expect(current.current.configId).toBe(desired);
    expect((await narOf(current.current.location)).equals(nix(['--dump', v1.app], { command: 'nix-store' }))).toBe(true);
  }, 90_000);

  it('deploys a bundle from `ferry bundle create --agents` with `ferry agent apply-bundle`; another agent refuses it; the audit log records it', async () => {
    const join = (JSON.parse(ok('tokens', 'create', '--auto-approve', '--json')) as { join: string }).join;
    const stateDir = path.join(dir, 'delta');
    const delta = (JSON.parse(ok('agent', 'enroll', join, '--state-dir', stateDir, '--store-dir', path.join(stateDir, 'store'), '--name', 'delta', '--json')) as { agentId: string }).agentId;
    const dataDir = path.join(dir, 'coordinator');
    const file = path.join(dir, 'second.tar');
    const created = JSON.parse(ok('bundle', 'create', second, '--agents', 'delta', '--ttl', '2d', '--data-dir', dataDir, '-o', file, '--json')) as {
      configId: string;
      bytes: number;
      storePaths: number;
      agents: string[];
      expiresAt: number;
    };
    expect(created).toMatchObject({ configId: second, bytes: statSync(file).size, agents: [delta] });
    expect(created.storePaths).toBeGreaterThan(0);
    expect(created.expiresAt - Date.now()).toBeGreaterThan(47 * 3600 * 1000);
    // Who it is for must be said; a selector is resolved to the enrolled agents it matches now.
    expect(ferry('bundle', 'create', second, '--data-dir', dataDir, '-o', path.join(dir, 'nobody.tar')).stderr).toMatch(/name who the bundle is for: --agents ID… and\/or --where K=V/);
    const forAlpha = path.join(dir, 'alpha.tar');
    expect(JSON.parse(ok('bundle', 'create', second, '--where', 'name=alpha', '--data-dir', dataDir, '-o', forAlpha, '--json')).agents).toEqual([agents.get('alpha')!.id]);

    // A bundle for alpha, on delta: refused, naming delta, nothing deployed.
    const refused = ferry('agent', 'apply-bundle', forAlpha, '--state-dir', stateDir, '--force');
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`\\[BUNDLE_NOT_FOR_THIS_AGENT\\]: .*is not for this agent ${delta}`));
    expect(existsSync(path.join(stateDir, 'generations'))).toBe(false);

    const applied = JSON.parse(ok('agent', 'apply-bundle', file, '--state-dir', stateDir, '--json')) as { configId: string; result: string; forced: boolean };
    expect(applied).toEqual({ configId: second, result: 'active', forced: false });
    expect(readFileSync(path.join(stateDir, 'marker'), 'utf8').trim()).toBe(second);
    expect((await narOf(path.join(stateDir, 'store', path.basename(v2.app)))).equals(nix(['--dump', v2.app], { command: 'nix-store' }))).toBe(true);
    // The coordinator was reachable: the reports went at once, audited as from a bundle.
    const { events } = await admin.call('audit.events', { action: 'agent.report', subject: delta });
    expect(events.at(-1)!.payload).toEqual({ agentId: delta, configId: second, phase: 'active', error: null, source: 'bundle', forced: false });

    // Based on the config delta runs, a bundle carries only what that closure lacks (test/bundle-base.test.ts has
    // the templates); back to the first config, so forced.
    const fullFirst = JSON.parse(ok('bundle', 'create', first, '--agents', 'delta', '--data-dir', dataDir, '-o', path.join(dir, 'first.tar'), '--json')) as { bytes: number; blobs: number };
    const basedFile = path.join(dir, 'first-on-second.tar');
    const based = JSON.parse(ok('bundle', 'create', first, '--base', second, '--agents', 'delta', '--data-dir', dataDir, '-o', basedFile, '--json')) as { bytes: number; blobs: number; templates: number; base: string };
    expect(based.base).toBe(second);
    expect(based.bytes).toBeLessThan(fullFirst.bytes);
    // The two versions differ by a salt in every derivation: files that embed their store paths travel as
    // templates over the other version's, the ones equal in both not at all.
    expect(based.templates).toBeGreaterThan(0);
    expect(based.blobs + based.templates).toBeLessThan(fullFirst.blobs);
    expect(ferry('bundle', 'create', first, '--base', 'f'.repeat(64), '--agents', 'delta', '--data-dir', dataDir, '-o', path.join(dir, 'x.tar')).stderr).toMatch(/--base: no config f{64}/);
    const back = JSON.parse(ok('agent', 'apply-bundle', basedFile, '--state-dir', stateDir, '--force', '--json')) as { configId: string; result: string; forced: boolean };
    expect(back).toEqual({ configId: first, result: 'active', forced: true });
    expect((await narOf(path.join(stateDir, 'store', path.basename(v1.app)))).equals(nix(['--dump', v1.app], { command: 'nix-store' }))).toBe(true);
  }, 90_000);

  it('refuses a revoked agent everywhere', async () => {
    const gamma = agents.get('gamma')!;
    ok('agents', 'revoke', 'gamma');
    const client = new CoordinatorHttpClient(url, loadIdentity(path.join(gamma.stateDir, 'identity.key')));
    const refusal = await client.get('/v1/agent/desired').catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(ApiError);
    expect((refusal as ApiError).code).toBe('REVOKED');
  });
});
