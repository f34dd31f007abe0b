/**
 * The fixed costs of an app change (issue 17): from `ferry config submit`
 * being spawned until the coordinator has the agent `active` on the new
 * config, on 127.0.0.1 where bytes cost nothing, broken into phases.
 *
 * Real processes: `ferry coordinator serve --listen 127.0.0.1:0`, an agent
 * daemon (`ferry agent enroll` with a `tls=pinned` join string, then
 * `ferry agent run` with the shipped unit's node flags and environment), and
 * `ferry config submit` for each change. The closure is built by real Nix
 * (bench/fixtures/app-change.nix: the test fixture's library plus an app
 * whose ~0.7 MB bundle differs per version). A baseline is deployed first,
 * then BENCH_CHANGES (default 5) changes, one at a time.
 *
 * Several Ferry trees can be compared (BENCH_FERRY_ROOTS=DIR,DIR: each a
 * built tree, e.g. a `git archive` of a commit; default this tree): each
 * gets its own coordinator and agent, and their changes alternate, so a
 * machine that other work loads now and then loads them alike.
 *
 * Where the timestamps come from: every Ferry process here runs with
 * bench/fixtures/timing-preload.ts (`node --import`), which records its
 * start, the end of Node's own start-up, each HTTP request it sends and
 * each reply's headers (undici's diagnostics channels), and in the agent
 * each data-plane call and connection; the agent's events.jsonl gives
 * deploy → fetched → materialized → switched → active. The end is the
 * reply to the agent's `POST /v1/agent/status` that says `active` (the
 * coordinator has committed it); the bench's own 10 ms poll of
 * `GET /v1/agents/<id>` confirms it.
 *
 * Usage: `npm run bench:app-change` (builds, compiles the preload, runs);
 * BENCH_CHANGES=N; BENCH_FERRY_ROOTS=DIR[,DIR…];
 * BENCH_LISTEN=ADDRESS: the coordinator listens there instead of 127.0.0.1
 * (a non-loopback address of this machine: the agent then asks for zstd on
 * the wire, as on a real link; the bytes still go through the kernel's
 * loopback);
 * BENCH_PAYLOAD=edit: each version's bundle is the baseline's 3 MB with 7
 * bytes changed (like the real corpus's app-change: what group-level dedup
 * saves) instead of 0.7 MB of fresh random bytes; BENCH_KEEP=1 keeps
 * bench/.work/app-change-<pid> (logs, timings). BENCH_CPU_PROF=1 also writes
 * CPU profiles (`--cpu-prof`, into each tree's cpu-profiles/) of the agent
 * and of one extra `config submit`. Needs root, Nix and busybox (the
 * real-Nix fixtures); skips with the reason otherwise.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { loadIdentity } from '../protocol/identity.js';
import { nixEnv, nixUnavailableReason } from '../test/nix-fixtures/index.js';
import { benchWorkDir } from './fixtures/big-closure.js';
import { agentUnit, report } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, '..');
/** The Ferry trees under test (each with its build/): this one by default. */
const ferryRoots = (process.env.BENCH_FERRY_ROOTS ?? process.env.BENCH_FERRY_ROOT ?? repo).split(',').map((root) => path.resolve(root));
const preload = path.join(repo, 'build', 'bench', 'fixtures', 'timing-preload.js');
const unbundledRunner = path.join(repo, 'build', 'bench', 'fixtures', 'run-unbundled.js');

const skip =
  nixUnavailableReason() ??
  ferryRoots.map((root) => (existsSync(path.join(root, 'build', 'cli', 'main.js')) ? undefined : `${root}/build is missing: run \`npm run build\` there (npm run bench:app-change does here)`)).find(Boolean) ??
  (existsSync(preload) && existsSync(unbundledRunner) ? undefined : `${preload} is missing: run \`npx tsc -p tsconfig.bench.json\` (npm run bench:app-change does)`);
if (skip) {
  console.log(`app-change latency bench skipped: ${skip}`);
  process.exit(0);
}

const changes = Number(process.env.BENCH_CHANGES ?? 5);
const listen = process.env.BENCH_LISTEN ?? '127.0.0.1';
const editPayload = process.env.BENCH_PAYLOAD === 'edit';
/** The baseline's bundle when versions are edits of it (BENCH_PAYLOAD=edit). */
const editBase = randomBytes(3_000_000);
const profiling = process.env.BENCH_CPU_PROF === '1';
const system = `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const work = path.join(benchWorkDir, `app-change-${process.pid}`);
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

// ---- the closures: the app at version 0 (baseline) … `changes` ------------------------------

/** Builds app version `index`: a fresh ~0.7 MB bundle (random: nothing of it is anywhere yet), or with BENCH_PAYLOAD=edit the baseline's with 7 bytes changed. */
function buildApp(index: number): string {
  const version = `v${index}`;
  const payload = path.join(work, 'payload', version);
  mkdirSync(payload, { recursive: true });
  const bundle = editPayload ? Buffer.from(editBase) : randomBytes(700_000);
  if (editPayload && index > 0) randomBytes(7).copy(bundle, 1_000_000 + index * 65_536);
  writeFileSync(path.join(payload, 'bundle.js'), bundle);
  const busybox = realpathSync(execFileSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).trim());
  return execFileSync(
    'nix-build',
    [path.join(here, 'fixtures', 'app-change.nix'), '--argstr', 'busyboxPath', busybox, '--arg', 'payload', payload, '--argstr', 'version', `${process.pid}-${version}`, '--out-link', path.join(work, `result-${version}`)],
    { env: nixEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  ).trim();
}
const versions = Array.from({ length: changes + 1 }, (_, index) => buildApp(index));

// ---- processes ------------------------------------------------------------------------------------

const children = new Set<ChildProcess>();
/** SIGTERM, then SIGKILL after `graceMs` (an agent ends once its held watch is answered: up to its poll interval). */
async function stop(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

interface Timing {
  at: number;
  pid: number;
  kind: string;
  what?: string;
  id?: number;
  /** Which transport carried a data call (data.done). */
  transport?: string;
}
const readTimings = (file: string): Timing[] => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Timing) : []);
interface AgentEvent {
  at: number;
  kind: string;
  configId?: string;
}
/** One change's phases, milliseconds, in the order they happen. */
type Breakdown = Record<string, number>;

/** One Ferry tree's coordinator and agent, following graph `app` with the baseline active. */
interface Setup {
  root: string;
  coordinator: ChildProcess;
  agent: ChildProcess;
  /** Submits a change, waits for it to be active and returns its breakdown. */
  measure(change: number): Promise<Breakdown>;
  /** One more `config submit` under `--cpu-prof`. */
  profileSubmit(): Promise<void>;
}

async function setUp(root: string, index: number): Promise<Setup> {
  const ferryBin = path.join(root, 'bin', 'ferry');
  const dir = path.join(work, `ferry-${index}`);
  const logs = path.join(dir, 'logs');
  const timings = path.join(dir, 'timings');
  mkdirSync(logs, { recursive: true });
  mkdirSync(timings, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...nixEnv, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'coordinator'), XDG_CACHE_HOME: path.join(dir, 'xdg-cache') };
  let logCount = 0;
  /** `node [--import timing-preload] bin/ferry …` (or the unbundled build: run-unbundled.ts), its stderr to a log. */
  const startFerry = (who: string, args: string[], options: { nodeFlags?: string[]; extraEnv?: NodeJS.ProcessEnv; timings?: string; unbundled?: boolean } = {}): ChildProcess => {
    const program = options.unbundled ? [unbundledRunner, root] : [ferryBin];
    const argv = [...(options.timings ? ['--import', preload] : []), ...(options.nodeFlags ?? []), ...program, ...args];
    const child = spawn(process.execPath, argv, { env: { ...env, ...options.extraEnv, ...(options.timings ? { FERRY_BENCH_TIMINGS: options.timings } : {}) }, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr!.pipe(createWriteStream(path.join(logs, `${String(++logCount).padStart(3, '0')}-${who}.log`)));
    children.add(child);
    child.on('exit', () => children.delete(child));
    return child;
  };
  /** Runs a Ferry command to completion; its stdout. */
  const ferry = (who: string, args: string[], options: Parameters<typeof startFerry>[2] = {}): Promise<string> => {
    const child = startFerry(who, args, options);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`ferry ${args.join(' ')} exited with ${code} (log: ${logs})`))));
    });
  };

  execFileSync(process.execPath, [ferryBin, 'coordinator', 'init', '--name', 'bench'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const coordinator = startFerry('coordinator', ['coordinator', 'serve', '--listen', `${listen}:0`]);
  const { url, fingerprint } = await new Promise<{ url: string; fingerprint: string }>((resolve, reject) => {
    let out = '';
    coordinator.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const found = /HTTP API:\s+(http:\/\/\S+)/.exec(out)?.[1];
      const fp = /TLS fingerprint:\s+(\S+)/.exec(out)?.[1];
      if (found && fp && /QUIC data plane:\s+\S+:\d+/.test(out)) resolve({ url: found, fingerprint: fp });
    });
    coordinator.on('exit', (code) => reject(new Error(`the coordinator exited with ${code}: ${out}`)));
  });
  const connection = ['--url', url, '--fingerprint', fingerprint];
  const admin = new CoordinatorHttpClient(url, loadIdentity(path.join(dir, 'config', 'keys', 'bench-admin.key')), { pinnedFingerprint: fingerprint });
  await ferry('push', ['push', ...versions, '--quiet', ...connection]);

  const stateDir = path.join(dir, 'agent');
  const join = (JSON.parse(await ferry('tokens', ['tokens', 'create', '--uses', '1', '--auto-approve', '--json', ...connection])) as { join: string }).join;
  const { agentId } = JSON.parse(await ferry('enroll', ['agent', 'enroll', join, '--state-dir', stateDir, '--store-dir', path.join(stateDir, 'store'), '--name', 'bench', '--json'])) as { agentId: string };
  const { nodeFlags, environment } = agentUnit(repo);
  const agentTimings = path.join(timings, 'agent.jsonl');
  const agent = startFerry('agent', ['agent', 'run', '--state-dir', stateDir, '--poll', '30'], {
    nodeFlags: [...nodeFlags, ...(profiling ? ['--cpu-prof', '--cpu-prof-dir', path.join(dir, 'cpu-profiles', 'agent')] : [])],
    extraEnv: { ...environment, FERRY_BENCH_DATA_CLIENT: path.join(root, 'build', 'protocol', 'data-client.js') },
    timings: agentTimings,
    // The data client the preload wraps is build/protocol/data-client.js: a bundle's own copy would go unseen.
    unbundled: true,
  });

  const submit = async (target: string, message: string, timingsFile?: string, flags: string[] = []) =>
    (JSON.parse(await ferry('submit', ['config', 'submit', 'app', '--target', `${system}=${target}`, '--activate', 'bin/activate', '-m', message, '--json', ...connection], { ...(timingsFile ? { timings: timingsFile } : {}), nodeFlags: flags })) as { configId: string }).configId;
  const waitActive = async (configId: string, timeoutMs = 120_000): Promise<number> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = await admin.call('agents.show', { agentId });
      if (record.phase === 'active' && record.currentConfig === configId) return performance.timeOrigin + performance.now();
      if (record.phase === 'failed' || record.phase === 'rolled-back') throw new Error(`agent: ${record.phase} (${record.lastError ?? 'no error given'})`);
      if (Date.now() > deadline) throw new Error(`agent not active on ${configId} after ${timeoutMs} ms (phase ${record.phase})`);
      await sleep(10);
    }
  };

  const baseline = await submit(versions[0]!, 'baseline');
  await admin.call('agents.assign', { agentId, graph: 'app' });
  await waitActive(baseline);

  async function measure(change: number): Promise<Breakdown> {
    const cliTimings = path.join(timings, `submit-${change}.jsonl`);
    const agentLinesBefore = readTimings(agentTimings).length;
    const spawned = performance.timeOrigin + performance.now();
    const configId = await submit(versions[change]!, `change ${change}`, cliTimings);
    const exited = performance.timeOrigin + performance.now();
    const polledActive = await waitActive(configId);
    await sleep(200);

    const cli = readTimings(cliTimings);
    const agentLines = readTimings(agentTimings).slice(agentLinesBefore);
    const events = readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as AgentEvent).filter((event) => event.configId === configId);
    const cliAt = (kind: string, what?: string) => cli.find((t) => t.kind === kind && (what === undefined || t.what === what))?.at ?? NaN;
    const agentAt = (kind: string, what?: string) => agentLines.find((t) => t.kind === kind && (what === undefined || t.what === what))?.at ?? NaN;
    const eventAt = (kind: string) => events.find((event) => event.kind === kind)?.at ?? NaN;
    const postSent = cliAt('http.send', 'POST /v1/graphs/app/configs');
    const postDone = cliAt('http.headers', 'POST /v1/graphs/app/configs');
    // The watch that woke: the first watch reply after the POST was sent (the coordinator wakes
    // watchers when it commits, which can be before the POST's own reply leaves).
    const watchReply = agentLines.find((t) => t.kind === 'http.headers' && t.what === 'GET /v1/agent/watch' && t.at >= postSent)?.at ?? NaN;
    const activeReported = agentLines.filter((t) => t.kind === 'http.headers' && t.what === 'POST /v1/agent/status').at(-1)?.at ?? NaN;
    const dataPhase = (op: string) => {
      const calls = agentLines.filter((t) => t.kind === 'data.call' && t.what === op);
      const dones = agentLines.filter((t) => t.kind === 'data.done' && t.what === op);
      return calls.length === 0 ? 0 : (dones.at(-1)?.at ?? NaN) - calls[0]!.at;
    };
    return {
      'total (spawn → active committed)': activeReported - spawned,
      'total (spawn → bench poll sees active)': polledActive - spawned,
      'cli: spawn → node start-up done': cliAt('preload') - spawned,
      'cli: modules + setup → first request': cliAt('http.send') - cliAt('preload'),
      'cli: GET head (incl. TLS connect)': cliAt('http.headers') - cliAt('http.send'),
      'cli: sign + POST config': postDone - cliAt('http.headers'),
      'cli: POST reply → process gone (not on the path to active)': exited - postDone,
      'coordinator: POST sent → watch reply (wake)': watchReply - postSent,
      'agent: watch reply → deploy event (reports, facts, GET desired)': eventAt('deploy') - watchReply,
      'agent: deploy → QUIC connect starts (report fetching, info, cert)': agentAt('data.connect') - eventAt('deploy'),
      // Since warmHttps, small fetches go over HTTPS and never connect QUIC (NaN here then).
      'agent: QUIC connect + hello + auth': agentAt('data.connected') - agentAt('data.connect'),
      'agent: deploy → closure.manifest sent': agentAt('data.call', 'closure.manifest') - eventAt('deploy'),
      'agent: closure.manifest': dataPhase('closure.manifest'),
      'agent: requests over QUIC / all': agentLines.filter((t) => t.kind === 'data.done' && t.transport === 'quic').length / Math.max(1, agentLines.filter((t) => t.kind === 'data.done').length),
      'agent: directories.get': dataPhase('directories.get'),
      'agent: blobs (blobs.delta, blobs.get, blob.get)': dataPhase('blobs.delta') + dataPhase('blobs.get') + dataPhase('blob.get'),
      'agent: fetch total (deploy → fetched)': eventAt('fetched') - eventAt('deploy'),
      'agent: materialize': eventAt('materialized') - eventAt('fetched'),
      'agent: switch': eventAt('switched') - eventAt('materialized'),
      'agent: activation (after switch)': eventAt('active') - eventAt('switched'),
      'agent: active report committed': activeReported - eventAt('active'),
    };
  }

  async function profileSubmit(): Promise<void> {
    await submit(versions[0]!, 'profiled', undefined, ['--cpu-prof', '--cpu-prof-dir', path.join(dir, 'cpu-profiles')]);
  }
  return { root, coordinator, agent, measure, profileSubmit };
}

// ---- the run ----------------------------------------------------------------------------------

const setups: Setup[] = [];
const breakdowns = new Map<string, Breakdown[]>(ferryRoots.map((root) => [root, []]));
try {
  for (const [index, root] of ferryRoots.entries()) setups.push(await setUp(root, index));
  for (let change = 1; change <= changes; change++) {
    for (const setup of setups) {
      await sleep(1500);
      const breakdown = await setup.measure(change);
      breakdowns.get(setup.root)!.push(breakdown);
      process.stderr.write(`${setup.root}, change ${change}: ${breakdown['total (spawn → active committed)']!.toFixed(0)} ms\n`);
    }
  }
  if (profiling) for (const setup of setups) await setup.profileSubmit();
} finally {
  // Profiling: the agent must exit by itself to write its profile.
  for (const setup of setups) await stop(setup.agent, profiling ? 40_000 : 5000);
  for (const setup of setups) await stop(setup.coordinator);
  for (const child of children) child.kill('SIGKILL');
}

const median = (values: number[]) => {
  const sorted = values.filter((value) => !Number.isNaN(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
const phases = Object.keys(breakdowns.get(ferryRoots[0]!)![0] ?? {});
report(
  'app-change-latency',
  phases.map((phase) => ({
    phase,
    ...Object.fromEntries(
      ferryRoots.flatMap((root, index) => {
        const runs = breakdowns.get(root)!.map((breakdown) => breakdown[phase]!);
        const name = ferryRoots.length > 1 ? `[${index}] ` : '';
        return [
          [`${name}median ms`, median(runs).toFixed(1)],
          [`${name}runs`, runs.map((value) => value.toFixed(0)).join(' ')],
        ];
      }),
    ),
  })),
);
if (ferryRoots.length > 1) for (const [index, root] of ferryRoots.entries()) console.log(`[${index}] ${root}`);
if (process.env.BENCH_KEEP === '1') process.stderr.write(`kept ${work}\n`);
else {
  execFileSync('chmod', ['-R', 'u+w', work]);
  rmSync(work, { recursive: true, force: true });
}
