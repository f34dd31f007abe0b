/**
 * The data plane on the ~200 MiB / 20,000-file closure, against a real
 * coordinator child process (`ferry coordinator serve`, HTTP + QUIC on
 * 127.0.0.1):
 *  - cold fetch into an empty castore over QUIC and over the HTTP fallback
 *    (an enrolled agent in a child process, every byte BLAKE3-verified),
 *    against real `nix copy --from http://…` of the same closure from a
 *    `compression=none` binary cache served by a node:http static server,
 *    and the transport alone (the same requests, bytes dropped);
 *  - push to an empty coordinator (Nix store -> local castore ingest, then
 *    upload), and a second push after ~10% of the files changed;
 *  - the QUIC fetch with zstd on the wire (`quic+zstd`, DataClient compression
 *    'zstd'; the other fetches run with it off, as clients on loopback do),
 *    in the same rounds: its wire bytes, and its time with the coordinator's
 *    cache cold (round 1: it compresses) and warm;
 *  - peak RSS of the fetching client and of the coordinator.
 * Run: npm run bench:data-plane   (needs nix-store as root; see bench/README.md)
 * Env: BENCH_RUNS (default 5), BENCH_FERRY=source (coordinator from the sources
 * through tsx instead of build/, which `npm run bench:data-plane` builds first), BENCH_PROFILE=DIR (--cpu-prof of the
 * coordinator and the fetch children into DIR), BENCH_KEEP=1 (keep the work dir),
 * BENCH_FETCH_TIMEOUT_MS (default 30000: a fetch child still running then is killed and
 * reported as stalled).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCastore, exportNar, ingestStorePath, uploadStorePaths, type UploadReport } from '../castore/index.js';
import { dumpStorePath, queryClosure, queryPathInfos } from '../nix/local-store.js';
import { narHash } from '../nix/nar/index.js';
import { openDataClient } from '../protocol/connect.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { signedConfig } from '../test/data-plane-fixture.js';
import { nixEnv } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { agentUnit, mbPerSecond, procCpuSeconds, procStatus, report, resetPeakRss, runToDevNull } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, '..');
const runs = Number(process.env.BENCH_RUNS ?? 5);
const profileDir = process.env.BENCH_PROFILE ? path.resolve(process.env.BENCH_PROFILE) : undefined;
// nix/local-store.ts runs nix with this process's environment.
process.env.NIX_CONFIG = nixEnv.NIX_CONFIG;

mkdirSync(benchWorkDir, { recursive: true });
if (profileDir) mkdirSync(profileDir, { recursive: true });
const v0Path = bigClosureStorePath(0, nixEnv);
const v1Path = bigClosureStorePath(1, nixEnv);
const work = mkdtempSync(path.join(benchWorkDir, 'data-plane-'));
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

// ---- the coordinator, a child process -------------------------------------------------------

const env: NodeJS.ProcessEnv = {
  ...nixEnv,
  FERRY_CONFIG_DIR: path.join(work, 'config'),
  FERRY_DATA_DIR: path.join(work, 'coordinator'),
  XDG_CACHE_HOME: path.join(work, 'cache'),
};
const fromBuild = process.env.BENCH_FERRY !== 'source';
const ferryArgs = fromBuild ? [path.join(repo, 'bin', 'ferry')] : ['--import', 'tsx', path.join(here, 'fixtures', 'ferry-cli.ts')];
const profileArgs = (name: string) => (profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-name', `${name}.cpuprofile`] : []);

const init = spawnSync(process.execPath, [...ferryArgs, 'coordinator', 'init', '--name', 'bench'], { env, cwd: repo, encoding: 'utf8' });
if (init.status !== 0) throw new Error(`ferry coordinator init failed: ${init.stderr}`);

interface RunningCoordinator {
  child: ChildProcess;
  url: string;
  fingerprint: string;
  exited: Promise<void>;
}

/**
 * MaxListenersExceededWarning on QuicStream (a writer adding a 'close' listener per
 * backpressured write; fixed in 13000ac) would print once per stream: counted, not printed.
 */
const listenerWarnings: Record<string, number> = { bench: 0, coordinator: 0 };
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name === 'MaxListenersExceededWarning') listenerWarnings.bench!++;
  else process.stderr.write(`${warning.name}: ${warning.message}\n`);
});
function forwardWarnings(stream: NodeJS.ReadableStream, who: string): void {
  let buffered = '';
  stream.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      if (line.includes('MaxListenersExceededWarning')) listenerWarnings[who] = (listenerWarnings[who] ?? 0) + 1;
      else if (!line.includes('node --trace-warnings')) process.stderr.write(`${who}: ${line}\n`);
    }
  });
}

async function startCoordinator(): Promise<RunningCoordinator> {
  const child = spawn(process.execPath, [...profileArgs('coordinator'), ...ferryArgs, 'coordinator', 'serve', '--listen', '127.0.0.1:0'], {
    env,
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  forwardWarnings(child.stderr!, 'coordinator');
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  let out = '';
  const started = await new Promise<{ url: string; fingerprint: string }>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const url = /HTTP API:\s+(http:\/\/\S+)/.exec(out)?.[1];
      const quic = /QUIC data plane:\s+127\.0\.0\.1:\d+/.test(out);
      const fingerprint = /TLS fingerprint:\s+(\S+)/.exec(out)?.[1];
      if (url && quic && fingerprint) resolve({ url, fingerprint });
    });
    child.on('exit', (code) => reject(new Error(`the coordinator exited with ${code}: ${out}`)));
  });
  return { child, exited, ...started };
}

/** Phase windows on the monotonic clock V8 profiles use (µs), to slice a --cpu-prof of the coordinator. */
const windows: { name: string; startUs: number; endUs: number }[] = [];
async function windowed<T>(name: string, body: () => Promise<T>): Promise<T> {
  const startUs = Number(process.hrtime.bigint() / 1000n);
  try {
    return await body();
  } finally {
    windows.push({ name, startUs, endUs: Number(process.hrtime.bigint() / 1000n) });
  }
}

const coordinator = await startCoordinator();
const coordinatorPid = coordinator.child.pid!;
const coordinatorIdleRss = procStatus(coordinatorPid, 'VmRSS');
const admin = loadIdentity(path.join(work, 'config', 'keys', 'bench-admin.key'));
const adminClient = new CoordinatorHttpClient(coordinator.url, admin);

const rows: Record<string, string | number>[] = [];
const results: Record<string, unknown> = {};
let stopped = false;
async function stopCoordinator(): Promise<void> {
  if (stopped) return;
  stopped = true;
  coordinator.child.kill('SIGTERM');
  await coordinator.exited;
}

try {
  // ---- push: Nix store -> local castore -> coordinator ----------------------------------------

  let cache = LocalCastore.open(path.join(work, 'push-cache-0'));
  /** What `ferry push` does before uploading (cli/push-command.ts): NARs from `nix-store --dump` into the cache. */
  async function ingestFromNix(root: string): Promise<{ seconds: number; narBytes: number }> {
    const start = process.hrtime.bigint();
    const closure = await queryClosure([root]);
    const infos = await queryPathInfos(closure.filter((storePath) => !cache.getStorePath(storePath)));
    for (const info of infos) {
      await ingestStorePath(cache, dumpStorePath(info.path), {
        storePath: info.path,
        narHash: info.narHash,
        narSize: info.narSize,
        references: info.references,
        ...(info.ca ? { ca: info.ca } : {}),
        signatures: info.signatures ?? [],
      });
    }
    return { seconds: seconds(start), narBytes: infos.reduce((sum, info) => sum + info.narSize, 0) };
  }

  const pushClient = (await openDataClient(coordinator.url, admin, { tlsFingerprint: coordinator.fingerprint })).client;
  async function push(root: string): Promise<UploadReport & { seconds: number; coordinatorPeakRss: number; coordinatorCpuSeconds: number }> {
    resetPeakRss(coordinatorPid);
    const cpuBefore = procCpuSeconds(coordinatorPid);
    const start = process.hrtime.bigint();
    const upload = await uploadStorePaths(pushClient, cache, [root]);
    return { ...upload, seconds: seconds(start), coordinatorPeakRss: procStatus(coordinatorPid, 'VmHWM'), coordinatorCpuSeconds: procCpuSeconds(coordinatorPid) - cpuBefore };
  }

  process.stderr.write('push: ingesting v0 from the Nix store into the local castore…\n');
  // Best of up to 3, each into a fresh cache (the last one is pushed from).
  const ingestRuns: number[] = [];
  for (let run = 0; run < Math.min(3, runs); run++) {
    if (run > 0) {
      cache.close();
      cache = LocalCastore.open(path.join(work, `push-cache-${run}`));
    }
    ingestRuns.push((await windowed(`ingest v0 ${run}`, () => ingestFromNix(v0Path))).seconds);
  }
  const ingestV0 = { seconds: Math.min(...ingestRuns), narBytes: cache.getStorePath(v0Path)!.narSize, runs: ingestRuns };
  const nixDump = { seconds: Infinity };
  for (let run = 0; run < runs; run++) {
    const start = process.hrtime.bigint();
    await runToDevNull('nix-store', ['--dump', v0Path], nixEnv);
    nixDump.seconds = Math.min(nixDump.seconds, seconds(start));
  }
  process.stderr.write('push: uploading v0 to the empty coordinator…\n');
  const pushV0 = await windowed('push v0', () => push(v0Path));
  if (pushClient.transportKind !== 'quic') throw new Error(`the push went over ${pushClient.transportKind}`);
  const ingestV1 = await windowed('ingest v1', () => ingestFromNix(v1Path));
  process.stderr.write('push: uploading v1 (10% of the files changed)…\n');
  const pushV1 = await windowed('push v1', () => push(v1Path));
  const pushAgain = await push(v1Path);
  await pushClient.close();
  cache.close();
  const narBytes = pushV0.closureNarBytes;
  results.push = { ingestV0, ingestV1, nixDump, pushV0, pushV1, pushAgain: { bytesSent: pushAgain.bytesSent, seconds: pushAgain.seconds } };

  // ---- fetch: an enrolled agent, cold, over QUIC and HTTP; nix copy from a binary cache ------

  const { configId } = await adminClient.call('graphs.submit', { graph: 'bench', ...signedConfig(admin, 'bench', [], { 'x86_64-linux': v0Path }) });
  const agent = Identity.generate();
  const agentKeyFile = path.join(work, 'agent.key');
  writeFileSync(agentKeyFile, agent.toKeyFile(), { mode: 0o600 });
  const { token } = await adminClient.call('tokens.create', { uses: 1, autoApprove: true });
  await new CoordinatorHttpClient(coordinator.url, agent).call('enroll', { token, name: 'bench-agent', facts: { system: 'x86_64-linux', hostname: 'bench' } });
  await adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'bench' });

  interface FetchResult {
    run: number;
    seconds: number;
    cpuSeconds: { user: number; system: number };
    phases: Record<string, number>;
    heapUsedBytes: number;
    externalBytes: number;
    coordinatorCpuSeconds: number;
    transport: string;
    /** DataClient notices: retried requests. */
    notices: string[];
    /** Bytes the client received on the wire (DataClient.wireBytes). */
    wireBytesReceived?: number;
    fetchedStorePaths: number;
    fetchedBlobs: number;
    fetchedBytes: number;
    fetchedDirectories: number;
    rssBeforeBytes: number;
    maxRssBytes: number;
    coordinatorPeakRss: number;
  }
  // The clients run compiled (`tsc -p tsconfig.bench.json`, which `npm run bench:data-plane` does),
  // with the flags the agent runs with: they measure the fetch as an agent does it.
  const compiledFixture = (name: string) => {
    const file = path.join(repo, 'build', 'bench', 'fixtures', `${name}.js`);
    if (!existsSync(file)) throw new Error(`${file} is missing: run \`npx tsc -p tsconfig.bench.json\` (npm run bench:data-plane does)`);
    return file;
  };
  const { nodeFlags: clientFlags, environment: clientEnvironment } = agentUnit(repo);
  const fetchChild = compiledFixture('fetch-child');
  // With BENCH_KEEP=1, what it takes to fetch again by hand (against `ferry coordinator serve` on the kept dir).
  writeFileSync(path.join(work, 'fetch-env.json'), `${JSON.stringify({ BENCH_KEY_FILE: agentKeyFile, BENCH_FINGERPRINT: coordinator.fingerprint, BENCH_CONFIG: configId }, null, 2)}\n`);
  /** Fetches still running after fetchTimeoutMs (a QUIC reply that never came): killed, counted, left out of the best-of. */
  const stalls: { what: string; run: number; rssBytes: number }[] = [];
  const fetchTimeoutMs = Number(process.env.BENCH_FETCH_TIMEOUT_MS ?? 30_000);
  /** Runs a client child; its stdout, or undefined when it was still running after fetchTimeoutMs (killed). */
  /** quic; http: the fallback in clear; https: the fallback as agents with a tls=pinned join string use it. */
  type Transport = 'quic' | 'quic+zstd' | 'http' | 'https';
  const carriedOver = (transport: Transport) => (transport.startsWith('quic') ? 'quic' : 'http');
  function runClient(script: string, name: string, transport: Transport, run: number, extraEnv: NodeJS.ProcessEnv): Promise<string | undefined> {
    const childEnv = {
      ...process.env,
      ...clientEnvironment,
      ...extraEnv,
      BENCH_URL: coordinator.url,
      BENCH_KEY_FILE: agentKeyFile,
      BENCH_FINGERPRINT: coordinator.fingerprint,
      BENCH_CONFIG: configId,
      BENCH_HTTP_ONLY: transport.startsWith('quic') ? '0' : '1',
      BENCH_COMPRESSION: transport === 'quic+zstd' ? 'zstd' : 'off',
      BENCH_PINNED_TLS: transport === 'https' ? '1' : '0',
    };
    const label = `${name} ${transport.replace('+', '-')}`;
    return new Promise<string | undefined>((resolve, reject) => {
      const child = spawn(process.execPath, [...profileArgs(`${label.replace(' ', '-')}-${run}`), ...clientFlags, script], {
        env: childEnv,
        cwd: repo,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      forwardWarnings(child.stderr, `${name} client`);
      let text = '';
      let stalled = false;
      // DataClient has no per-request timeout: a QUIC reply that never arrives waits forever.
      const timer = setTimeout(() => {
        stalled = true;
        stalls.push({ what: label, run, rssBytes: procStatus(child.pid!, 'VmRSS') });
        process.stderr.write(`${label} of run ${run + 1} did not finish within ${fetchTimeoutMs / 1000} s; killed\n`);
        child.kill('SIGKILL');
      }, fetchTimeoutMs);
      child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
      child.on('error', reject);
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (stalled) resolve(undefined);
        else if (code === 0) resolve(text);
        else reject(new Error(`${label} child exited with ${code}`));
      });
    });
  }

  async function ferryFetch(transport: Transport, storeDir: string, run: number): Promise<FetchResult | undefined> {
    resetPeakRss(coordinatorPid);
    const cpuBefore = procCpuSeconds(coordinatorPid);
    const out = await runClient(fetchChild, 'fetch', transport, run, { BENCH_STORE_DIR: storeDir });
    if (out === undefined) return undefined;
    const result: FetchResult = {
      ...(JSON.parse(out) as Omit<FetchResult, 'coordinatorPeakRss' | 'coordinatorCpuSeconds' | 'run'>),
      run,
      coordinatorPeakRss: procStatus(coordinatorPid, 'VmHWM'),
      coordinatorCpuSeconds: procCpuSeconds(coordinatorPid) - cpuBefore,
    };
    if (result.transport !== carriedOver(transport)) throw new Error(`the fetch went over ${result.transport}`);
    if (result.fetchedStorePaths !== 1) throw new Error(`the fetch registered ${result.fetchedStorePaths} store paths`);
    return result;
  }

  interface DrainResult {
    seconds: number;
    receivedBytes: number;
    transport: string;
    notices: string[];
    maxRssBytes: number;
    coordinatorCpuSeconds: number;
  }
  const drainChild = compiledFixture('drain-child');
  /** The transport alone: the same requests as a fetch, bytes dropped (no verification, no storage). */
  async function drain(transport: 'quic' | 'http', run: number): Promise<DrainResult | undefined> {
    const cpuBefore = procCpuSeconds(coordinatorPid);
    const out = await runClient(drainChild, 'drain', transport, run, {});
    if (out === undefined) return undefined;
    const result: DrainResult = { ...(JSON.parse(out) as Omit<DrainResult, 'coordinatorCpuSeconds'>), coordinatorCpuSeconds: procCpuSeconds(coordinatorPid) - cpuBefore };
    if (result.transport !== transport) throw new Error(`the drain went over ${result.transport}`);
    return result;
  }

  /** The fetched store path exports to the NAR Nix has (checked once per transport, untimed). */
  async function checkFetched(storeDir: string): Promise<void> {
    const store = LocalCastore.open(storeDir);
    try {
      const info = store.getStorePath(v0Path);
      if (!info) throw new Error(`${v0Path} is not registered after the fetch`);
      const exported = await narHash(exportNar(store, info.root));
      const [nixInfo] = await queryPathInfos([v0Path]);
      if (exported.narHash !== nixInfo!.narHash || exported.narSize !== nixInfo!.narSize) throw new Error('the fetched closure does not export to the NAR Nix has');
    } finally {
      store.close();
    }
  }

  // The reference: a compression=none binary cache, served by a node:http static file server in this process.
  const binaryCache = path.join(work, 'binary-cache');
  execFileSync('nix', ['copy', '--to', `file://${binaryCache}?compression=none`, v0Path], { env: nixEnv, stdio: 'inherit' });
  const server: Server = createServer((request, response) => {
    const file = path.join(binaryCache, path.normalize(decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname)));
    if (!file.startsWith(binaryCache) || !existsSync(file) || !statSync(file).isFile()) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-length': statSync(file).size, 'content-type': 'application/octet-stream' });
    if (request.method === 'HEAD') response.end();
    else createReadStream(file, { highWaterMark: 1 << 20 }).pipe(response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cacheUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // Every run writes into a fresh directory, and none is deleted before the end: this root file
  // system is ext4 without a journal, where creating files within 30 s of deleting many
  // (recently_deleted() in the inode allocator) costs seconds of system time: deleting the
  // previous run's 20,000 files made the next `nix copy` 2-5x slower.
  const destinations = path.join(work, 'destinations');
  async function nixCopy(run: number): Promise<number> {
    const root = path.join(destinations, `nix-${run}`);
    const start = process.hrtime.bigint();
    await runToDevNull('nix', ['copy', '--no-check-sigs', '--from', cacheUrl, '--to', `local?root=${root}`, v0Path], nixEnv);
    const elapsed = seconds(start);
    if (!existsSync(path.join(root, v0Path.slice(1)))) throw new Error('nix copy did not create the store path');
    return elapsed;
  }

  const fetches: Record<Transport, FetchResult[]> & { nix: number[] } = { quic: [], 'quic+zstd': [], http: [], https: [], nix: [] };
  const drains: { quic: DrainResult[]; http: DrainResult[] } = { quic: [], http: [] };
  /**
   * Each measured transfer starts with nothing left to write back: the one before it wrote
   * ~190 MiB (and nix copy 20,000 files), and a transfer that runs while the kernel flushes
   * that pays for it (a QUIC fetch right after nix copy spent 1.2–1.5 s in the kernel, against
   * 0.2 s on a settled disk).
   */
  const settleDisk = () => execFileSync('sync');
  for (let run = 0; run < runs; run++) {
    process.stderr.write(`fetch: run ${run + 1} of ${runs} (QUIC, HTTP, pinned HTTPS, transport only, nix copy)…\n`);
    for (const transport of ['quic', 'quic+zstd', 'http', 'https'] as const) {
      const storeDir = path.join(destinations, `agent-${transport.replace('+', '-')}-${run}`);
      settleDisk();
      const result = await windowed(`fetch ${transport} ${run}`, () => ferryFetch(transport, storeDir, run));
      if (!result) continue;
      fetches[transport].push(result);
      if (fetches[transport].length === 1) await checkFetched(storeDir);
    }
    for (const transport of ['quic', 'http'] as const) {
      settleDisk();
      const result = await windowed(`drain ${transport} ${run}`, () => drain(transport, run));
      if (result) drains[transport].push(result);
    }
    settleDisk();
    fetches.nix.push(await windowed(`nix copy ${run}`, () => nixCopy(run)));
  }
  server.close();
  rmSync(destinations, { recursive: true, force: true });
  results.fetch = { ...fetches, drains, stalls };
  if (fetches.quic.length === 0 || fetches.http.length === 0 || fetches.https.length === 0) throw new Error(`every fetch stalled: ${JSON.stringify(stalls)}`);

  // ---- the table ---------------------------------------------------------------------------------

  const best = <T>(items: T[], key: (item: T) => number): T => items.reduce((a, b) => (key(b) < key(a) ? b : a));
  const nixBest = Math.min(...fetches.nix);
  const quic = best(fetches.quic, (result) => result.seconds);
  const http = best(fetches.http, (result) => result.seconds);
  const https = best(fetches.https, (result) => result.seconds);
  const all = (values: number[]) => values.map((value) => value.toFixed(2)).join(' / ');
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  /** Retried requests over all runs, e.g. "2 runs retried 16 requests (stream failed: flow control error)". */
  const retries = (list: { notices: string[] }[]) => {
    const retried = list.filter((result) => result.notices.length > 0);
    if (retried.length === 0) return 'no retries';
    const causes = [...new Set(retried.flatMap((result) => result.notices.map((notice) => /\(([^)]*)\)/.exec(notice)?.[1] ?? notice)))];
    return `${retried.length} of ${list.length} runs retried ${retried.reduce((sum, result) => sum + result.notices.length, 0)} requests (${causes.join('; ')})`;
  };
  const fetchRow = (what: string, list: FetchResult[], chosen: FetchResult, target: string) => ({
    what,
    value: `${chosen.seconds.toFixed(3)} s`,
    rate: mbPerSecond(narBytes, chosen.seconds),
    // Best vs best, and the median of the ratios within each run (nix copy ran right after this fetch).
    ratio: `${(nixBest / chosen.seconds).toFixed(2)}x nix (per-run median ${median(list.map((result) => fetches.nix[result.run]! / result.seconds)).toFixed(2)}x)`,
    target,
    detail: `runs ${all(list.map((result) => result.seconds))} s; CPU client ${(chosen.cpuSeconds.user + chosen.cpuSeconds.system).toFixed(2)} s, coordinator ${chosen.coordinatorCpuSeconds.toFixed(2)} s; ${retries(list)}`,
  });
  const phaseDetail = (result: FetchResult) => {
    const at = (name: string) => result.phases[name] ?? result.seconds;
    return `connect ${at('connected').toFixed(2)}, manifest+dirs ${(at('blobs') - at('connected')).toFixed(2)}, blobs ${(at('registering') - at('blobs')).toFixed(2)}, register ${(result.seconds - at('registering')).toFixed(2)} s`;
  };
  const maxOf = (list: FetchResult[], key: (result: FetchResult) => number) => Math.max(...list.map(key));
  rows.push(
    { what: 'nix copy --from http:// (compression=none cache, node:http server) (reference)', value: `${nixBest.toFixed(3)} s`, rate: mbPerSecond(narBytes, nixBest), ratio: '1.00', target: '', detail: `runs ${all(fetches.nix)} s` },
    fetchRow('ferry cold fetch over QUIC (BLAKE3-verified)', fetches.quic, quic, '>= 2x nix'),
    ...(fetches['quic+zstd'].length > 0
      ? [
          fetchRow('ferry cold fetch over QUIC, zstd on the wire (coordinator cache warm after round 1)', fetches['quic+zstd'], best(fetches['quic+zstd'], (result) => result.seconds), 'no slower than QUIC'),
          {
            what: '  wire bytes of the QUIC fetch: raw / zstd',
            value: `${mib(quic.wireBytesReceived ?? 0)} / ${mib(fetches['quic+zstd'][0]!.wireBytesReceived ?? 0)}`,
            rate: '',
            ratio: '',
            target: '',
            detail: `NAR ${mib(narBytes)}; zstd round 1 (the coordinator compressing, cache cold) ${fetches['quic+zstd'][0]!.seconds.toFixed(2)} s, coordinator CPU ${fetches['quic+zstd'][0]!.coordinatorCpuSeconds.toFixed(2)} s`,
          },
        ]
      : []),
    { what: '  phases of that QUIC fetch', value: '', rate: '', ratio: '', target: '', detail: phaseDetail(quic) },
    fetchRow('ferry cold fetch over HTTP (httpOnly)', fetches.http, http, ''),
    { what: '  phases of that HTTP fetch', value: '', rate: '', ratio: '', target: '', detail: phaseDetail(http) },
    fetchRow('ferry cold fetch over pinned HTTPS (httpOnly, tls=pinned: the fallback agents use)', fetches.https, https, ''),
    ...(['quic', 'http'] as const)
      .filter((kind) => drains[kind].length > 0)
      .map((kind) => {
        const chosen = best(drains[kind], (result) => result.seconds);
        return {
          what: `transport only, ${kind.toUpperCase()}: the fetch's requests, bytes dropped`,
          value: `${chosen.seconds.toFixed(3)} s`,
          rate: mbPerSecond(narBytes, chosen.seconds),
          ratio: `${(nixBest / chosen.seconds).toFixed(2)}x nix`,
          target: '',
          detail: `runs ${all(drains[kind].map((result) => result.seconds))} s; coordinator CPU ${chosen.coordinatorCpuSeconds.toFixed(2)} s; client peak RSS ${mib(chosen.maxRssBytes)}; ${retries(drains[kind])}`,
        };
      }),
    ...(stalls.length > 0
      ? [
          {
            what: `STALLED fetches (not done after ${fetchTimeoutMs / 1000} s, killed)`,
            value: stalls.map((stall) => `${stall.what} run ${stall.run + 1}`).join(', '),
            rate: '',
            ratio: '',
            target: '',
            detail: `of ${runs} rounds; RSS when killed ${stalls.map((stall) => mib(stall.rssBytes)).join(', ')}`,
          },
        ]
      : []),
    { what: 'nix-store --dump of v0 (reference for ingest)', value: `${nixDump.seconds.toFixed(3)} s`, rate: mbPerSecond(narBytes, nixDump.seconds), ratio: '', target: '', detail: '' },
    {
      what: 'push: Nix store -> local castore ingest, v0',
      value: `${ingestV0.seconds.toFixed(3)} s`,
      rate: mbPerSecond(ingestV0.narBytes, ingestV0.seconds),
      ratio: '',
      target: '',
      detail: `runs ${all(ingestRuns)} s (nix-store --dump | NAR decode | BLAKE3 | pack files, NarHash checked)`,
    },
    {
      what: 'push: upload v0 to an empty coordinator (QUIC)',
      value: `${pushV0.seconds.toFixed(3)} s`,
      rate: mbPerSecond(narBytes, pushV0.seconds),
      ratio: `${(nixBest / pushV0.seconds).toFixed(2)}x nix copy`,
      target: '',
      detail: `${pushV0.blobsSent} blobs, ${pushV0.directoriesSent} dirs, ${pushV0.bytesSent} B; coordinator CPU ${pushV0.coordinatorCpuSeconds.toFixed(2)} s`,
    },
    { what: 'push: Nix store -> local castore ingest, v1', value: `${ingestV1.seconds.toFixed(3)} s`, rate: mbPerSecond(ingestV1.narBytes, ingestV1.seconds), ratio: '', target: '', detail: '' },
    {
      what: 'push: upload v1 (10% of files changed): bytesSent / closureNarBytes',
      value: `${pushV1.bytesSent} / ${pushV1.closureNarBytes} B`,
      rate: `${((100 * pushV1.bytesSent) / pushV1.closureNarBytes).toFixed(1)} %`,
      ratio: '',
      target: '<= 15 %',
      detail: `${pushV1.seconds.toFixed(3)} s; ${pushV1.blobsSent} blobs, ${pushV1.directoriesSent} dirs`,
    },
    { what: 'push: v1 again (nothing to send)', value: `${pushAgain.bytesSent} B`, rate: '', ratio: '', target: '', detail: `${pushAgain.seconds.toFixed(3)} s` },
    {
      what: 'peak RSS, fetching client, QUIC / HTTP / pinned HTTPS (max of runs)',
      value: `${mib(maxOf(fetches.quic, (r) => r.maxRssBytes))} / ${mib(maxOf(fetches.http, (r) => r.maxRssBytes))} / ${mib(maxOf(fetches.https, (r) => r.maxRssBytes))}`,
      rate: '',
      ratio: '',
      target: '< 200 MB',
      detail: `after loading ${mib(quic.rssBeforeBytes)}; peak V8 heap ${mib(maxOf(fetches.quic, (r) => r.heapUsedBytes))} / ${mib(maxOf(fetches.http, (r) => r.heapUsedBytes))}, Buffers ${mib(maxOf(fetches.quic, (r) => r.externalBytes))} / ${mib(maxOf(fetches.http, (r) => r.externalBytes))}`,
    },
    {
      what: 'peak RSS, coordinator serving the fetch, QUIC / HTTP (max of runs)',
      value: `${mib(maxOf(fetches.quic, (r) => r.coordinatorPeakRss))} / ${mib(maxOf(fetches.http, (r) => r.coordinatorPeakRss))}`,
      rate: '',
      ratio: '',
      target: '',
      detail: `idle after start ${mib(coordinatorIdleRss)}`,
    },
    ...(Object.values(listenerWarnings).some((count) => count > 0)
      ? [
          {
            what: 'MaxListenersExceededWarning (QuicStream close listeners), count',
            value: Object.entries(listenerWarnings).map(([who, count]) => `${who} ${count}`).join(', '),
            rate: '',
            ratio: '',
            target: '',
            detail: 'a writer adds a close listener per backpressured write',
          },
        ]
      : []),
    { what: 'peak RSS, coordinator receiving push v0 / v1', value: `${mib(pushV0.coordinatorPeakRss)} / ${mib(pushV1.coordinatorPeakRss)}`, rate: '', ratio: '', target: '', detail: '' },
  );
} finally {
  await stopCoordinator();
  if (process.env.BENCH_KEEP !== '1') rmSync(work, { recursive: true, force: true });
  else process.stderr.write(`kept ${work}\n`);
}
report('data-plane', rows);
writeFileSync(path.join(benchWorkDir, 'results', 'data-plane-raw.json'), `${JSON.stringify({ date: new Date().toISOString(), coordinator: fromBuild ? 'build' : 'source', windows, listenerWarnings, ...results }, null, 2)}\n`);
