/**
 * Ferry against `nix copy` on shaped links (issue 17 §2, DESIGN.md §9–10).
 *
 * The coordinator runs in one network namespace and the agent in another,
 * joined by one veth pair (bench/netns.ts). Per link — unshaped veth, then
 * `tc tbf` at 100 Mbit/s and 20 Mbit/s on both ends — and in one run:
 *  - Ferry: a fresh agent daemon (`ferry agent run`, enrolled over the link)
 *    already running a tiny baseline config; timed from the start of
 *    `ferry config submit` (run in the coordinator's namespace) to the
 *    coordinator reporting the agent `active` on the new config; over QUIC,
 *    and over the pinned-HTTPS fallback (`--http`);
 *  - reference: real `nix copy --from http://<coordinator ns>:8080` of the same
 *    closure from a static `compression=zstd` binary cache (written with
 *    `nix copy --to file://…?compression=zstd`, served by a node:http static
 *    server in the coordinator's namespace) into a fresh chroot store
 *    (`--to local?root=…`) in the agent's namespace;
 *  - the same through Ferry's own `/nix-cache` (`--nix-cache-compression
 *    zstd`, compressed on the fly), with the netrc line of `ferry cache netrc`.
 * Per cell: wall time, bytes on the wire (the agent's veth counters, both
 * directions), CPU (coordinator, agent; nix and the static server).
 *
 * Everything Ferry runs is a real process from build/ (`npm run
 * bench:shaped-link` builds first). The admin CLI runs inside the
 * coordinator's namespace, so its traffic (push, submit, polls) never
 * crosses the veth. Stderr of every Ferry process is kept and scanned for
 * Node's MaxListenersExceededWarning (issue 17), with --trace-warnings stacks.
 *
 * Needs root, iproute2 (`ip netns`, `tc` with tbf) and Nix; skips with the
 * reason otherwise. Env:
 *  - BENCH_CORPUS=synthetic (default: bench/fixtures/big-closure.ts, v0, and v1
 *    with 10% of files changed) | real (buildRealCorpus('base') from
 *    bench/fixtures/real-corpus.ts, then each variant it lists in
 *    REAL_CORPUS_VARIANTS: app-change, ten-percent, mass-rebuild);
 *  - BENCH_LINKS=unshaped,100,20 (Mbit/s; `unshaped` is the bare veth);
 *  - BENCH_TRANSPORTS=quic,https; BENCH_VARIANTS=0 skips the change rows, BENCH_VARIANTS=mass-rebuild (a list)
 *    keeps only those of the real corpus;
 *  - BENCH_FERRY_ROOT=DIR runs DIR/bin/ferry (DIR/build) instead of this tree's: a
 *    fixed build that other work in this tree cannot rebuild under a running bench;
 *  - BENCH_KEEP=1 keeps the work dir (stores, logs) for a look;
 *  - BENCH_AGENT_NODE_FLAGS='--cpu-prof --cpu-prof-dir=DIR' adds node flags to the agent daemon;
 *  - BENCH_NIX=0 skips the `nix copy` cells (and writing the static cache): an A/B of two Ferry
 *    trees, whose `nix copy` figures do not change, in less than half the time;
 *  - BENCH_NO_WAIT=1 starts deploying right after the pushes, while the coordinator is still
 *    compressing their streams (by default the bench waits for that, as a later rollout would).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { nixEnv, nixUnavailableReason } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { agentUnit, procCpuSeconds, report } from './harness.js';
import { baselineStorePath, NamespaceProcesses, type Probe } from './fixtures/namespace-processes.js';
import { createNamespacePair, netnsUnavailableReason, removeLeftovers, type LinkShape, type WireBytes } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, '..');
/** The Ferry under test: this tree's build/, or another tree's (BENCH_FERRY_ROOT, e.g. a `git archive` of a commit, built). */
const ferryRoot = path.resolve(process.env.BENCH_FERRY_ROOT ?? repo);
const ferryBin = path.join(ferryRoot, 'bin', 'ferry');

const skip = netnsUnavailableReason() ?? nixUnavailableReason() ?? (existsSync(path.join(ferryRoot, 'build', 'cli', 'main.js')) ? undefined : `${ferryRoot}/build is missing: run \`npm run build\` (npm run bench:shaped-link does)`);
if (skip) {
  console.log(`shaped-link bench skipped: ${skip}`);
  process.exit(0);
}

const links: LinkShape[] = (process.env.BENCH_LINKS ?? 'unshaped,100,20').split(',').map((name) => ({ name: name === 'unshaped' ? 'unshaped veth' : `${name} Mbit/s`, mbit: name === 'unshaped' ? null : Number(name) }));
const transports = (process.env.BENCH_TRANSPORTS ?? 'quic,https').split(',') as ('quic' | 'https')[];
const corpusKind = process.env.BENCH_CORPUS ?? 'synthetic';
const withVariants = process.env.BENCH_VARIANTS !== '0';
const withNix = process.env.BENCH_NIX !== '0';
/** BENCH_VARIANTS=mass-rebuild (a comma-separated list) deploys only those of the real corpus's variants, each after the one before. */
const onlyVariants = withVariants && process.env.BENCH_VARIANTS && process.env.BENCH_VARIANTS !== '1' ? new Set(process.env.BENCH_VARIANTS.split(',')) : undefined;
const system = `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux`;
const MB = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const leftovers = removeLeftovers();
if (leftovers.length > 0) process.stderr.write(`removed namespaces left by earlier runs: ${leftovers.join(', ')}\n`);

mkdirSync(benchWorkDir, { recursive: true });
const work = path.join(benchWorkDir, `shaped-link-${process.pid}`);
rmSync(work, { recursive: true, force: true });
const logs = path.join(work, 'logs');
mkdirSync(logs, { recursive: true });
const env: NodeJS.ProcessEnv = {
  ...nixEnv,
  FERRY_CONFIG_DIR: path.join(work, 'config'),
  FERRY_DATA_DIR: path.join(work, 'coordinator'),
  XDG_CACHE_HOME: path.join(work, 'xdg-cache'),
};
const { nodeFlags: unitFlags, environment: agentEnvironment } = agentUnit(repo);
/** BENCH_AGENT_NODE_FLAGS: more node flags for the agent daemon, e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile it. */
const agentFlags = [...unitFlags, ...(process.env.BENCH_AGENT_NODE_FLAGS?.split(' ').filter(Boolean) ?? [])];

// ---- the closure --------------------------------------------------------------------------------

interface Closure {
  name: string;
  root: string;
  narBytes: number;
}
const closureNarBytes = (root: string) => Number(/"closureSize":(\d+)/.exec(execFileSync('nix', ['path-info', '-S', '--json', root], { env: nixEnv, encoding: 'utf8' }))![1]);
async function loadClosures(): Promise<{ cold: Closure; changes: Closure[] }> {
  if (corpusKind === 'real') {
    const module = path.join(here, 'fixtures', 'real-corpus.ts');
    if (!existsSync(module)) throw new Error('BENCH_CORPUS=real: bench/fixtures/real-corpus.ts does not exist yet');
    const corpus = (await import(pathToFileURL(module).href)) as {
      buildRealCorpus(variant: string): Promise<{ root: string; narBytes: number }>;
      REAL_CORPUS_VARIANTS?: readonly string[];
    };
    const base = await corpus.buildRealCorpus('base');
    // The variants the corpus module offers (app-change, ten-percent, mass-rebuild), each deployed after the one before.
    const variants = withVariants ? (corpus.REAL_CORPUS_VARIANTS ?? []).filter((variant) => variant !== 'base' && (!onlyVariants || onlyVariants.has(variant))) : [];
    const changes: Closure[] = [];
    for (const variant of variants) {
      const built = await corpus.buildRealCorpus(variant);
      changes.push({ name: variant, root: built.root, narBytes: built.narBytes });
    }
    return { cold: { name: 'real corpus (base)', root: base.root, narBytes: base.narBytes }, changes };
  }
  const v0 = bigClosureStorePath(0, nixEnv);
  const v1 = bigClosureStorePath(1, nixEnv);
  return {
    cold: { name: 'synthetic v0', root: v0, narBytes: closureNarBytes(v0) },
    changes: withVariants ? [{ name: '10% of files (synthetic v1)', root: v1, narBytes: closureNarBytes(v1) }] : [],
  };
}
const closures = await loadClosures();
const baseline = baselineStorePath();

// ---- processes and their stderr ---------------------------------------------------------------

/** CPU seconds of a process and of its children it has waited for (the static server forks none, busybox would). */
function cpuWithChildren(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / 100;
}

// ---- one run ------------------------------------------------------------------------------------

interface Cell {
  link: string;
  change: string;
  source: string;
  seconds: number;
  wire: WireBytes;
  cpu: string;
  note?: string;
}
const cells: Cell[] = [];

/** Seconds between the agent's own events of one deployment (events.jsonl): fetch, materialize, switch + activate. */
function phasesOf(stateDir: string, configId: string, submittedAt: number): string {
  const events = readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { at: number; kind: string; configId?: string });
  const at = (kind: string) => events.filter((event) => event.kind === kind && event.configId === configId).at(-1)?.at ?? NaN;
  const seconds = (from: string, to: string) => ((at(to) - at(from)) / 1000).toFixed(2);
  return `${((at('deploy') - submittedAt) / 1000).toFixed(2)} s after submit; fetch ${seconds('deploy', 'fetched')} s, materialize ${seconds('fetched', 'materialized')} s, switch+activate ${seconds('materialized', 'active')} s`;
}
/** What the agent retried during a cell ("blobs.get failed over quic (…); retrying"), summarised. */
function retriesIn(lines: string[]): string {
  const retried = lines.filter((line) => / failed over \w+ \(.*\); retrying/.test(line));
  if (retried.length === 0) return 'no retries';
  const causes = [...new Set(retried.map((line) => / failed over \w+ \((.*)\); retrying/.exec(line)![1]))];
  return `${retried.length} retried requests (${causes.join('; ')})`;
}
const wireDelta = (before: WireBytes, after: WireBytes): WireBytes => ({
  down: after.down - before.down,
  up: after.up - before.up,
  downPackets: after.downPackets - before.downPackets,
  upPackets: after.upPackets - before.upPackets,
});

const pair = createNamespacePair();
const processes = new NamespaceProcesses(pair, { logs, env, cwd: repo, ferryBin });
const coordinatorAt = pair.coordinatorAddress;
const staticPort = 8080;
let coordinator: ChildProcess | undefined;
let probe: Probe | undefined;
try {
  // The coordinator, listening on its veth address only (HTTP and QUIC on the same port).
  execFileSync(process.execPath, [ferryBin, 'coordinator', 'init', '--name', 'bench'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  {
    const [command, argv] = processes.ferryArgv(pair.coordinatorNs, ['coordinator', 'serve', '--listen', `${coordinatorAt}:0`, '--nix-cache-compression', 'zstd']);
    coordinator = processes.start(command, argv, 'coordinator');
    coordinator.stdout!.pipe(createWriteStream(processes.logFile('coordinator-stdout')));
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
  probe = await processes.startProbe(url, path.join(work, 'config', 'keys', 'bench-admin.key'));

  // Push everything once, inside the coordinator's namespace (its own loopback, not the veth).
  process.stderr.write(`pushing ${closures.cold.name}${closures.changes.map((change) => `, ${change.name}`).join('')}…\n`);
  for (const root of [baseline, closures.cold.root, ...closures.changes.map((change) => change.root)]) {
    await processes.ferry(pair.coordinatorNs, 'push', ['push', root, '--quiet', ...connection]);
  }

  // The reference cache: what `nix copy --to file://…?compression=zstd` writes, served statically.
  const staticCache = path.join(work, 'static-cache');
  for (const root of withNix ? [closures.cold.root, ...closures.changes.map((change) => change.root)] : []) {
    execFileSync('nix', ['copy', '--to', `file://${staticCache}?compression=zstd`, root], { env: nixEnv, stdio: ['ignore', 'ignore', 'pipe'] });
  }
  // The coordinator compresses each pushed closure's stream after its push, at level 9 and then again at
  // level 19, one closure at a time (~3 min each here: coordinator/api/blob-stream-cache.ts). Deploy once it
  // is done, as a rollout some minutes after the push finds it; BENCH_NO_WAIT=1 deploys at once.
  if (process.env.BENCH_NO_WAIT !== '1') {
    const cacheDir = path.join(work, 'coordinator', 'wire-cache');
    const started = Date.now();
    const producing = () => existsSync(cacheDir) && readdirSync(cacheDir).some((name) => name.endsWith('.part'));
    // Done when no part file is seen three times a second apart (the next refine's starts as the last one's ends).
    for (let quiet = 0; quiet < 3 && Date.now() - started < 30 * 60_000; ) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      quiet = producing() ? 0 : quiet + 1;
    }
    const waited = `${((Date.now() - started) / 1000).toFixed(1)} s after the static cache was written`;
    process.stderr.write(producing() ? `the pushes' streams were still being compressed ${waited}: measuring anyway\n` : `the pushes' streams were compressed ${waited}\n`);
  }
  const staticBytes = withNix ? readdirSync(path.join(staticCache, 'nar')).reduce((sum, file) => sum + statSync(path.join(staticCache, 'nar', file)).size, 0) : NaN;
  if (withNix) await probe.call({ op: 'serveStatic', dir: staticCache, host: coordinatorAt, port: staticPort });
  const netrc = path.join(work, 'netrc');
  if (withNix) writeFileSync(netrc, await processes.ferry(pair.coordinatorNs, 'cache-netrc', ['cache', 'netrc', ...connection]), { mode: 0o600 });

  /** `nix copy --from` into a chroot store in the agent's namespace; CPU from bash's `times` (nix's user + system). */
  function nixCopy(from: string, root: string, destination: string, extra: string[]): Promise<{ seconds: number; cpu: number }> {
    const nixCommand = ['nix', 'copy', '--no-check-sigs', '--from', `'${from}'`, '--to', `'local?root=${destination}'`, ...extra, root].join(' ');
    const [command, argv] = pair.execArgs(pair.agentNs, 'bash', ['-c', `${nixCommand} && times >&3`]);
    return new Promise((resolve, reject) => {
      const start = performance.now();
      const child = spawn(command, argv, { env, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let times = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.stdio[3]!.on('data', (chunk: Buffer) => (times += chunk.toString()));
      child.on('close', (code) => {
        const seconds = (performance.now() - start) / 1000;
        if (code !== 0) return reject(new Error(`${nixCommand} exited with ${code}: ${stderr}`));
        if (!existsSync(path.join(destination, root.slice(1)))) return reject(new Error(`${nixCommand}: ${root} is not in the destination`));
        const [user, sys] = [...(times.trim().split('\n')[1] ?? '').matchAll(/(\d+)m([\d.]+)s/g)].map((match) => Number(match[1]) * 60 + Number(match[2]));
        resolve({ seconds, cpu: (user ?? NaN) + (sys ?? NaN) });
      });
    });
  }

  for (const link of links) {
    pair.shape(link);
    process.stderr.write(`link ${link.name}: ${pair.describe()}\n`);
    const linkDir = path.join(work, link.name.replace(/[^a-z0-9]+/gi, '-'));

    // Ferry: one fresh agent per transport; the cold deploy, then each change on the same agent.
    for (const transport of transports) {
      const name = `${link.mbit ?? 'unshaped'}-${transport}`;
      const stateDir = path.join(linkDir, `agent-${transport}`);
      const join = (JSON.parse(await processes.ferry(pair.coordinatorNs, 'tokens', ['tokens', 'create', '--uses', '1', '--auto-approve', '--json', ...connection])) as { join: string }).join;
      const { agentId } = JSON.parse(
        await processes.ferry(pair.agentNs, `enroll-${name}`, ['agent', 'enroll', join, '--state-dir', stateDir, '--store-dir', path.join(stateDir, 'store'), '--name', name, '--json']),
      ) as { agentId: string };
      const [command, argv] = processes.ferryArgv(pair.agentNs, ['agent', 'run', '--state-dir', stateDir, '--poll', '30', ...(transport === 'https' ? ['--http'] : [])], agentFlags);
      const agent = processes.start(command, argv, `agent-${name}`, agentEnvironment);
      const submit = async (target: string, message: string) =>
        (JSON.parse(await processes.ferry(pair.coordinatorNs, `submit-${name}`, ['config', 'submit', name, '--target', `${system}=${target}`, '--activate', 'true', '-m', message, '--json', ...connection])) as { configId: string }).configId;
      const baselineConfig = await submit(baseline, 'baseline');
      await probe.call({ op: 'post', path: `/v1/agents/${agentId}/assign`, body: { graph: name } });
      await probe.call({ op: 'waitActive', agentId, configId: baselineConfig, timeoutMs: 120_000 });
      for (const closure of [closures.cold, ...closures.changes]) {
        await sleep(1000);
        execFileSync('sync');
        const wireBefore = pair.wireBytes();
        const cpuBefore = { agent: procCpuSeconds(agent.pid!), coordinator: procCpuSeconds(coordinator.pid!) };
        const agentLines = processes.stderrLines.get(agent)!;
        const linesBefore = agentLines.length;
        const start = performance.now();
        const startWall = Date.now();
        const configId = await submit(closure.root, closure.name);
        const submitted = (performance.now() - start) / 1000;
        await probe.call({ op: 'waitActive', agentId, configId, timeoutMs: 1_800_000 });
        const seconds = (performance.now() - start) / 1000;
        const wire = wireDelta(wireBefore, pair.wireBytes());
        const cpu = `agent ${(procCpuSeconds(agent.pid!) - cpuBefore.agent).toFixed(2)} s, coordinator ${(procCpuSeconds(coordinator.pid!) - cpuBefore.coordinator).toFixed(2)} s`;
        cells.push({ link: link.name, change: closure === closures.cold ? 'cold' : closure.name, source: `Ferry ${transport === 'quic' ? 'QUIC' : 'HTTPS'}, agent daemon`, seconds, wire, cpu, note: `\`config submit\` CLI ${submitted.toFixed(2)} s, agent started ${phasesOf(stateDir, configId, startWall)}; ${retriesIn(agentLines.slice(linesBefore))}` });
        process.stderr.write(`  ${cells.at(-1)!.source}, ${cells.at(-1)!.change}: ${seconds.toFixed(2)} s, ${MB(wire.down)} down\n`);
      }
      await processes.stop(agent);
    }

    // nix copy: from the static zstd cache, and from Ferry's /nix-cache (zstd, netrc); changes into the same store.
    const sources = !withNix ? [] : [
      { source: 'nix copy, static zstd cache (reference)', from: `http://${coordinatorAt}:${staticPort}`, extra: [], server: probe.child.pid!, serverName: 'static server' },
      { source: "nix copy, Ferry's /nix-cache (zstd, netrc)", from: `${url}/nix-cache`, extra: ['--option', 'netrc-file', netrc], server: coordinator.pid!, serverName: 'coordinator' },
    ];
    for (const [index, { source, from, extra, server, serverName }] of sources.entries()) {
      const destination = path.join(linkDir, `nix-${index}`);
      for (const closure of [closures.cold, ...closures.changes]) {
        await sleep(1000);
        execFileSync('sync');
        const wireBefore = pair.wireBytes();
        const serverBefore = cpuWithChildren(server);
        const { seconds, cpu } = await nixCopy(from, closure.root, destination, extra);
        const wire = wireDelta(wireBefore, pair.wireBytes());
        cells.push({ link: link.name, change: closure === closures.cold ? 'cold' : closure.name, source, seconds, wire, cpu: `nix ${cpu.toFixed(2)} s, ${serverName} ${(cpuWithChildren(server) - serverBefore).toFixed(2)} s` });
        process.stderr.write(`  ${source}, ${cells.at(-1)!.change}: ${seconds.toFixed(2)} s, ${MB(wire.down)} down\n`);
      }
    }
  }

  // ---- the table ------------------------------------------------------------------------------

  const reference = (cell: Cell) => cells.find((other) => other.link === cell.link && other.change === cell.change && other.source.endsWith('(reference)'));
  console.log(`shaped links: Ferry from ${ferryRoot}; ${closures.cold.name}, closure NAR ${MB(closures.cold.narBytes)}, static zstd cache NARs ${MB(staticBytes)} (all variants)`);
  report(
    'shaped-link',
    cells.map((cell) => ({
      link: cell.link,
      change: cell.change,
      source: cell.source,
      seconds: cell.seconds.toFixed(2),
      'vs nix copy': reference(cell) ? `${(reference(cell)!.seconds / cell.seconds).toFixed(2)}x` : 'not run',
      'wire down / up': `${MB(cell.wire.down)} / ${MB(cell.wire.up)}`,
      'wire vs nix': reference(cell) ? `${(cell.wire.down / reference(cell)!.wire.down).toFixed(2)}` : 'not run',
      'packets down / up': `${cell.wire.downPackets} / ${cell.wire.upPackets}`,
      rate: `${((cell.wire.down * 8) / 1e6 / cell.seconds).toFixed(1)} Mbit/s`,
      cpu: cell.cpu,
      note: cell.note ?? '',
    })),
  );
} finally {
  if (probe) await processes.stop(probe.child);
  if (coordinator) await processes.stop(coordinator);
  processes.killAll();
  pair.remove();
  // MaxListenersExceededWarning in any Ferry process's stderr (issue 17), with the stack --trace-warnings printed.
  const warnings: { log: string; excerpt: string }[] = [];
  for (const file of existsSync(logs) ? readdirSync(logs) : []) {
    const text = readFileSync(path.join(logs, file), 'utf8');
    const at = text.indexOf('MaxListenersExceededWarning');
    if (at >= 0) warnings.push({ log: file, excerpt: text.slice(at, at + 2000) });
  }
  if (warnings.length > 0) {
    process.stderr.write(`MaxListenersExceededWarning in ${warnings.length} process(es):\n`);
    for (const warning of warnings) process.stderr.write(`--- ${warning.log}\n${warning.excerpt}\n`);
  } else {
    process.stderr.write('no MaxListenersExceededWarning in any Ferry process\n');
  }
  mkdirSync(path.join(benchWorkDir, 'results'), { recursive: true });
  writeFileSync(path.join(benchWorkDir, 'results', 'shaped-link-warnings.json'), `${JSON.stringify(warnings, null, 2)}\n`);
  if (process.env.BENCH_KEEP === '1') process.stderr.write(`kept ${work}\n`);
  else {
    execFileSync('chmod', ['-R', 'u+w', work]);
    rmSync(work, { recursive: true, force: true });
  }
}
