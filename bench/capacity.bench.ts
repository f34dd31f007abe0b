/**
 * How many agents one coordinator holds: a real `ferry coordinator serve`
 * process (HTTP and pinned HTTPS on 127.0.0.1, no QUIC) under a fleet of
 * simulated agents in a separate process (bench/fixtures/capacity-agents.ts),
 * every request signed as agents sign them and every desired answer's
 * proof checked. For each transport (a fresh coordinator each) and each
 * fleet size N (agents are added, never removed, as N grows):
 *
 *  1. grow to N (enroll with the bootstrap token, assigned to graph "fleet"
 *     by the admin, first desired config taken and reported active), wait
 *     until every agent holds a watch, settle;
 *  2. idle (BENCH_IDLE_SECONDS): coordinator CPU (/proc/<pid>/stat, in
 *     cores) and RSS, the simulator's CPU and RSS, watches re-issued, errors;
 *  3. load (BENCH_LOAD_SECONDS), open loop: N/30 desired requests and N/30
 *     status reports a second from random agents, latency from each
 *     request's due time to its complete reply (p50/p99/max), errors,
 *     coordinator CPU;
 *  4. fan-out: the admin submits a new config to "fleet" (parent: the head);
 *     from just before the submit until every agent has read an answer
 *     naming it (timed when read, counted once its proof holds: the
 *     simulator's one thread verifies for every agent, where each real
 *     agent verifies on its own CPU; when it had verified them all is
 *     reported too): all-answered time, p50/p99 of per-agent arrival, how many
 *     answered (gives up after BENCH_FANOUT_TIMEOUT_SECONDS), coordinator
 *     CPU seconds; then until every agent's `active` report of it is
 *     answered (gives up BENCH_REPORTS_TIMEOUT_SECONDS after the submit).
 * Memory per agent: the coordinator's (and the simulator's) RSS difference
 * between points over the agents added. Every window also gives the CPU of
 * everything else on the machine (/proc/stat): the 2 cores are shared, and
 * other sessions' work shows there.
 *
 * Between phases the simulator settles (no request of a phase left in
 * flight, no report pending) and the coordinator calms down (under 0.9 of a
 * core over a second), each with a timeout: a saturated point is measured
 * and reported as such, never waited for forever. A coordinator still
 * saturated after the load (working off requests whose clients gave up,
 * each report waking every held watch) is given a pause: the fleet stops
 * watching until it is calm, then watches again ("after-load backlog s"),
 * so the fan-out is measured on a calm coordinator. A quiet growth (below)
 * likewise works off what the previous point left before newcomers enroll.
 *
 * Run: npm run bench:capacity   (builds first; the coordinator runs bin/ferry, i.e. build/)
 * Env: BENCH_TRANSPORTS (default http,https; https is HTTP/2 as agents speak it, https1 HTTP/1.1 over TLS), BENCH_AGENTS (default 1000,2000,5000,10000),
 * BENCH_WATCH_WAIT (seconds, default DEFAULT_WATCH_SECONDS, what agents ask; the issue measured 25), BENCH_IDLE_SECONDS (20),
 * BENCH_LOAD_SECONDS (20), BENCH_HEALTH_SECONDS (0: no health window; issue 22: every agent checks its health every
 * BENCH_HEALTH_INTERVAL (30) seconds and reports transitions only, BENCH_HEALTH_FLAPPING (0.01) of them with a check
 * that fails half the time), BENCH_FANOUT_TIMEOUT_SECONDS (60), BENCH_REPORTS_TIMEOUT_SECONDS (120), BENCH_GROW=quiet|live
 * (default quiet: agents already there stop watching while newcomers enroll; see
 * capacity-protocol.ts GrowMode), BENCH_GROW_TIMEOUT_SECONDS (600), BENCH_SETTLE_SECONDS (5),
 * BENCH_COORDINATOR_NODE_FLAGS (e.g. '--cpu-prof --cpu-prof-dir=DIR' or '--trace-gc': node flags for the coordinator; what it
 * prints goes to its log), BENCH_SIMULATOR_NODE_FLAGS (the same for the simulator; what it prints goes to stderr),
 * BENCH_ENROLL_CONCURRENCY (64), BENCH_START_PER_SECOND (1000: watch loops started per second
 * after a quiet growth), BENCH_REQUEST_TIMEOUT_SECONDS (60), BENCH_FERRY=source (coordinator
 * from the sources through tsx), BENCH_KEEP=1 (keep the work dir and the coordinator's log), BENCH_PIN=1
 * (taskset: the coordinator on CPU 0, the simulator and the orchestrator on CPU 1, so neither takes the other's core).
 * Progress on stderr; a markdown table on stdout; everything in bench/.work/capacity-results.json.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createWriteStream, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Coordinator } from '../coordinator/coordinator.js';
import * as commands from '../coordinator/domain/commands.js';
import { configSigningMessage } from '../protocol/config.js';
import { configId } from '../castore/config-id.js';
import type { StorePath } from '../nix/store-path.js';
import { DEFAULT_WATCH_SECONDS, type ConfigBody, type ConfigId } from '../protocol/config.js';
import { formatHlc } from '../protocol/hlc.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import type { Identity } from '../protocol/identity.js';
import { addStorePath, bootstrap } from '../test/fleet-simulator.js';
import type {
  FanoutReportsResult,
  FanoutResult,
  GrowMode,
  GrowResult,
  HealthResult,
  LoadResult,
  QuiesceResult,
  ResumeResult,
  SettleResult,
  SimulatorCommand,
  SimulatorCounters,
  SimulatorReply,
  SimulatorSnapshot,
  Transport,
  WaitWatchingResult,
} from './fixtures/capacity-protocol.js';
import { TRANSPORTS } from './fixtures/capacity-protocol.js';
import { benchWorkDir } from './fixtures/big-closure.js';
import { procStatus } from './harness.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const GRAPH = 'fleet';

function numberList(name: string, fallback: string): number[] {
  const text = process.env[name] ?? fallback;
  const values = text.split(',').map((item) => Number(item.trim()));
  if (values.length === 0 || values.some((value) => !Number.isInteger(value) || value < 1)) throw new Error(`${name}='${text}': expected positive integers separated by commas`);
  return values;
}
function numberEnv(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name}='${text}': expected a non-negative number`);
  return value;
}

const points = [...new Set(numberList('BENCH_AGENTS', '1000,2000,5000,10000'))].sort((a, b) => a - b);
const transports = (process.env.BENCH_TRANSPORTS ?? 'http,https').split(',').map((item) => item.trim()) as Transport[];
for (const transport of transports) if (!TRANSPORTS.includes(transport)) throw new Error(`BENCH_TRANSPORTS: '${transport}' is not one of ${TRANSPORTS.join(', ')}`);
const growMode = (process.env.BENCH_GROW ?? 'quiet') as GrowMode;
if (growMode !== 'quiet' && growMode !== 'live') throw new Error(`BENCH_GROW='${growMode}': expected quiet or live`);
const knobs = {
  watchWaitSeconds: numberEnv('BENCH_WATCH_WAIT', DEFAULT_WATCH_SECONDS),
  idleSeconds: numberEnv('BENCH_IDLE_SECONDS', 20),
  loadSeconds: numberEnv('BENCH_LOAD_SECONDS', 20),
  fanoutTimeoutSeconds: numberEnv('BENCH_FANOUT_TIMEOUT_SECONDS', 60),
  healthSeconds: numberEnv('BENCH_HEALTH_SECONDS', 0),
  healthIntervalSeconds: Math.max(1, numberEnv('BENCH_HEALTH_INTERVAL', 30)),
  healthFlapping: Math.min(1, numberEnv('BENCH_HEALTH_FLAPPING', 0.01)),
  reportsTimeoutSeconds: numberEnv('BENCH_REPORTS_TIMEOUT_SECONDS', 120),
  growTimeoutSeconds: numberEnv('BENCH_GROW_TIMEOUT_SECONDS', 600),
  settleSeconds: numberEnv('BENCH_SETTLE_SECONDS', 5),
  enrollConcurrency: Math.max(1, numberEnv('BENCH_ENROLL_CONCURRENCY', 64)),
  startPerSecond: Math.max(1, numberEnv('BENCH_START_PER_SECOND', 1000)),
  requestTimeoutSeconds: numberEnv('BENCH_REQUEST_TIMEOUT_SECONDS', 60),
  growMode,
  ferry: process.env.BENCH_FERRY === 'source' ? 'source' : 'build',
  /** BENCH_PIN=1: the coordinator on CPU 0, the simulator and this process on CPU 1 (a core each, not sharing). */
  pin: process.env.BENCH_PIN === '1',
};
const maxAgents = points.at(-1)!;
if (knobs.pin) execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });

const log = (line: string): void => void process.stderr.write(`capacity: ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// --- file descriptors: each side holds a connection per agent ------------------

function openFileLimit(): number {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return !match || match[1] === 'unlimited' ? Infinity : Number(match[1]);
}
const fileLimit = openFileLimit();
// One connection per agent on each side (the watch) plus ~300 for the rest; a second connection per
// agent exists only while a load request runs beside its watch (the simulator's pools allow 2).
if (maxAgents + 300 > fileLimit) {
  throw new Error(`BENCH_AGENTS up to ${maxAgents} needs at least ${maxAgents + 300} open files per process (a connection per agent on each side), but ulimit -n is ${fileLimit}: raise it (ulimit -n) or ask for fewer agents`);
}
if (2 * maxAgents + 300 > fileLimit) {
  log(`note: ulimit -n ${fileLimit} < 2 x ${maxAgents} agents + 300: if load requests pile up beside the held watches (a saturated coordinator), connections may fail with EMFILE (counted as errors)`);
}

const clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
/** CPU seconds (user + system, all threads) a process has used so far; NaN when it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return Number.NaN;
  }
}
/**
 * CPU seconds so far per thread name of a process (/proc/<pid>/task: the
 * main thread is "node" or "ferry", V8's GC helpers "V8 DefaultWorke",
 * libuv's pool "libuv-worker", workers by their names): where a process's
 * CPU goes besides its JavaScript.
 */
function threadCpuSeconds(pid: number): Record<string, number> {
  const byName: Record<string, number> = {};
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
        const name = task === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        byName[name] = (byName[name] ?? 0) + (Number(fields[11]) + Number(fields[12])) / clockTicks;
      } catch {
        // The thread ended meanwhile.
      }
    }
  } catch {
    // The process is gone.
  }
  return byName;
}
function rssBytes(pid: number): number {
  try {
    return procStatus(pid, 'VmRSS');
  } catch {
    return Number.NaN;
  }
}

// --- child processes, killed on any exit ---------------------------------------

const children = new Set<ChildProcess>();
const work = path.join(benchWorkDir, `capacity-${process.pid}`);
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  if (!process.env.BENCH_KEEP) rmSync(work, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping the coordinator and the simulator`);
    process.exit(130);
  });
}

// --- the coordinator, prepared in-process, then served by its own process ------

interface Prepared {
  admin: Identity;
  token: string;
  targets: StorePath[];
  head: ConfigId;
}

function signedSubmission(admin: Identity, parents: ConfigId[], target: StorePath, message: string): { submission: { body: ConfigBody; signature: string }; id: ConfigId } {
  const body: ConfigBody = {
    graph: GRAPH,
    parents,
    targets: { 'x86_64-linux': target },
    activation: { command: 'activate', environment: {}, timeoutSeconds: 60 },
    health: null,
    message,
    author: admin.keyId,
    hlc: formatHlc({ wall: Date.now(), counter: 0, node: 'bench' }),
  };
  const id = configId(body);
  return { submission: { body, signature: Buffer.from(admin.sign(configSigningMessage(id))).toString('base64') }, id };
}

async function prepare(dataDir: string): Promise<Prepared> {
  const coordinator = Coordinator.open(dataDir);
  try {
    const { admin, adminActor } = bootstrap(coordinator);
    const targets: StorePath[] = [];
    for (let i = 0; i < 4; i++) targets.push(await addStorePath(coordinator, `capacity-app-${i}`));
    const created = coordinator.execute(adminActor, (context) => {
      const made = commands.createToken(context, { uses: maxAgents + 1000, autoApprove: true, ttlSeconds: 7 * 24 * 3600, label: 'capacity bench' });
      return { draft: made.draft, result: made.token };
    });
    if (!created) throw new Error('no token created');
    const first = signedSubmission(admin, [], targets[0]!, 'capacity: first');
    coordinator.record(adminActor, (context) => commands.submitConfig(context, first.submission));
    return { admin, token: created.result, targets, head: first.id };
  } finally {
    coordinator.close();
  }
}

interface RunningCoordinator {
  child: ChildProcess;
  pid: number;
  url: string;
  /** Its Prometheus endpoint (--metrics-listen): the request durations it measured itself. */
  metricsUrl: string | undefined;
  logFile: string;
}

/** `_count` and cumulative `_bucket` values of the coordinator's request-duration histogram for `route`, summed over its other labels. */
async function requestHistogram(coordinator: RunningCoordinator, route: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  if (!coordinator.metricsUrl) return counts;
  const text = await (await fetch(coordinator.metricsUrl)).text();
  for (const [, le, labels, value] of text.matchAll(/^ferry_http_request_duration_seconds_bucket\{le="([^"]+)",(.*)\} (\d+)$/gm)) {
    if (!labels!.includes(`route="${route}"`)) continue;
    counts.set(le!, (counts.get(le!) ?? 0) + Number(value));
  }
  return counts;
}

/**
 * Where the coordinator's event loop stood still: what its own process
 * metrics say (the loop's lag, reset at each scrape, and garbage
 * collections by kind) and what a probe saw from outside.
 */
interface Stalls {
  /** nodejs_eventloop_lag_{p99,max}_seconds over the window, ms. */
  loopLagP99Ms: number | null;
  loopLagMaxMs: number | null;
  /** Garbage collections in the window by kind: how many, their total and how many took over 50 ms. */
  gc: Record<string, { count: number; totalMs: number; over50Ms: number }>;
  /** The probe: a GET of an unknown path on the metrics port (a 404 from the coordinator's own loop) every 50 ms. */
  probe: { count: number; p50Ms: number | null; p99Ms: number | null; maxMs: number | null; over100Ms: number };
}

interface GcTotals {
  [kind: string]: { count: number; sum: number; under50: number };
}

/** Scrapes the coordinator's process metrics: the loop lag since the previous scrape (the scrape resets it) and cumulative GC totals. */
async function processMetrics(coordinator: RunningCoordinator): Promise<{ lagP99: number | null; lagMax: number | null; gc: GcTotals }> {
  const gc: GcTotals = {};
  if (!coordinator.metricsUrl) return { lagP99: null, lagMax: null, gc };
  const text = await (await fetch(coordinator.metricsUrl)).text();
  const gauge = (name: string): number | null => {
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return match ? Number(match[1]) : null;
  };
  for (const [, kind, count] of text.matchAll(/^nodejs_gc_duration_seconds_count\{kind="(\w+)"\} (\S+)$/gm)) (gc[kind!] ??= { count: 0, sum: 0, under50: 0 }).count = Number(count);
  for (const [, kind, sum] of text.matchAll(/^nodejs_gc_duration_seconds_sum\{kind="(\w+)"\} (\S+)$/gm)) (gc[kind!] ??= { count: 0, sum: 0, under50: 0 }).sum = Number(sum);
  for (const [, kind, under] of text.matchAll(/^nodejs_gc_duration_seconds_bucket\{le="0\.05",kind="(\w+)"\} (\S+)$/gm)) (gc[kind!] ??= { count: 0, sum: 0, under50: 0 }).under50 = Number(under);
  return { lagP99: gauge('nodejs_eventloop_lag_p99_seconds'), lagMax: gauge('nodejs_eventloop_lag_max_seconds'), gc };
}

/**
 * Watches the coordinator's event loop from outside until stopped: a
 * probe every 50 ms (one at a time, on one kept-alive connection) asks
 * its metrics port for a path it does not serve, answered with a 404 by
 * the coordinator's own loop and nothing else, so the probe's latency is
 * how long that loop took to turn.
 */
async function startStallWatch(coordinator: RunningCoordinator): Promise<() => Promise<Stalls>> {
  let stopped = false;
  const latencies: number[] = [];
  // Before the window, not in it: a scrape reads the whole fleet (~150 ms at 10,000 agents under load), a stall of its own.
  const start = await processMetrics(coordinator);
  const probing = (async () => {
    if (!coordinator.metricsUrl) return;
    const url = new URL('/stall-probe', coordinator.metricsUrl);
    while (!stopped) {
      const started = performance.now();
      try {
        await (await fetch(url)).arrayBuffer();
        latencies.push(performance.now() - started);
      } catch {
        // The coordinator is gone: the bench notices elsewhere.
        return;
      }
      await sleep(Math.max(0, 50 - (performance.now() - started)));
    }
  })();
  return async () => {
    stopped = true;
    await probing;
    const end = await processMetrics(coordinator);
    const gc: Stalls['gc'] = {};
    for (const [kind, totals] of Object.entries(end.gc)) {
      const previous = start.gc[kind] ?? { count: 0, sum: 0, under50: 0 };
      const count = totals.count - previous.count;
      if (count > 0) gc[kind] = { count, totalMs: Math.round((totals.sum - previous.sum) * 1000), over50Ms: count - (totals.under50 - previous.under50) };
    }
    const sorted = latencies.sort((a, b) => a - b);
    const at = (q: number): number | null => (sorted.length === 0 ? null : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!));
    const ms = (seconds: number | null): number | null => (seconds === null ? null : Math.round(seconds * 1000));
    return {
      loopLagP99Ms: ms(end.lagP99),
      loopLagMaxMs: ms(end.lagMax),
      gc,
      probe: { count: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted.length > 0 ? Math.round(sorted.at(-1)!) : null, over100Ms: sorted.filter((latency) => latency > 100).length },
    };
  };
}

/** One line of what startStallWatch found. */
function describeStalls(stalls: Stalls): string {
  const gc = Object.entries(stalls.gc).map(([kind, { count, totalMs, over50Ms }]) => `${count} ${kind} (${totalMs} ms, ${over50Ms} over 50 ms)`).join(', ') || 'none';
  return (
    `coordinator loop lag p99/max ${stalls.loopLagP99Ms}/${stalls.loopLagMaxMs} ms; GC ${gc}; ` +
    `probe p50/p99/max ${stalls.probe.p50Ms}/${stalls.probe.p99Ms}/${stalls.probe.maxMs} ms (${stalls.probe.over100Ms} of ${stalls.probe.count} over 100 ms)`
  );
}

/** How long one scrape of the coordinator's metrics took, start to whole reply, and its size (best of three). */
async function timedScrape(coordinator: RunningCoordinator): Promise<{ ms: number; bytes: number } | undefined> {
  if (!coordinator.metricsUrl) return undefined;
  let best: { ms: number; bytes: number } | undefined;
  for (let run = 0; run < 3; run++) {
    const started = performance.now();
    const bytes = (await (await fetch(coordinator.metricsUrl)).arrayBuffer()).byteLength;
    const ms = performance.now() - started;
    if (!best || ms < best.ms) best = { ms, bytes };
  }
  return best;
}

/**
 * The coordinator's own quantile `q` of a route's durations between two
 * scrapes: the upper bound of the histogram bucket it falls in (ms), or
 * null without requests. Its clock starts once a request's headers were
 * read and stops when the reply was handed over: unlike the simulator's,
 * it leaves out the kernel, TLS reads and the simulator itself.
 */
function histogramQuantileMs(before: Map<string, number>, after: Map<string, number>, q: number): number | null {
  const buckets = [...after.entries()].map(([le, count]) => ({ le: le === '+Inf' ? Infinity : Number(le), count: count - (before.get(le) ?? 0) })).sort((a, b) => a.le - b.le);
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return null;
  const found = buckets.find((bucket) => bucket.count >= q * total)!;
  return found.le === Infinity ? Infinity : found.le * 1000;
}

function startCoordinator(dataDir: string, logFile: string): Promise<RunningCoordinator> {
  const cli = knobs.ferry === 'source' ? ['--import', 'tsx', path.join(root, 'bench', 'fixtures', 'ferry-cli.ts')] : [path.join(root, 'bin', 'ferry')];
  const logFd = openSync(logFile, 'w');
  const nodeFlags = (process.env.BENCH_COORDINATOR_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const command = [process.execPath, ...nodeFlags, ...cli, 'coordinator', 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--no-quic', '--metrics-listen', '127.0.0.1:0'];
  // Pinned from its first instruction: every thread it starts inherits CPU 0.
  const [program, ...args] = knobs.pin ? ['taskset', '-c', '0', ...command] : command;
  const child = spawn(program!, args, {
    cwd: root,
    stdio: ['ignore', 'pipe', logFd],
    env: { ...process.env, FERRY_CONFIG_DIR: path.join(work, 'config') },
  });
  closeSync(logFd);
  children.add(child);
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`the coordinator did not print its URL within 60 s; its log: ${logFile}`)), 60_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const match = /HTTP API:\s+(http:\/\/\S+)/.exec(text);
      const metrics = /Metrics:\s+(\S+)/.exec(text);
      if (match && metrics) {
        clearTimeout(timer);
        child.stdout!.removeAllListeners('data');
        // What it prints from now on (e.g. --trace-gc's lines) goes to its log beside stderr.
        child.stdout!.pipe(createWriteStream(logFile, { flags: 'a' }));
        resolve({ child, pid: child.pid!, url: match[1]!, metricsUrl: metrics[1]!.startsWith('http') ? metrics[1] : undefined, logFile });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the coordinator exited (${code ?? signal}) before serving:\n${readFileSync(logFile, 'utf8').slice(-2000)}`));
    });
  });
}

// --- the simulator, over IPC ----------------------------------------------------

class Simulator {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  readonly child: ChildProcess;
  exited: string | undefined;

  constructor() {
    this.child = fork(path.join(root, 'bench', 'fixtures', 'capacity-agents.ts'), [], {
      cwd: root,
      execArgv: ['--import', 'tsx', '--max-old-space-size=4096', ...(process.env.BENCH_SIMULATOR_NODE_FLAGS ?? '').split(' ').filter(Boolean)],
      // Its stdout goes to this process's stderr: stdout is the table's.
      stdio: ['ignore', 2, 2, 'ipc'],
    });
    children.add(this.child);
    if (knobs.pin) execFileSync('taskset', ['-a', '-p', '-c', '1', String(this.child.pid)], { stdio: 'ignore' });
    this.child.on('message', (message: SimulatorReply) => {
      const waiter = this.waiting.get(message.id);
      if (!waiter) return;
      this.waiting.delete(message.id);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(`simulator: ${message.error}`));
    });
    this.child.once('exit', (code, signal) => {
      this.exited = `the simulator exited (${code ?? signal})`;
      for (const waiter of this.waiting.values()) waiter.reject(new Error(this.exited));
      this.waiting.clear();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  ask<T>(command: SimulatorCommand): Promise<T> {
    if (this.exited) return Promise.reject(new Error(this.exited));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.child.send({ ...command, id });
    });
  }
}

// --- one curve point -------------------------------------------------------------

/** Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait). */
function machineBusySeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / clockTicks;
}

/**
 * The kernel's network counters that explain a latency tail no process
 * shows: packets dropped at the per-CPU input backlog (/proc/net/
 * softnet_stat, column 2; loopback traffic passes it, and a burst over
 * net.core.netdev_max_backlog is dropped) and TCP retransmission timeouts
 * (/proc/net/netstat TCPTimeouts: a lost segment waits at least 200 ms).
 */
function networkCounters(): { backlogDrops: number; tcpTimeouts: number } {
  const backlogDrops = readFileSync('/proc/net/softnet_stat', 'utf8')
    .trim()
    .split('\n')
    .reduce((sum, line) => sum + Number.parseInt(line.trim().split(/\s+/)[1] ?? '0', 16), 0);
  const [names = '', values = ''] = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((line) => line.startsWith('TcpExt:'));
  const index = names.split(/\s+/).indexOf('TCPTimeouts');
  return { backlogDrops, tcpTimeouts: index > 0 ? Number(values.split(/\s+/)[index]) : 0 };
}

interface Mark {
  at: number;
  coordinator: number;
  simulator: SimulatorSnapshot;
  machine: number;
  self: number;
  network: ReturnType<typeof networkCounters>;
}

interface Window {
  seconds: number;
  coordinatorCores: number;
  coordinatorCpuSeconds: number;
  simulatorCores: number;
  simulatorCpuSeconds: number;
  /** Everything else on the machine (other sessions, tests): the 2 cores are shared. */
  otherCores: number;
  /** Packets the kernel dropped at its input backlog, and TCP retransmission timeouts, machine-wide (networkCounters). */
  backlogDrops: number;
  tcpTimeouts: number;
  errors: Record<string, number>;
}

async function mark(coordinator: RunningCoordinator, simulator: Simulator): Promise<Mark> {
  const simulatorSnapshot = await simulator.ask<SimulatorSnapshot>({ type: 'snapshot' });
  const cpu = process.cpuUsage();
  return {
    at: Date.now(),
    coordinator: cpuSeconds(coordinator.pid),
    simulator: simulatorSnapshot,
    machine: machineBusySeconds(),
    self: (cpu.user + cpu.system) / 1e6,
    network: networkCounters(),
  };
}

function windowOf(before: Mark, after: Mark): Window {
  const seconds = (after.at - before.at) / 1000;
  const coordinatorCpuSeconds = after.coordinator - before.coordinator;
  const simulatorCpuSeconds = simCpu(after.simulator) - simCpu(before.simulator);
  const others = after.machine - before.machine - coordinatorCpuSeconds - simulatorCpuSeconds - (after.self - before.self);
  return {
    seconds,
    coordinatorCpuSeconds,
    coordinatorCores: coordinatorCpuSeconds / seconds,
    simulatorCpuSeconds,
    simulatorCores: simulatorCpuSeconds / seconds,
    otherCores: Math.max(0, others / seconds),
    backlogDrops: after.network.backlogDrops - before.network.backlogDrops,
    tcpTimeouts: after.network.tcpTimeouts - before.network.tcpTimeouts,
    errors: difference(after.simulator.counters.errors, before.simulator.counters.errors),
  };
}

interface PointResult {
  transport: Transport;
  agents: number;
  target: number;
  grow: GrowResult;
  watching: WaitWatchingResult;
  settleBeforeIdle: SettleResult & { coordinatorCalmSeconds: number; coordinatorCalm: boolean };
  idle: Window & {
    coordinatorRssMiB: number;
    simulatorRssMiB: number;
    simulatorHeapMiB: number;
    watchesReissued: number;
    watchesPerSecond: number;
    extraDesired: number;
    watchUnchanged: number;
    /** The coordinator's idle CPU by thread name (cores): its JavaScript is "main". */
    coordinatorThreadCores: Record<string, number>;
    watchUnbound: number;
    watchUnboundEmptyChallenge: number;
  };
  scrape: { ms: number; bytes: number } | undefined;
  health: (HealthResult & { primeSeconds: number; window: Window; idleCoordinatorCores: number }) | { skipped: string };
  load: (LoadResult & { window: Window; connectionsOpened: number; tlsResumed: number; coordinatorP99Ms: { desired: number | null; report: number | null }; stalls: Stalls; settle: SettleResult; recovery?: Recovery }) | { skipped: string };
  fanout: (FanoutResult & { window: Window; reports: FanoutReportsResult & { window: Window }; settle: SettleResult }) | { skipped: string };
  /** The coordinator's RSS added per agent since the previous point (or since it started, for the first). */
  coordinatorKiBPerAgent: number | null;
  simulatorKiBPerAgent: number | null;
  /** Every error counted from the start of this point's growth to the end of its fan-out. */
  errors: Record<string, number>;
  errorCount: number;
  coordinatorAlive: boolean;
}

function difference(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    const delta = value - (before[key] ?? 0);
    if (delta !== 0) out[key] = delta;
  }
  return out;
}
const total = (table: Record<string, number>): number => Object.values(table).reduce((sum, value) => sum + value, 0);
const simCpu = (snapshot: SimulatorSnapshot): number => (snapshot.cpuUserMicros + snapshot.cpuSystemMicros) / 1e6;
const counterDelta = (after: SimulatorSnapshot, before: SimulatorSnapshot, key: keyof Omit<SimulatorCounters, 'sent' | 'errors'>): number => after.counters[key] - before.counters[key];
const MiB = 2 ** 20;

/** Waits until the coordinator uses less than 0.9 of a core over a second (a backlog worked off), at most `timeoutMs`. */
async function coordinatorCalm(pid: number, timeoutMs: number): Promise<{ seconds: number; calm: boolean }> {
  const started = Date.now();
  for (;;) {
    const before = cpuSeconds(pid);
    await sleep(1000);
    const cores = cpuSeconds(pid) - before;
    if (!(cores >= 0.9)) return { seconds: (Date.now() - started) / 1000, calm: true };
    if (Date.now() - started > timeoutMs) return { seconds: (Date.now() - started) / 1000, calm: false };
    log(`coordinator still busy (${cores.toFixed(2)} cores); waiting for it to calm down`);
  }
}

interface Recovery {
  seconds: number;
  quiesce: QuiesceResult;
  calmSeconds: number;
  calm: boolean;
  watching: WaitWatchingResult;
}

/**
 * Lets a saturated coordinator work off its backlog: the fleet stops
 * watching (quiesce: loops paused, held watches ended, pending reports
 * delivered), the coordinator calms down (at most 5 minutes), the loops
 * start again and every agent watches.
 */
async function recover(coordinator: RunningCoordinator, simulator: Simulator, why: string): Promise<Recovery> {
  log(`${why}: pausing the fleet until the coordinator has worked off its backlog`);
  const started = Date.now();
  const quiesce = await simulator.ask<QuiesceResult>({ type: 'quiesce', timeoutMs: (knobs.watchWaitSeconds + knobs.requestTimeoutSeconds + 15) * 1000 });
  const calm = await coordinatorCalm(coordinator.pid, 300_000);
  await simulator.ask<ResumeResult>({ type: 'resume' });
  const watching = await simulator.ask<WaitWatchingResult>({ type: 'wait-watching', timeoutMs: 120_000 });
  await simulator.ask<SettleResult>({ type: 'settle', timeoutMs: 60_000 });
  await sleep(knobs.settleSeconds * 1000);
  const calmAgain = await coordinatorCalm(coordinator.pid, 60_000);
  const seconds = (Date.now() - started) / 1000;
  log(`${why}: recovered in ${seconds.toFixed(0)} s (coordinator ${calm.calm && calmAgain.calm ? 'calm' : 'STILL BUSY'}, ${watching.watching}/${watching.agents} watches held)`);
  return { seconds, quiesce, calmSeconds: calm.seconds, calm: calm.calm && calmAgain.calm, watching };
}

interface TransportState {
  head: ConfigId;
  prepared: Prepared;
  adminClient: CoordinatorHttpClient;
  previous: { agents: number; coordinatorRss: number; simulatorRss: number };
  fanouts: number;
}

async function measurePoint(transport: Transport, target: number, coordinator: RunningCoordinator, simulator: Simulator, state: TransportState): Promise<PointResult> {
  const alive = (): boolean => coordinator.child.exitCode === null && coordinator.child.signalCode === null;
  const pointStart = await simulator.ask<SimulatorSnapshot>({ type: 'snapshot' });

  // 1. Grow, every agent watching, settled.
  log(`${transport} N=${target}: growing from ${pointStart.agents} agents (${knobs.growMode})`);
  const grow = await simulator.ask<GrowResult>({ type: 'grow', target, mode: knobs.growMode, timeoutMs: knobs.growTimeoutSeconds * 1000 });
  log(`${transport} N=${target}: ${grow.reached} agents after ${grow.seconds.toFixed(1)} s (${grow.perSecond.toFixed(0)} enrolled/s${grow.timedOut ? ', TIMED OUT' : ''}, ${grow.failed} given up)`);
  const watching = await simulator.ask<WaitWatchingResult>({ type: 'wait-watching', timeoutMs: 120_000 });
  log(`${transport} N=${target}: ${watching.watching} watches held, ${watching.agents} agents${watching.timedOut ? ' (NOT every agent watched within the timeout)' : ''} after ${watching.seconds.toFixed(1)} s`);
  const settled = await simulator.ask<SettleResult>({ type: 'settle', timeoutMs: 120_000 });
  await sleep(knobs.settleSeconds * 1000);
  const calm = await coordinatorCalm(coordinator.pid, 60_000);
  const N = grow.reached;

  // 2. Idle.
  log(`${transport} N=${N}: idle for ${knobs.idleSeconds} s`);
  const idleThreadsStart = threadCpuSeconds(coordinator.pid);
  const idleStart = await mark(coordinator, simulator);
  await sleep(knobs.idleSeconds * 1000);
  const idleEnd = await mark(coordinator, simulator);
  const idleWindow = windowOf(idleStart, idleEnd);
  const idleThreadsEnd = threadCpuSeconds(coordinator.pid);
  const coordinatorThreadCores = Object.fromEntries(
    Object.entries(idleThreadsEnd).map(([name, seconds]) => [name, Math.round(((seconds - (idleThreadsStart[name] ?? 0)) / idleWindow.seconds) * 1000) / 1000]),
  );
  const coordinatorRss = rssBytes(coordinator.pid);
  const watchesReissued = (idleEnd.simulator.counters.sent.watch ?? 0) - (idleStart.simulator.counters.sent.watch ?? 0);
  const idle: PointResult['idle'] = {
    ...idleWindow,
    coordinatorRssMiB: coordinatorRss / MiB,
    simulatorRssMiB: idleEnd.simulator.rssBytes / MiB,
    simulatorHeapMiB: idleEnd.simulator.heapUsedBytes / MiB,
    watchesReissued,
    watchesPerSecond: watchesReissued / idleWindow.seconds,
    extraDesired: counterDelta(idleEnd.simulator, idleStart.simulator, 'extraDesired'),
    watchUnchanged: counterDelta(idleEnd.simulator, idleStart.simulator, 'watchUnchanged'),
    coordinatorThreadCores,
    watchUnbound: counterDelta(idleEnd.simulator, idleStart.simulator, 'watchUnbound'),
    watchUnboundEmptyChallenge: counterDelta(idleEnd.simulator, idleStart.simulator, 'watchUnboundEmptyChallenge'),
  };
  log(
    `${transport} N=${N}: idle coordinator ${idle.coordinatorCores.toFixed(3)} cores, ${idle.coordinatorRssMiB.toFixed(0)} MiB; simulator ${idle.simulatorCores.toFixed(3)} cores; ` +
      `others ${idle.otherCores.toFixed(2)} cores; ${idle.watchesPerSecond.toFixed(0)} watches/s, ${(idle.extraDesired / idle.seconds).toFixed(0)} extra desired/s; ` +
      `coordinator threads ${Object.entries(coordinatorThreadCores).filter(([, cores]) => cores > 0).map(([name, cores]) => `${name} ${cores}`).join(', ')}`,
  );
  // Issue 22's benchmark: a Prometheus scrape of the whole fleet (its gauges read every agent), after the idle window.
  const scrape = await timedScrape(coordinator);
  if (scrape) log(`${transport} N=${N}: metrics scrape ${scrape.ms.toFixed(1)} ms, ${(scrape.bytes / 1024).toFixed(1)} KiB`);

  // 2b. Issue 22's other benchmark: every agent checks its health every 30 s and reports transitions only.
  let health: PointResult['health'] = { skipped: 'BENCH_HEALTH_SECONDS=0' };
  if (knobs.healthSeconds > 0 && alive()) {
    const prime = await simulator.ask<{ primed: number; seconds: number }>({ type: 'health-prime', flappingFraction: knobs.healthFlapping });
    await simulator.ask<SettleResult>({ type: 'settle', timeoutMs: 60_000 });
    await coordinatorCalm(coordinator.pid, 30_000);
    log(`${transport} N=${N}: ${prime.primed} agents reported healthy in ${prime.seconds.toFixed(1)} s; health checks every ${knobs.healthIntervalSeconds} s for ${knobs.healthSeconds} s (${(knobs.healthFlapping * 100).toFixed(1)}% flapping)`);
    const before = await mark(coordinator, simulator);
    const result = await simulator.ask<HealthResult>({ type: 'health', seconds: knobs.healthSeconds, intervalSeconds: knobs.healthIntervalSeconds, unhealthyAfter: 1 });
    const after = await mark(coordinator, simulator);
    const window = windowOf(before, after);
    health = { ...result, primeSeconds: prime.seconds, window, idleCoordinatorCores: idle.coordinatorCores };
    log(
      `${transport} N=${N}: health window coordinator ${window.coordinatorCores.toFixed(3)} cores (idle window ${idle.coordinatorCores.toFixed(3)}), simulator ${window.simulatorCores.toFixed(3)}, others ${window.otherCores.toFixed(2)}; ` +
        `${result.checks} checks, ${result.transitions} transitions, ${result.reports} reports: ${result.recorded} recorded, ${result.deferred} deferred, ${result.unchanged} unchanged, ${result.failed} failed`,
    );
  }
  const added = N - state.previous.agents;
  const coordinatorKiBPerAgent = added > 0 ? (coordinatorRss - state.previous.coordinatorRss) / 1024 / added : null;
  const simulatorKiBPerAgent = added > 0 ? (idleEnd.simulator.rssBytes - state.previous.simulatorRss) / 1024 / added : null;
  state.previous = { agents: N, coordinatorRss, simulatorRss: idleEnd.simulator.rssBytes };

  // 3. Load, open loop.
  let load: PointResult['load'] = { skipped: 'the coordinator is gone' };
  if (knobs.loadSeconds <= 0) load = { skipped: 'BENCH_LOAD_SECONDS=0' };
  else if (alive()) {
    const rate = N / 30;
    log(`${transport} N=${N}: load for ${knobs.loadSeconds} s, ${rate.toFixed(1)} desired/s + ${rate.toFixed(1)} reports/s`);
    const histogramsBefore = await Promise.all([requestHistogram(coordinator, '/v1/agent/desired'), requestHistogram(coordinator, '/v1/agent/status')]);
    const stopStallWatch = await startStallWatch(coordinator);
    const before = await mark(coordinator, simulator);
    const result = await simulator.ask<LoadResult>({ type: 'load', seconds: knobs.loadSeconds, desiredPerSecond: rate, reportsPerSecond: rate, drainTimeoutMs: knobs.requestTimeoutSeconds * 1000 + 5000 });
    const after = await mark(coordinator, simulator);
    const stalls = await stopStallWatch(); // its last scrape after the window, like the histograms'
    const window = windowOf(before, after);
    const histogramsAfter = await Promise.all([requestHistogram(coordinator, '/v1/agent/desired'), requestHistogram(coordinator, '/v1/agent/status')]);
    // The coordinator's own p99 (a histogram bucket's upper bound) beside the simulator's end-to-end one.
    const coordinatorP99Ms = {
      desired: histogramQuantileMs(histogramsBefore[0], histogramsAfter[0], 0.99),
      report: histogramQuantileMs(histogramsBefore[1], histogramsAfter[1], 0.99),
    };
    const connectionsOpened = counterDelta(after.simulator, before.simulator, 'connectionsOpened');
    const tlsResumed = counterDelta(after.simulator, before.simulator, 'tlsResumed');
    log(
      `${transport} N=${N}: load desired p50/p99 ${result.desired.p50Ms}/${result.desired.p99Ms} ms, report p50/p99 ${result.report.p50Ms}/${result.report.p99Ms} ms, ` +
        `${result.desired.failed + result.report.failed} failed, ${result.desired.unfinished + result.report.unfinished} unfinished; coordinator ${window.coordinatorCores.toFixed(2)} cores, others ${window.otherCores.toFixed(2)}; ` +
        `${connectionsOpened} connections opened (${tlsResumed} TLS resumptions); simulator send lag p99/max ${result.sendLagP99Ms}/${result.sendLagMaxMs} ms; ` +
        `kernel: ${window.backlogDrops} packets dropped at the input backlog, ${window.tcpTimeouts} TCP retransmission timeouts; ` +
        `coordinator's own p99 (histogram bucket bound): desired ≤ ${coordinatorP99Ms.desired} ms, report ≤ ${coordinatorP99Ms.report} ms; ` +
        describeStalls(stalls),
    );
    const settle = await simulator.ask<SettleResult>({ type: 'settle', timeoutMs: 120_000 });
    const calmAfter = await coordinatorCalm(coordinator.pid, 30_000);
    // A saturated coordinator still works off the load's requests (those whose clients gave up too), each
    // report waking every held watch: the fan-out is measured once that backlog is gone.
    const recovery = calmAfter.calm || !alive() ? undefined : await recover(coordinator, simulator, `${transport} N=${N}: the coordinator is still busy after the load`);
    load = { ...result, window, connectionsOpened, tlsResumed, coordinatorP99Ms, stalls, settle, ...(recovery ? { recovery } : {}) };
  }

  // 4. Fan-out.
  let fanout: PointResult['fanout'] = { skipped: 'the coordinator is gone' };
  if (alive()) {
    try {
      const graph = await state.adminClient.call('graphs.show', { graph: GRAPH, limit: '1' });
      if (graph.head) state.head = graph.head;
    } catch (error) {
      log(`could not read the head of ${GRAPH} (${(error as Error).message}); submitting on ${state.head.slice(0, 12)}`);
    }
    state.fanouts++;
    const target = state.prepared.targets[state.fanouts % state.prepared.targets.length]!;
    const { submission, id } = signedSubmission(state.prepared.admin, [state.head], target, `capacity: fan-out ${state.fanouts} to ${N} agents`);
    log(`${transport} N=${N}: fan-out of ${id.slice(0, 12)}`);
    const before = await mark(coordinator, simulator);
    const result = await simulator.ask<FanoutResult>({ type: 'fanout', submission, configId: id, timeoutMs: knobs.fanoutTimeoutSeconds * 1000 });
    const answered = await mark(coordinator, simulator);
    if (result.submitStatus === 201) state.head = id;
    log(
      `${transport} N=${N}: fan-out ${result.answered}/${result.agents} answered` +
        (result.allAnsweredMs !== null ? ` in ${(result.allAnsweredMs / 1000).toFixed(2)} s (all verified by the simulator at ${(result.elapsedMs / 1000).toFixed(2)} s)` : ` (gave up after ${(result.elapsedMs / 1000).toFixed(0)} s)`) +
        `, p50/p99 arrival ${result.p50ArrivalMs}/${result.p99ArrivalMs} ms, coordinator ${(answered.coordinator - before.coordinator).toFixed(2)} CPU s; waiting for the reports`,
    );
    const reports = await simulator.ask<FanoutReportsResult>({ type: 'fanout-reports', timeoutMs: Math.max(0, knobs.reportsTimeoutSeconds * 1000 - result.elapsedMs) });
    const reported = await mark(coordinator, simulator);
    log(
      `${transport} N=${N}: ${reports.reported}/${reports.agents} reported it active` +
        (reports.allReportedMs !== null ? ` within ${(reports.allReportedMs / 1000).toFixed(2)} s of the submit` : ` (gave up ${(reports.elapsedMs / 1000).toFixed(0)} s after the submit)`),
    );
    const settle = await simulator.ask<SettleResult>({ type: 'settle', timeoutMs: 60_000 });
    const calmAfter = await coordinatorCalm(coordinator.pid, 30_000);
    if (settle.timedOut || !calmAfter.calm) log(`${transport} N=${N}: after the fan-out, ${settle.inFlight} requests still in flight, ${settle.pendingReports} reports pending, coordinator ${calmAfter.calm ? 'calm' : 'still busy'}`);
    fanout = { ...result, window: windowOf(before, answered), reports: { ...reports, window: windowOf(answered, reported) }, settle };
  }

  const pointEnd = await simulator.ask<SimulatorSnapshot>({ type: 'snapshot' });
  const errors = difference(pointEnd.counters.errors, pointStart.counters.errors);
  return {
    transport,
    agents: N,
    target,
    grow,
    watching,
    settleBeforeIdle: { ...settled, coordinatorCalmSeconds: calm.seconds, coordinatorCalm: calm.calm },
    idle,
    scrape,
    health,
    load,
    fanout,
    coordinatorKiBPerAgent,
    simulatorKiBPerAgent,
    errors,
    errorCount: total(errors),
    coordinatorAlive: alive(),
  };
}

// --- one transport: a fresh coordinator and fleet ---------------------------------

interface TransportResult {
  transport: Transport;
  coordinatorStartRssMiB: number;
  points: PointResult[];
  skipped: { agents: number; reason: string }[];
  failure?: string;
  coordinatorLog: { lines: number; sample: string[] };
}

function logSummary(file: string): { lines: number; sample: string[] } {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { lines: 0, sample: [] };
  }
  const lines = text.split('\n').filter(Boolean);
  // Refusal lines name a key at their end: the same refusal of many agents is one kind.
  const kinds = new Map<string, number>();
  for (const line of lines) {
    const kind = line.replace(/\(key [0-9a-f]+\)/g, '(key …)').replace(/[0-9a-f]{32,}/g, '…').slice(0, 200);
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return { lines: lines.length, sample: [...kinds.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([kind, count]) => `${count} x ${kind}`) };
}

async function runTransport(transport: Transport): Promise<TransportResult> {
  const dir = path.join(work, transport);
  mkdirSync(dir, { recursive: true });
  const dataDir = path.join(dir, 'coordinator');
  log(`${transport}: preparing a coordinator in ${dataDir}`);
  const prepared = await prepare(dataDir);
  const coordinator = await startCoordinator(dataDir, path.join(dir, 'coordinator.log'));
  const adminClient = new CoordinatorHttpClient(coordinator.url, prepared.admin);
  const info = await new CoordinatorHttpClient(coordinator.url).call('info');
  log(`${transport}: coordinator ${coordinator.pid} at ${coordinator.url}, TLS ${info.tlsFingerprint.slice(0, 16)}…`);
  const simulator = new Simulator();
  const result: TransportResult = { transport, coordinatorStartRssMiB: rssBytes(coordinator.pid) / MiB, points: [], skipped: [], coordinatorLog: { lines: 0, sample: [] } };
  try {
    await simulator.ask({
      type: 'setup',
      setup: {
        url: coordinator.url,
        transport,
        tlsFingerprint: info.tlsFingerprint,
        coordinatorKey: info.coordinatorKey,
        token: prepared.token,
        adminSeed: /^ferry-ed25519-secret:(\S+)$/m.exec(prepared.admin.toKeyFile())![1]!,
        graph: GRAPH,
        watchWaitSeconds: knobs.watchWaitSeconds,
        requestTimeoutMs: knobs.requestTimeoutSeconds * 1000,
        enrollConcurrency: knobs.enrollConcurrency,
        startPerSecond: knobs.startPerSecond,
      },
    });
    const state: TransportState = {
      head: prepared.head,
      prepared,
      adminClient,
      previous: { agents: 0, coordinatorRss: rssBytes(coordinator.pid), simulatorRss: (await simulator.ask<SimulatorSnapshot>({ type: 'snapshot' })).rssBytes },
      fanouts: 0,
    };
    for (const target of points) {
      const gone = coordinator.child.exitCode !== null || coordinator.child.signalCode !== null;
      const stuck = result.points.at(-1)?.grow.timedOut;
      if (gone || stuck) {
        result.skipped.push({ agents: target, reason: gone ? `the coordinator exited (${coordinator.child.exitCode ?? coordinator.child.signalCode})` : `growth to ${result.points.at(-1)!.target} timed out` });
        log(`${transport} N=${target}: skipped (${result.skipped.at(-1)!.reason})`);
        continue;
      }
      const point = await measurePoint(transport, target, coordinator, simulator, state);
      result.points.push(point);
      log(`${transport} N=${point.agents}: done, ${point.errorCount} errors${point.errorCount ? ` (${Object.entries(point.errors).sort((a, b) => b[1] - a[1]).slice(0, 4).map(([kind, count]) => `${kind}: ${count}`).join(', ')})` : ''}`);
    }
  } catch (error) {
    result.failure = error instanceof Error ? error.message : String(error);
    log(`${transport}: FAILED: ${result.failure}`);
  } finally {
    await simulator.ask({ type: 'stop' }).catch(() => undefined);
    if (coordinator.child.exitCode === null) coordinator.child.kill('SIGINT');
    await Promise.race([new Promise((resolve) => coordinator.child.once('exit', resolve)), sleep(10_000)]);
    if (coordinator.child.exitCode === null) coordinator.child.kill('SIGKILL');
    children.delete(coordinator.child);
    children.delete(simulator.child);
    result.coordinatorLog = logSummary(coordinator.logFile);
  }
  return result;
}

// --- output ---------------------------------------------------------------------------

const fixed = (value: number | null | undefined, digits: number): string => (value === null || value === undefined || Number.isNaN(value) ? '–' : value.toFixed(digits));
const ms = (value: number | null | undefined): string => (value === null || value === undefined ? '–' : value >= 100 ? value.toFixed(0) : value.toFixed(1));

function tables(results: TransportResult[]): string {
  const lines = [
    '| agents | transport | idle coord CPU (cores) | sim CPU (cores) | coord RSS MiB | desired p50/p99 ms | report p50/p99 ms | errors | fan-out all answered s | p99 arrival s |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const details = [
    '| agents | transport | grow s (enrolled/s) | idle watches/s | idle extra desired/s | idle others (cores) | coord KiB/agent | sim KiB/agent | load coord / sim / others (cores) | load failed / unfinished | after-load backlog s | fan-out answered | fan-out coord CPU s | all reported s (reported) |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const result of results) {
    for (const point of result.points) {
      const load = 'skipped' in point.load ? undefined : point.load;
      const fanout = 'skipped' in point.fanout ? undefined : point.fanout;
      const fanoutCell = !fanout ? '–' : fanout.allAnsweredMs !== null ? fixed(fanout.allAnsweredMs / 1000, 2) : `timeout (${fanout.answered}/${fanout.agents})`;
      const agentsCell = point.agents === point.target ? `${point.agents}` : `${point.agents} of ${point.target}`;
      const reports = fanout?.reports;
      lines.push(
        `| ${agentsCell} | ${point.transport} | ${fixed(point.idle.coordinatorCores, 3)} | ${fixed(point.idle.simulatorCores, 3)} | ${fixed(point.idle.coordinatorRssMiB, 0)} | ` +
          `${load ? `${ms(load.desired.p50Ms)} / ${ms(load.desired.p99Ms)}` : '–'} | ${load ? `${ms(load.report.p50Ms)} / ${ms(load.report.p99Ms)}` : '–'} | ` +
          `${point.errorCount} | ${fanoutCell} | ${fanout?.p99ArrivalMs !== null && fanout?.p99ArrivalMs !== undefined ? fixed(fanout.p99ArrivalMs / 1000, 2) : '–'} |`,
      );
      details.push(
        `| ${agentsCell} | ${point.transport} | ${fixed(point.grow.seconds, 1)} (${fixed(point.grow.perSecond, 0)}) | ${fixed(point.idle.watchesPerSecond, 1)} | ${fixed(point.idle.extraDesired / point.idle.seconds, 1)} | ` +
          `${fixed(point.idle.otherCores, 2)} | ${fixed(point.coordinatorKiBPerAgent, 1)} | ${fixed(point.simulatorKiBPerAgent, 1)} | ` +
          `${load ? `${fixed(load.window.coordinatorCores, 2)} / ${fixed(load.window.simulatorCores, 2)} / ${fixed(load.window.otherCores, 2)}` : '–'} | ` +
          `${load ? `${load.desired.failed + load.report.failed} / ${load.desired.unfinished + load.report.unfinished}` : '–'} | ` +
          `${load?.recovery ? `${fixed(load.recovery.seconds, 0)}${load.recovery.calm ? '' : ' (still busy)'}` : '–'} | ` +
          `${fanout ? `${fanout.answered}/${fanout.agents}` : '–'} | ${fanout ? fixed(fanout.window.coordinatorCpuSeconds, 2) : '–'} | ` +
          `${reports ? (reports.allReportedMs !== null ? fixed(reports.allReportedMs / 1000, 1) : `timeout (${reports.reported}/${reports.agents})`) : '–'} |`,
      );
    }
    for (const skipped of result.skipped) lines.push(`| ${skipped.agents} | ${result.transport} | skipped: ${skipped.reason} | | | | | | | |`);
    if (result.failure) lines.push(`| | ${result.transport} | FAILED: ${result.failure.split('\n')[0]} | | | | | | | |`);
  }
  const health = ['| agents | transport | metrics scrape ms (KiB) | health window s | coordinator cores: health window / idle | checks | transitions | recorded / deferred / failed |', '|---:|---|---:|---:|---:|---:|---:|---:|'];
  for (const result of results) {
    for (const point of result.points) {
      const checks = 'skipped' in point.health ? undefined : point.health;
      health.push(
        `| ${point.agents} | ${point.transport} | ${point.scrape ? `${fixed(point.scrape.ms, 1)} (${fixed(point.scrape.bytes / 1024, 1)})` : '–'} | ${checks ? fixed(checks.window.seconds, 0) : '–'} | ` +
          `${checks ? `${fixed(checks.window.coordinatorCores, 3)} / ${fixed(checks.idleCoordinatorCores, 3)}` : '–'} | ${checks?.checks ?? '–'} | ${checks?.transitions ?? '–'} | ` +
          `${checks ? `${checks.recorded} / ${checks.deferred} / ${checks.failed}` : '–'} |`,
      );
    }
  }
  return `${lines.join('\n')}\n\n${details.join('\n')}\n\n${health.join('\n')}\n`;
}

// --- main ----------------------------------------------------------------------------

mkdirSync(work, { recursive: true });
log(
  `transports ${transports.join(', ')}; agents ${points.join(', ')}; watch wait ${knobs.watchWaitSeconds} s; idle ${knobs.idleSeconds} s; load ${knobs.loadSeconds} s; ` +
    `growth ${knobs.growMode}; coordinator from ${knobs.ferry === 'source' ? 'the sources (tsx)' : 'build/ (bin/ferry)'}; ${knobs.pin ? 'pinned: coordinator CPU 0, simulator CPU 1; ' : ''}ulimit -n ${fileLimit}; work dir ${work}`,
);
const started = new Date();
const results: TransportResult[] = [];
for (const transport of transports) results.push(await runTransport(transport));
const output = { date: started.toISOString(), seconds: (Date.now() - started.getTime()) / 1000, node: process.version, knobs: { ...knobs, transports, points }, fileLimit, results };
const resultsFile = path.join(benchWorkDir, 'capacity-results.json');
mkdirSync(benchWorkDir, { recursive: true });
writeFileSync(resultsFile, `${JSON.stringify(output, null, 2)}\n`);
for (const result of results) if (result.coordinatorLog.lines > 0) log(`${result.transport}: coordinator log: ${result.coordinatorLog.lines} lines; most frequent:\n  ${result.coordinatorLog.sample.join('\n  ')}`);
log(`results in ${resultsFile}`);
process.stdout.write(tables(results));
process.exitCode = results.some((result) => result.failure) ? 1 : 0;
