/**
 * A site behind one shaped uplink, with and without a site relay (issue 21).
 *
 * Two network namespaces joined by one veth pair (bench/netns.ts), `tc tbf`
 * at BENCH_LINK Mbit/s on both ends: the coordinator (and the probe, the
 * static zstd cache server, the admin CLI) in one; the site in the other:
 * the relay (`ferry relay run`), the agent daemons (`ferry agent run`) and
 * the `nix copy` clients. Agents reach the relay on the site namespace's own
 * address, so only the uplink's traffic crosses the veth. Rows, in one run,
 * each cold (fresh agents, fresh stores, the relay's cache empty):
 *  1. one agent without a relay: the single-agent time and its wire bytes;
 *  2. BENCH_SITE_AGENTS agents through the relay (or one row per size of
 *     BENCH_RELAY_SITES, each with a fresh relay);
 *  3. as many agents without a relay (each fetches from the coordinator);
 *  4. as many concurrent `nix copy` runs from a static zstd binary cache
 *     (`nix copy --to file://…?compression=zstd`, served by the probe);
 *  5. (`upgrade`) after rows 1 and 2, the same agents (and the same relay,
 *     whose cache holds the cold closure) get the next version: the
 *     uplink bytes of the relay's upgrade against the single agent's,
 *     which fetches group deltas and templates against its store (the
 *     relay's upstream copy does the same against its cache).
 * Per row: submit → all active (the max, and the p50 of the agents, from
 * each agent's own `active` event), uplink bytes (the site's veth
 * counters), CPU of the coordinator, the relay and the agents (sum), and
 * the CPU floor: this machine has CORES cores for everything, so N agents
 * materializing at once are CPU bound; the floor is their CPU / CORES.
 *
 * Everything is a real process from build/ (`npm run bench:relay-site`
 * builds first). Needs root, iproute2 and Nix; skips with the reason
 * otherwise. Env:
 *  - BENCH_CORPUS=synthetic (default: bench/fixtures/big-closure.ts v0) | real (buildRealCorpus('base'));
 *  - BENCH_UPGRADE: the upgrade's variant of the real corpus (app-change, the default; ten-percent,
 *    mass-rebuild); the synthetic corpus upgrades to v1 (10% of the files replaced: nothing to delta);
 *  - BENCH_SITE_AGENTS=10; BENCH_LINK=100 (Mbit/s); BENCH_ROWS=single,relay,direct,nix,upgrade (a subset);
 *  - BENCH_RELAY_SITES=10,2: the relay rows' sizes, each with a fresh relay (default: BENCH_SITE_AGENTS);
 *  - BENCH_RELAY_QUIC=0 runs the relay with --no-quic (its agents then fetch over HTTPS; default: QUIC first);
 *  - BENCH_KEEP=1 keeps the work dir (logs of every process, stores);
 *  - BENCH_AGENT_NODE_FLAGS, BENCH_RELAY_NODE_FLAGS: extra node flags (e.g. `--cpu-prof --cpu-prof-dir=DIR`) for the agents / the relay;
 *  - BENCH_NO_WAIT=1 deploys without waiting for the coordinator's level-19 stream (profiling runs; not comparable).
 * Results: bench/.work/results/relay-site.json.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { nixEnv, nixUnavailableReason } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { agentUnit, procCpuSeconds } from './harness.js';
import { baselineStorePath, NamespaceProcesses, type Probe } from './fixtures/namespace-processes.js';
import { createNamespacePair, netnsUnavailableReason, removeLeftovers, type WireBytes } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, '..');
const ferryBin = path.join(repo, 'bin', 'ferry');

const skip = netnsUnavailableReason() ?? nixUnavailableReason() ?? (existsSync(path.join(repo, 'build', 'cli', 'main.js')) ? undefined : 'build/ is missing: run `npm run build` (npm run bench:relay-site does)');
if (skip) {
  console.log(`relay-site bench skipped: ${skip}`);
  process.exit(0);
}

const siteAgents = Number(process.env.BENCH_SITE_AGENTS ?? '10');
/** Agents of each relay row (each with a fresh relay): BENCH_RELAY_SITES=10,2; default BENCH_SITE_AGENTS. */
const relaySites = (process.env.BENCH_RELAY_SITES ?? String(siteAgents)).split(',').map(Number);
const linkMbit = Number(process.env.BENCH_LINK ?? '100');
const corpusKind = process.env.BENCH_CORPUS ?? 'synthetic';
const relayQuic = process.env.BENCH_RELAY_QUIC !== '0';
const rows = new Set((process.env.BENCH_ROWS ?? 'single,relay,direct,nix,upgrade').split(','));
const CORES = cpus().length;
const system = `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux`;
const RELAY_PORT = 9443;
const STATIC_PORT = 8080;
const MB = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const leftovers = removeLeftovers();
if (leftovers.length > 0) process.stderr.write(`removed namespaces left by earlier runs: ${leftovers.join(', ')}\n`);

mkdirSync(benchWorkDir, { recursive: true });
const work = path.join(benchWorkDir, `relay-site-${process.pid}`);
rmSync(work, { recursive: true, force: true });
const logs = path.join(work, 'logs');
mkdirSync(logs, { recursive: true });
const env: NodeJS.ProcessEnv = { ...nixEnv, FERRY_CONFIG_DIR: path.join(work, 'config'), FERRY_DATA_DIR: path.join(work, 'coordinator'), XDG_CACHE_HOME: path.join(work, 'xdg-cache') };
const { nodeFlags: unitFlags, environment: agentEnvironment } = agentUnit(repo);
const extraFlags = (name: string) => process.env[name]?.split(' ').filter(Boolean) ?? [];
const agentFlags = [...unitFlags, ...extraFlags('BENCH_AGENT_NODE_FLAGS')];

// ---- the closure --------------------------------------------------------------------------------

/** The closure of `variant` (of the real corpus: base, app-change, ten-percent, mass-rebuild; of the synthetic one: 0, 1). */
async function corpusClosure(variant: string): Promise<{ name: string; root: string }> {
  if (corpusKind === 'real') {
    const corpus = (await import(pathToFileURL(path.join(here, 'fixtures', 'real-corpus.ts')).href)) as { buildRealCorpus(variant: string): Promise<{ root: string }> };
    return { name: `real corpus (${variant})`, root: (await corpus.buildRealCorpus(variant)).root };
  }
  return { name: `synthetic v${variant}`, root: bigClosureStorePath(Number(variant), nixEnv) };
}
const closure = await corpusClosure(corpusKind === 'real' ? 'base' : '0');
const upgrade = rows.has('upgrade') ? await corpusClosure(corpusKind === 'real' ? (process.env.BENCH_UPGRADE ?? 'app-change') : '1') : undefined;
const closureNarBytes = Number(/"closureSize":(\d+)/.exec(execFileSync('nix', ['path-info', '-S', '--json', closure.root], { env: nixEnv, encoding: 'utf8' }))![1]);
const baseline = baselineStorePath();

// ---- processes ------------------------------------------------------------------------------------

const cpuOf = (child: ChildProcess | undefined) => (child?.pid && child.exitCode === null ? procCpuSeconds(child.pid) : 0);

/** When the agent of `stateDir` recorded `kind` for `configId` (its events.jsonl; same machine, same clock). */
function eventAt(stateDir: string, kind: string, configId: string): number {
  const events = readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { at: number; kind: string; configId?: string });
  return events.filter((event) => event.kind === kind && event.configId === configId).at(-1)?.at ?? NaN;
}
const kindsOf = (stateDir: string, configId: string) =>
  readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { kind: string; configId?: string }).filter((event) => event.configId === configId).map((event) => event.kind);
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length % 2 ? sorted[sorted.length >> 1]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
};

interface Row {
  row: string;
  agents: number;
  maxSeconds: number;
  p50Seconds: number;
  uplinkDown: number;
  uplinkUp: number;
  cpu: { coordinator: number; relay: number; clients: number; server?: number };
  note: string;
  /** An upgrade row: compared with the single agent's upgrade. */
  upgrade?: boolean;
}
const results: Row[] = [];

const pair = createNamespacePair();
const processes = new NamespaceProcesses(pair, { logs, env, cwd: repo, ferryBin });
const coordinatorAt = pair.coordinatorAddress;
const siteAt = pair.agentAddress;
let coordinator: ChildProcess | undefined;
let probe: Probe | undefined;
let relay: ChildProcess | undefined;
const startLoad = loadavg()[0]!;
try {
  execFileSync(process.execPath, [ferryBin, 'coordinator', 'init', '--name', 'bench'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  {
    const [command, argv] = processes.ferryArgv(pair.coordinatorNs, ['coordinator', 'serve', '--listen', `${coordinatorAt}:0`, '--nix-cache-compression', 'zstd']);
    coordinator = processes.start(command, argv, 'coordinator');
  }
  const { url, fingerprint } = await new Promise<{ url: string; fingerprint: string }>((resolve, reject) => {
    let out = '';
    coordinator!.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const found = /HTTP API:\s+(http:\/\/\S+)/.exec(out)?.[1];
      const fp = /TLS fingerprint:\s+(\S+)/.exec(out)?.[1];
      if (found && fp && /QUIC data plane:\s+\S+:\d+/.test(out)) resolve({ url: found, fingerprint: fp });
    });
    coordinator!.on('exit', (code) => reject(new Error(`the coordinator exited with ${code}: ${out}`)));
  });
  const connection = ['--url', url, '--fingerprint', fingerprint];
  const admin = (who: string, args: string[]) => processes.ferry(pair.coordinatorNs, who, [...args, ...connection]);
  probe = await processes.startProbe(url, path.join(work, 'config', 'keys', 'bench-admin.key'));

  process.stderr.write(`pushing ${closure.name} (NAR ${MB(closureNarBytes)})…\n`);
  for (const root of [baseline, closure.root, ...(upgrade ? [upgrade.root] : [])]) await admin('push', ['push', root, '--quiet']);
  const staticCache = path.join(work, 'static-cache');
  if (rows.has('nix')) execFileSync('nix', ['copy', '--to', `file://${staticCache}?compression=zstd`, closure.root], { env: nixEnv, stdio: ['ignore', 'ignore', 'pipe'] });
  // As bench/shaped-link.bench.ts: deploy once the coordinator compressed the pushed closure's stream (level 9, then 19).
  if (process.env.BENCH_NO_WAIT !== '1') {
    const cacheDir = path.join(work, 'coordinator', 'wire-cache');
    const started = Date.now();
    const producing = () => existsSync(cacheDir) && readdirSync(cacheDir).some((name) => name.endsWith('.part'));
    for (let quiet = 0; quiet < 3 && Date.now() - started < 30 * 60_000; ) {
      await sleep(1000);
      quiet = producing() ? 0 : quiet + 1;
    }
    process.stderr.write(`the pushed stream was compressed ${((Date.now() - started) / 1000).toFixed(1)} s after the push\n`);
  }
  if (rows.has('nix')) await probe.call({ op: 'serveStatic', dir: staticCache, host: coordinatorAt, port: STATIC_PORT });
  pair.shape({ name: `${linkMbit} Mbit/s`, mbit: linkMbit });
  process.stderr.write(`uplink: ${pair.describe()}\n`);

  /**
   * A fresh relay (its cache empty): enrolled over the uplink, listening on the site's address at
   * `port`, serving the agents labelled site=`site`; the one the next rows measure (`relay`).
   */
  async function startSiteRelay(site: string, port: number): Promise<string> {
    const relayDir = path.join(work, site);
    const join = (JSON.parse(await admin('relay-token', ['tokens', 'create', '--relay', '--json'])) as { join: string }).join;
    const enrolled = JSON.parse(await processes.ferry(pair.agentNs, `${site}-enroll`, ['relay', 'enroll', join, '--state-dir', relayDir, '--url', `https://${siteAt}:${port}`, '--listen', `${siteAt}:${port}`, '--name', site, '--json'])) as { relayId: string };
    await admin(`${site}-assign`, ['relays', 'assign', enrolled.relayId, '--where', `labels.site=${site}`]);
    const [command, argv] = processes.ferryArgv(pair.agentNs, ['relay', 'run', '--state-dir', relayDir, ...(relayQuic ? [] : ['--no-quic'])], extraFlags('BENCH_RELAY_NODE_FLAGS'));
    const child = processes.start(command, argv, site);
    relay = child;
    await new Promise<void>((resolve, reject) => {
      let text = '';
      child.stderr!.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes('listening on')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`the relay exited with ${code}: ${text}`)));
    });
    return relayDir;
  }

  /** What the relay of `relayDir` says it served from its kept streams (its status file). */
  function streamNote(relayDir: string): string {
    const status = JSON.parse(readFileSync(path.join(relayDir, 'status.json'), 'utf8')) as { bytesServed: number; streams?: { served: number; servedWireBytes: number } };
    return `; the relay served ${MB(status.bytesServed)} of blobs, ${status.streams?.served ?? 0} kept stream(s) as ${MB(status.streams?.servedWireBytes ?? 0)} on the LAN`;
  }

  /** `count` fresh agent daemons in graph `graph`, labelled site=`site`, each running the baseline config. */
  async function startAgents(graph: string, site: string, count: number): Promise<{ agentId: string; stateDir: string; child: ChildProcess }[]> {
    const join = (JSON.parse(await admin('tokens', ['tokens', 'create', '--uses', String(count), '--auto-approve', '--label', `site=${site}`, '--json'])) as { join: string }).join;
    const agents = await Promise.all(
      Array.from({ length: count }, async (_, index) => {
        const name = `${graph}-${index}`;
        const stateDir = path.join(work, 'agents', name);
        const { agentId } = JSON.parse(await processes.ferry(pair.agentNs, `enroll-${name}`, ['agent', 'enroll', join, '--state-dir', stateDir, '--store-dir', path.join(stateDir, 'store'), '--name', name, '--json'])) as { agentId: string };
        const [command, argv] = processes.ferryArgv(pair.agentNs, ['agent', 'run', '--state-dir', stateDir, '--poll', '30'], agentFlags);
        return { agentId, stateDir, child: processes.start(command, argv, `agent-${name}`, agentEnvironment) };
      }),
    );
    const baselineConfig = (JSON.parse(await admin(`submit-${graph}`, ['config', 'submit', graph, '--target', `${system}=${baseline}`, '--activate', 'true', '-m', 'baseline', '--json'])) as { configId: string }).configId;
    for (const agent of agents) await probe!.call({ op: 'post', path: `/v1/agents/${agent.agentId}/assign`, body: { graph } });
    for (const agent of agents) await probe!.call({ op: 'waitActive', agentId: agent.agentId, configId: baselineConfig, timeoutMs: 300_000 });
    return agents;
  }

  /** Starts `count` agents and measures their deployment of the closure, then (with `upgradeRow`) of the upgrade. */
  async function agentRow(row: string, graph: string, site: string, count: number, upgradeRow?: string, extraNote: () => string = () => ''): Promise<void> {
    process.stderr.write(`${row}: starting ${count} agent(s)…\n`);
    const agents = await startAgents(graph, site, count);
    await deployRow(row, graph, site, agents, closure, false, extraNote);
    if (upgradeRow && upgrade) await deployRow(upgradeRow, graph, site, agents, upgrade, true, extraNote);
    await Promise.all(agents.map((agent) => processes.stop(agent.child)));
  }

  /** Submits `target` to `graph` and waits until every agent runs it: one row of the table. */
  async function deployRow(row: string, graph: string, site: string, agents: { agentId: string; stateDir: string; child: ChildProcess }[], target: { name: string; root: string }, isUpgrade = false, extraNote: () => string = () => ''): Promise<void> {
    const count = agents.length;
    await sleep(1000);
    execFileSync('sync');
    const wireBefore = pair.wireBytes();
    const cpuBefore = { coordinator: cpuOf(coordinator), relay: cpuOf(relay), agents: agents.map((agent) => cpuOf(agent.child)) };
    const startWall = Date.now();
    const start = performance.now();
    const configId = (JSON.parse(await admin(`submit-${graph}`, ['config', 'submit', graph, '--target', `${system}=${target.root}`, '--activate', 'true', '-m', target.name, '--json'])) as { configId: string }).configId;
    for (const agent of agents) await probe!.call({ op: 'waitActive', agentId: agent.agentId, configId, timeoutMs: 1_800_000 });
    const maxSeconds = (performance.now() - start) / 1000;
    const wire = wireDelta(wireBefore, pair.wireBytes());
    const cpu = {
      coordinator: cpuOf(coordinator) - cpuBefore.coordinator,
      relay: relay && site.startsWith('relay') ? cpuOf(relay) - cpuBefore.relay : 0,
      clients: agents.reduce((sum, agent, index) => sum + cpuOf(agent.child) - cpuBefore.agents[index]!, 0),
    };
    const actives = agents.map((agent) => (eventAt(agent.stateDir, 'active', configId) - startWall) / 1000);
    const fetches = agents.map((agent) => (eventAt(agent.stateDir, 'fetched', configId) - eventAt(agent.stateDir, 'deploy', configId)) / 1000);
    // The relay's status file is rewritten at most every 0.5 s: read after it caught up.
    if (site.startsWith('relay')) await sleep(1000);
    const throughRelay = agents.filter((agent) => kindsOf(agent.stateDir, configId).includes('relay')).length;
    const relayFailed = agents.filter((agent) => kindsOf(agent.stateDir, configId).includes('relay-failed')).length;
    results.push({
      row,
      agents: count,
      maxSeconds,
      p50Seconds: median(actives),
      uplinkDown: wire.down,
      uplinkUp: wire.up,
      cpu,
      note: `fetch p50 ${median(fetches).toFixed(2)} s, max ${Math.max(...fetches).toFixed(2)} s${site.startsWith('relay') ? `; ${throughRelay}/${count} through the relay, ${relayFailed} relay-failed${extraNote()}` : ''}`,
      ...(isUpgrade ? { upgrade: true } : {}),
    });
    process.stderr.write(`  ${row}: ${maxSeconds.toFixed(2)} s, ${MB(wire.down)} up the link\n`);
  }
  const wireDelta = (before: WireBytes, after: WireBytes) => ({ down: after.down - before.down, up: after.up - before.up });

  if (rows.has('single')) await agentRow('1 agent, no relay', 'single', 'direct', 1, upgrade && `1 agent, no relay: upgrade to ${upgrade.name}`);
  if (rows.has('relay')) {
    const transport = relayQuic ? 'QUIC first' : 'HTTPS: --no-quic';
    // One fresh relay per size: each row starts with its cache empty (the upgrade follows the first).
    for (const [index, count] of relaySites.entries()) {
      const site = `relay-${index}`;
      const relayDir = await startSiteRelay(site, RELAY_PORT + index);
      await agentRow(`${count} agents through the relay (cold cache, ${transport})`, site, site, count, index === 0 ? upgrade && `${count} agents through the relay: upgrade to ${upgrade.name} (${transport})` : undefined, () => streamNote(relayDir));
      await processes.stop(relay!);
      relay = undefined;
    }
  }
  if (rows.has('direct')) await agentRow(`${siteAgents} agents, no relay`, 'direct-site', 'direct', siteAgents);
  if (rows.has('nix')) {
    process.stderr.write(`${siteAgents} concurrent nix copy…\n`);
    await sleep(1000);
    execFileSync('sync');
    const wireBefore = pair.wireBytes();
    const serverBefore = cpuOf(probe.child);
    const coordinatorBefore = cpuOf(coordinator);
    const runs = await Promise.all(Array.from({ length: siteAgents }, (_, index) => nixCopy(`http://${coordinatorAt}:${STATIC_PORT}`, closure.root, path.join(work, 'nix', `store-${index}`))));
    const wire = wireDelta(wireBefore, pair.wireBytes());
    results.push({
      row: `${siteAgents} concurrent \`nix copy\`, static zstd cache`,
      agents: siteAgents,
      maxSeconds: Math.max(...runs.map((run) => run.seconds)),
      p50Seconds: median(runs.map((run) => run.seconds)),
      uplinkDown: wire.down,
      uplinkUp: wire.up,
      cpu: { coordinator: cpuOf(coordinator) - coordinatorBefore, relay: 0, clients: runs.reduce((sum, run) => sum + run.cpu, 0), server: cpuOf(probe.child) - serverBefore },
      note: 'clients = nix (user + system); the static server is the probe process',
    });
    process.stderr.write(`  nix copy: ${results.at(-1)!.maxSeconds.toFixed(2)} s, ${MB(wire.down)} up the link\n`);
  }

  /** `nix copy --from` into a fresh chroot store in the site's namespace; CPU from bash's `times`. */
  function nixCopy(from: string, root: string, destination: string): Promise<{ seconds: number; cpu: number }> {
    const nixCommand = ['nix', 'copy', '--no-check-sigs', '--from', `'${from}'`, '--to', `'local?root=${destination}'`, root].join(' ');
    const [command, argv] = pair.execArgs(pair.agentNs, 'bash', ['-c', `${nixCommand} && times >&3`]);
    return new Promise((resolve, reject) => {
      const start = performance.now();
      // Each its own narinfo cache: concurrent runs sharing one SQLite file fail on its constraints.
      const child = spawn(command, argv, { env: { ...env, XDG_CACHE_HOME: `${destination}-xdg-cache` }, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let times = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.stdio[3]!.on('data', (chunk: Buffer) => (times += chunk.toString()));
      child.on('close', (code) => {
        const seconds = (performance.now() - start) / 1000;
        if (code !== 0) return reject(new Error(`${nixCommand} exited with ${code}: ${stderr}`));
        const [user, sys] = [...(times.trim().split('\n')[1] ?? '').matchAll(/(\d+)m([\d.]+)s/g)].map((match) => Number(match[1]) * 60 + Number(match[2]));
        resolve({ seconds, cpu: (user ?? NaN) + (sys ?? NaN) });
      });
    });
  }

  // ---- the table ------------------------------------------------------------------------------

  // An upgrade row is compared with the single agent's upgrade, a cold one with its cold deploy.
  const singleOf = (row: Row) => results.find((candidate) => candidate.agents === 1 && Boolean(candidate.upgrade) === Boolean(row.upgrade));
  const lines = [
    `relay-site: ${closure.name}${upgrade ? `, then ${upgrade.name}` : ''}, closure NAR ${MB(closureNarBytes)}; uplink ${linkMbit} Mbit/s (tbf both ends); ${CORES} cores for everything; load average ${startLoad.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end`,
    '',
    '| row | submit → all active (max) | p50 of agents | vs 1 agent | uplink down / up | vs 1 agent\'s bytes | CPU: coordinator / relay / clients (sum) | CPU floor (clients / cores) | max ÷ floor | note |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...results.map((row) => {
      const single = singleOf(row);
      const floor = row.cpu.clients / CORES;
      return `| ${row.row} | ${row.maxSeconds.toFixed(2)} s | ${row.p50Seconds.toFixed(2)} s | ${single ? `${(row.maxSeconds / single.maxSeconds).toFixed(2)}x` : '—'} | ${MB(row.uplinkDown)} / ${MB(row.uplinkUp)} | ${single ? `${(row.uplinkDown / single.uplinkDown).toFixed(2)}x` : '—'} | ${row.cpu.coordinator.toFixed(1)} / ${row.cpu.relay.toFixed(1)} / ${row.cpu.clients.toFixed(1)} s${row.cpu.server !== undefined ? ` (static server ${row.cpu.server.toFixed(1)} s)` : ''} | ${floor.toFixed(1)} s | ${(row.maxSeconds / floor).toFixed(2)} | ${row.note} |`;
    }),
  ];
  console.log(lines.join('\n'));
  mkdirSync(path.join(benchWorkDir, 'results'), { recursive: true });
  writeFileSync(path.join(benchWorkDir, 'results', 'relay-site.json'), `${JSON.stringify({ date: new Date().toISOString(), closure: closure.name, upgrade: upgrade?.name, linkMbit, cores: CORES, results }, null, 2)}\n`);
} finally {
  if (relay) await processes.stop(relay);
  if (probe) await processes.stop(probe.child);
  if (coordinator) await processes.stop(coordinator);
  processes.killAll();
  pair.remove();
  if (process.env.BENCH_KEEP === '1') process.stderr.write(`kept ${work}\n`);
  else if (existsSync(work)) {
    execFileSync('chmod', ['-R', 'u+w', work]);
    rmSync(work, { recursive: true, force: true });
  }
}

