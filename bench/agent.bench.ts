/**
 * Agent deployment benchmark (issue 6), one run on this machine:
 *
 * 1. cold deploy of the ~200 MiB / 20,000-file closure — config submitted -> agent `active`
 *    (fetch over QUIC with BLAKE3 verification, materialize, switch, activate) — against real
 *    `nix copy --from http://…` of the same closure from a compression=none binary cache
 *    served by a node:http static server, into a fresh chroot store;
 * 2. upgrade to the variant with ~10% of files changed: bytes fetched vs its closure NAR size;
 * 3. N agents (default 20) deploying the same closure at once: total time, coordinator CPU;
 * 4. peak RSS of the agent processes.
 *
 * Real processes: `ferry coordinator serve` and `ferry agent run` from build/ (run
 * `npm run build` first; `npm run bench:agent` does). BENCH_AGENTS=N changes the fleet size;
 * BENCH_AGENT_ARGS adds arguments to `ferry agent run` (e.g. `--http`). Each agent's log is
 * its state dir's agent.log.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { removeTree } from '../agent/materialize.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { loadIdentity } from '../protocol/identity.js';
import { nixEnv } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { agentUnit, mbPerSecond, procCpuSeconds, procStatus, report } from './harness.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const ferryBin = path.join(root, 'bin', 'ferry');
/** The agent runs as the shipped unit runs it. */
const { nodeFlags: agentFlags, environment: agentEnvironment } = agentUnit(root);
const fleetSize = Number(process.env.BENCH_AGENTS ?? 20);
const work = path.join(benchWorkDir, `agent-${process.pid}`);
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const env = { ...nixEnv, FERRY_CONFIG_DIR: path.join(work, 'config'), FERRY_DATA_DIR: path.join(work, 'coordinator'), XDG_CACHE_HOME: path.join(work, 'cache') };
const children: ChildProcess[] = [];
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  // ~1.3 GB per run (stores, castores, caches); BENCH_KEEP=1 keeps it for a look.
  if (!process.env.BENCH_KEEP) removeTree(work);
});

function ferry(...args: string[]): string {
  return execFileSync(process.execPath, [ferryBin, ...args], { env, maxBuffer: 1 << 26 }).toString();
}

/** Peak RSS (VmHWM) of a running process, in MiB. */
/** A process's peak RSS (VmHWM) or current RSS, in MiB. */
const peakRssMiB = (pid: number): number => procStatus(pid, 'VmHWM') / 2 ** 20;
const rssMiB = (pid: number): number => procStatus(pid, 'VmRSS') / 2 ** 20;

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const v0 = bigClosureStorePath(0, nixEnv);
const v1 = bigClosureStorePath(1, nixEnv);
const narSizeOf = (storePath: string) => Number(execFileSync('nix', ['path-info', '-S', '--json', storePath], { env: nixEnv }).toString().match(/"closureSize":(\d+)/)![1]);
const closureBytes = narSizeOf(v0);
const system = `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux`;

// The coordinator, as an operator runs it.
ferry('coordinator', 'init', '--name', 'bench');
const coordinator = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
children.push(coordinator);
const url = await new Promise<string>((resolve) => {
  let out = '';
  coordinator.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
    if (match && /QUIC data plane:\s+\S+:\d+/.test(out)) resolve(match[1]!);
  });
});
const admin = new CoordinatorHttpClient(url, loadIdentity(path.join(work, 'config', 'keys', 'bench-admin.key')));
for (const storePath of [v0, v1]) ferry('push', storePath, '--url', url, '--quiet');
// After a push the coordinator compresses the closure's stream in the background (level 9, then 19:
// coordinator/api/blob-stream-cache.ts), for agents on real links. Deploy once that is done, as a rollout
// some minutes after the push finds it: these agents are on loopback and never ask for it.
{
  const cacheDir = path.join(env.FERRY_DATA_DIR, 'wire-cache');
  const started = Date.now();
  const compressing = () => existsSync(cacheDir) && readdirSync(cacheDir).some((name) => name.endsWith('.part'));
  // Done when no part file is seen three times a second apart (the next refine's starts as the last one's ends).
  for (let quiet = 0; quiet < 3 && Date.now() - started < 30 * 60_000; ) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    quiet = compressing() ? 0 : quiet + 1;
  }
  console.error(`the pushes' streams were compressed ${((Date.now() - started) / 1000).toFixed(1)} s after the pushes`);
}

const join = (JSON.parse(ferry('tokens', 'create', '--uses', String(fleetSize + 1), '--auto-approve', '--url', url, '--json')) as { join: string }).join;
interface BenchAgent {
  name: string;
  id: string;
  stateDir: string;
  process: ChildProcess;
}
function startAgent(name: string): BenchAgent {
  const stateDir = path.join(work, 'agents', name);
  const { agentId } = JSON.parse(ferry('agent', 'enroll', join, '--state-dir', stateDir, '--store-dir', path.join(stateDir, 'store'), '--name', name, '--json')) as { agentId: string };
  const log = openSync(path.join(stateDir, 'agent.log'), 'a');
  const extraArgs = (process.env.BENCH_AGENT_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...agentFlags, ferryBin, 'agent', 'run', '--state-dir', stateDir, '--poll', '30', ...extraArgs], { env: { ...env, ...agentEnvironment }, stdio: ['ignore', 'ignore', log] });
  closeSync(log);
  children.push(child);
  return { name, id: agentId, stateDir, process: child };
}
async function submit(graph: string, target: string, message: string): Promise<string> {
  return (JSON.parse(ferry('config', 'submit', graph, '--target', `${system}=${target}`, '--activate', 'true', '-m', message, '--url', url, '--json')) as { configId: string }).configId;
}
const activeOn = (agent: BenchAgent, configId: string) => async () => {
  const record = await admin.call('agents.show', { agentId: agent.id });
  return record.phase === 'active' && record.currentConfig === configId;
};
/** Seconds between the agent's own events of a deployment: fetch, materialize, switch + activate. */
function phasesOf(agent: BenchAgent, configId: string): string {
  const events = readFileSync(path.join(agent.stateDir, 'events.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { at: number; kind: string; configId?: string });
  const at = (kind: string) => events.filter((event) => event.kind === kind && event.configId === configId).at(-1)!.at;
  const seconds = (from: string, to: string) => ((at(to) - at(from)) / 1000).toFixed(2);
  return `fetch ${seconds('deploy', 'fetched')} s, materialize ${seconds('fetched', 'materialized')} s, switch+activate ${seconds('materialized', 'active')} s`;
}

function fetchedBytes(agent: BenchAgent, configId: string): number {
  const lines = readFileSync(path.join(agent.stateDir, 'events.jsonl'), 'utf8').trim().split('\n');
  const fetched = lines.map((line) => JSON.parse(line) as { kind: string; configId?: string; message: string }).filter((event) => event.kind === 'fetched' && event.configId === configId);
  return Number(/(\d+) bytes/.exec(fetched.at(-1)!.message)![1]);
}

/** Bytes a directory takes on disk (`du`, blocks allocated). */
function diskBytes(dir: string): number {
  return Number(execFileSync('du', ['-s', '--block-size=1', dir], { encoding: 'utf8' }).split('\t')[0]);
}
/** The agent's store dir and castore on disk, once it has released the castore's copy of `configId`'s files. */
async function agentDisk(agent: BenchAgent, configId: string): Promise<string> {
  await waitUntil(`${agent.name} to release the castore's copy`, async () =>
    readFileSync(path.join(agent.stateDir, 'events.jsonl'), 'utf8').split('\n').some((line) => line.includes('"adopted"') && line.includes(configId)),
  );
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  return `store ${mib(diskBytes(path.join(agent.stateDir, 'store')))}, castore ${mib(diskBytes(path.join(agent.stateDir, 'castore')))}`;
}

// 1. Cold deploy, one agent.
const solo = startAgent('solo');
await new Promise((resolve) => setTimeout(resolve, 1000));
const coldConfig = await submit('solo', v0, 'cold');
const coldCpuBefore = { agent: procCpuSeconds(solo.process.pid!), coordinator: procCpuSeconds(coordinator.pid!) };
const coldStart = performance.now();
await admin.call('agents.assign', { agentId: solo.id, graph: 'solo' });
await waitUntil('the cold deploy', activeOn(solo, coldConfig));
const coldSeconds = (performance.now() - coldStart) / 1000;
// CPU (user + system, every thread) the deploy cost: on 2 cores, wall time >= total / 2.
const coldCpu = `agent ${(procCpuSeconds(solo.process.pid!) - coldCpuBefore.agent).toFixed(2)} s, coordinator ${(procCpuSeconds(coordinator.pid!) - coldCpuBefore.coordinator).toFixed(2)} s`;
const coldPhases = phasesOf(solo, coldConfig);
const coldDisk = await agentDisk(solo, coldConfig);
// What the agent keeps while it runs a config and waits for the next: most of a fleet's time.
await new Promise((resolve) => setTimeout(resolve, 15_000));
const idleRss = rssMiB(solo.process.pid!);

// The reference: nix copy from a compression=none binary cache on a static server into a fresh store.
const cacheDir = path.join(work, 'binary-cache');
execFileSync('nix', ['copy', '--to', `file://${cacheDir}?compression=none`, v0], { env: nixEnv });
const server = createServer((request, response) => {
  const file = path.join(cacheDir, decodeURIComponent(new URL(request.url!, 'http://x').pathname));
  if (!file.startsWith(cacheDir) || !existsSync(file) || !statSync(file).isFile()) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { 'content-length': statSync(file).size });
  createReadStream(file).pipe(response);
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const cachePort = (server.address() as { port: number }).port;
const nixRoot = path.join(work, 'nix-root');
const nixStart = performance.now();
const serverCpuBefore = process.cpuUsage();
// Through bash, whose `times` reports the CPU nix used (its children's user and system time) on fd 3.
const nixTimes = await new Promise<string>((resolve, reject) => {
  const nixCopy = `nix copy --from http://127.0.0.1:${cachePort} --to 'local?root=${nixRoot}' --option require-sigs false ${v0}`;
  const child = spawn('bash', ['-c', `${nixCopy} && times >&3`], { env: nixEnv, stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
  let times = '';
  child.stdio[3]!.on('data', (chunk: Buffer) => (times += chunk.toString()));
  child.on('exit', (code) => (code === 0 ? resolve(times) : reject(new Error(`nix copy exited with ${code}`))));
});
const nixSeconds = (performance.now() - nixStart) / 1000;
const serverCpu = process.cpuUsage(serverCpuBefore);
const [nixUser, nixSystem] = [...(nixTimes.trim().split('\n')[1] ?? '').matchAll(/(\d+)m([\d.]+)s/g)].map((match) => Number(match[1]) * 60 + Number(match[2]));
const nixCpu = `nix ${((nixUser ?? NaN) + (nixSystem ?? NaN)).toFixed(2)} s, static server ${((serverCpu.user + serverCpu.system) / 1e6).toFixed(2)} s`;
server.close();
execFileSync('chmod', ['-R', 'u+w', nixRoot]);
rmSync(nixRoot, { recursive: true, force: true });

// 2. Upgrade to the variant with ~10% of files changed.
const upgradeConfig = await submit('solo', v1, 'upgrade');
const upgradeStart = performance.now();
await waitUntil('the upgrade', activeOn(solo, upgradeConfig));
const upgradeSeconds = (performance.now() - upgradeStart) / 1000;
const upgradeBytes = fetchedBytes(solo, upgradeConfig);
const upgradePhases = phasesOf(solo, upgradeConfig);
const upgradeDisk = await agentDisk(solo, upgradeConfig);
const soloRss = peakRssMiB(solo.process.pid!);
solo.process.kill('SIGKILL');

// 3. A fleet deploying the same closure at once.
if (fleetSize === 0) {
  console.log({ nixSeconds, nixCpu, coldSeconds, coldCpu, coldPhases, coldDisk, upgradeSeconds, upgradePhases, upgradeBytes, upgradeDisk, soloRss, idleRss });
  process.exit(0);
}
const fleet = Array.from({ length: fleetSize }, (_, index) => startAgent(`fleet-${index}`));
await new Promise((resolve) => setTimeout(resolve, 2000));
const fleetConfig = await submit('fleet', v0, 'fleet');
const cpuBefore = procCpuSeconds(coordinator.pid!);
const fleetStart = performance.now();
for (const agent of fleet) await admin.call('agents.assign', { agentId: agent.id, graph: 'fleet' });
await Promise.all(fleet.map((agent) => waitUntil(`${agent.name}`, activeOn(agent, fleetConfig))));
const fleetSeconds = (performance.now() - fleetStart) / 1000;
const coordinatorCpu = procCpuSeconds(coordinator.pid!) - cpuBefore;
const fleetRss = Math.max(...fleet.map((agent) => peakRssMiB(agent.process.pid!)));
const coordinatorRss = peakRssMiB(coordinator.pid!);

console.log(`agent deployment: closure ${(closureBytes / 2 ** 20).toFixed(0)} MiB as NARs, ${fleetSize} agents`);
report('agent', [
  { what: 'nix copy --from http:// static cache, compression=none (reference)', value: `${nixSeconds.toFixed(2)} s`, rate: mbPerSecond(closureBytes, nixSeconds), target: '' },
  { what: 'cold deploy: submit -> agent active (QUIC, verified)', value: `${coldSeconds.toFixed(2)} s`, rate: mbPerSecond(closureBytes, coldSeconds), target: `>= 2x faster: ${(nixSeconds / coldSeconds).toFixed(2)}x` },
  { what: 'cold deploy, where the time went (agent events)', value: coldPhases, rate: '', target: '' },
  { what: 'CPU used: cold deploy / nix copy (2 cores)', value: `${coldCpu} / ${nixCpu}`, rate: '', target: '' },
  { what: 'upgrade (~10% files changed): bytes fetched / closure NAR', value: `${upgradeBytes} / ${closureBytes}`, rate: `${((100 * upgradeBytes) / closureBytes).toFixed(1)} %`, target: '<= 15 %' },
  { what: 'upgrade: submit -> active', value: `${upgradeSeconds.toFixed(2)} s (${upgradePhases})`, rate: '', target: '' },
  { what: 'agent disk after the cold deploy / after the upgrade (each byte once)', value: `${coldDisk} / ${upgradeDisk}`, rate: '', target: '' },
  { what: `${fleetSize} agents at once: submit -> all active`, value: `${fleetSeconds.toFixed(2)} s`, rate: mbPerSecond(closureBytes * fleetSize, fleetSeconds), target: 'all succeed' },
  { what: `coordinator CPU during the ${fleetSize}-agent deploy`, value: `${coordinatorCpu.toFixed(1)} s`, rate: `${((100 * coordinatorCpu) / fleetSeconds).toFixed(0)} % of one core`, target: '' },
  { what: 'agent peak RSS (solo / worst of the fleet)', value: `${soloRss.toFixed(0)} / ${fleetRss.toFixed(0)} MiB`, rate: '', target: '< 150 MB' },
  { what: 'agent RSS idle, 15 s after the cold deploy', value: `${idleRss.toFixed(0)} MiB`, rate: '', target: '' },
  { what: 'coordinator peak RSS', value: `${coordinatorRss.toFixed(0)} MiB`, rate: '', target: '' },
]);

for (const child of children) child.kill('SIGKILL');
execFileSync('chmod', ['-R', 'u+w', work]);
rmSync(work, { recursive: true, force: true });
process.exit(0);
