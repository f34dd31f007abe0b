/**
 * The audit-log viewer with 100,000 events, measured in headless Chromium:
 * 1. a real coordinator (SQLite file) whose log the seeded fleet simulator
 *    (test/fleet-simulator.ts simulateFleet) fills to >= 100,000 events;
 *    generated once and kept under bench/.work/viewer-<N>/ (delete to redo);
 * 2. the server side, cold: `POST /viewer/api/session` (what `ferry audit
 *    view` calls) indexes the whole log — timeline, a snapshot every 500
 *    events, replay with the reducer — and verifies the chain; its time and
 *    the heap it adds;
 * 3. time to first render: from `page.goto(login link)` until the page has
 *    rendered the latest position (timeline, event, fleet) — best and worst
 *    of 5 fresh page loads (each a new login);
 * 4. time to jump to an arbitrary event: typing a seq into the page's "go
 *    to" box until that position is rendered, 30 seeded random positions;
 *    and the server's own `stateAt` for the same positions.
 * Targets: first render and jump < 1 s each.
 * Run: npm run bench:viewer   (BENCH_EVENTS=... for another log size)
 */
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Coordinator } from '../coordinator/coordinator.js';
import { startHttpServer } from '../coordinator/server.js';
import { liveLogSource, Viewer } from '../coordinator/viewer/index.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { addStorePath, bootstrap, simulateFleet } from '../test/fleet-simulator.js';
import { seededRandom } from '../test/seeded-random.js';
import { benchWorkDir } from './fixtures/big-closure.js';
import { report } from './harness.js';

const TARGET_EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const FIRST_RENDERS = 5;
const JUMPS = 30;

const seconds = (from: bigint): number => Number(process.hrtime.bigint() - from) / 1e9;
const ms = (s: number): string => `${(s * 1000).toFixed(0)} ms`;
const met = (ok: boolean, target: string): string => `${target} — ${ok ? 'met' : 'NOT MET'}`;
const quantile = (values: number[], q: number): number => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;

/** A coordinator data dir with >= TARGET_EVENTS events and its admin key, made once. */
async function fixture(): Promise<{ dataDir: string; adminKeyFile: string }> {
  const root = path.join(benchWorkDir, `viewer-${TARGET_EVENTS}`);
  const dataDir = path.join(root, 'coordinator');
  const adminKeyFile = path.join(root, 'admin.key');
  if (existsSync(path.join(root, 'done'))) return { dataDir, adminKeyFile };
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const building = `${dataDir}.building`;
  const coordinator = Coordinator.open(building);
  const { admin, adminActor } = bootstrap(coordinator);
  writeFileSync(adminKeyFile, admin.toKeyFile(), { mode: 0o600 });
  const storePaths = [];
  for (let i = 0; i < 8; i++) storePaths.push(await addStorePath(coordinator, `app-${i}`));
  const start = process.hrtime.bigint();
  for (let seed = 1; coordinator.lastSeq < TARGET_EVENTS; seed++) {
    simulateFleet(coordinator, adminActor, admin, storePaths, Math.min(20_000, Math.ceil((TARGET_EVENTS - coordinator.lastSeq) * 1.4)), seed);
    process.stdout.write(`  generated ${coordinator.lastSeq} events (${seconds(start).toFixed(0)} s)\n`);
  }
  coordinator.checkpoint();
  coordinator.close();
  renameSync(building, dataDir);
  writeFileSync(path.join(root, 'done'), `${new Date().toISOString()}\n`);
  return { dataDir, adminKeyFile };
}

async function main(): Promise<void> {
  if (!existsSync('/usr/bin/chromium')) throw new Error('/usr/bin/chromium is missing (apt-get install -y chromium)');
  process.stdout.write(`fixture: a coordinator with ${TARGET_EVENTS.toLocaleString('en-US')} events\n`);
  const { dataDir, adminKeyFile } = await fixture();
  const coordinator = Coordinator.open(dataDir);
  const admin: Identity = loadIdentity(adminKeyFile);
  const events = coordinator.lastSeq;
  const server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: () => undefined });
  const client = new CoordinatorHttpClient(server.url, admin);
  const rows: Record<string, string | number>[] = [];
  try {
    // Server side, cold: the login-link call indexes and verifies the whole log.
    global.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    let start = process.hrtime.bigint();
    const first = await client.call('viewer.session');
    const coldIndex = seconds(start);
    global.gc?.();
    const heapAfter = process.memoryUsage().heapUsed;
    rows.push({ what: `index + verify ${events.toLocaleString('en-US')} events (server, cold: first \`ferry audit view\`)`, value: ms(coldIndex), target: '' });
    rows.push({ what: 'heap added by the index (timeline, snapshots, replayed state)', value: `${((heapAfter - heapBefore) / 1024 / 1024).toFixed(0)} MiB${global.gc ? '' : ' (approx.: run with --expose-gc)'}`, target: '' });
    const verifyStart = process.hrtime.bigint();
    await coordinator.verifyAudit();
    rows.push({ what: '  of which: Coordinator.verifyAudit (chain + signed checkpoints)', value: ms(seconds(verifyStart)), target: '' });

    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
    try {
      // Time to first render: a fresh page, the login link, until the latest position is rendered.
      const firsts: number[] = [];
      let loginPath = first.loginPath;
      for (let i = 0; i < FIRST_RENDERS; i++) {
        if (i > 0) loginPath = (await client.call('viewer.session')).loginPath;
        const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
        const page = await context.newPage();
        start = process.hrtime.bigint();
        await page.goto(new URL(loginPath, server.url).toString());
        await page.waitForSelector(`body[data-rendered-seq="${events}"]`, { timeout: 60_000 });
        firsts.push(seconds(start));
        if (i === FIRST_RENDERS - 1) {
          mkdirSync(path.join(benchWorkDir, 'results'), { recursive: true });
          await page.screenshot({ path: path.join(benchWorkDir, 'results', 'viewer-100k.png') });
        }
        await context.close();
      }
      const firstWorst = Math.max(...firsts);
      rows.push({ what: `time to first render (login link → latest position rendered), best of ${FIRST_RENDERS}`, value: ms(Math.min(...firsts)), target: '' });
      rows.push({ what: `time to first render, worst of ${FIRST_RENDERS}`, value: ms(firstWorst), target: met(firstWorst < 1, '< 1 s') });

      // Jumps: type a seq, press Enter, until rendered.
      const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
      const page = await context.newPage();
      await page.goto(new URL((await client.call('viewer.session')).loginPath, server.url).toString());
      await page.waitForSelector(`body[data-rendered-seq="${events}"]`, { timeout: 60_000 });
      const random = seededRandom(4242);
      const positions = Array.from({ length: JUMPS }, () => 1 + random(events));
      const jumps: number[] = [];
      for (const seq of positions) {
        start = process.hrtime.bigint();
        await page.fill('#goto-input', String(seq));
        await page.press('#goto-input', 'Enter');
        await page.waitForSelector(`body[data-rendered-seq="${seq}"]`, { timeout: 30_000 });
        jumps.push(seconds(start));
      }
      const jumpWorst = Math.max(...jumps);
      rows.push({ what: `jump to an arbitrary event in the browser (${JUMPS} random seqs), median`, value: ms(quantile(jumps, 0.5)), target: '' });
      rows.push({ what: 'jump, 90th percentile', value: ms(quantile(jumps, 0.9)), target: '' });
      rows.push({ what: 'jump, worst', value: ms(jumpWorst), target: met(jumpWorst < 1, '< 1 s') });
      // One step back (restores a snapshot and replays up to 999 events).
      const last = positions.at(-1)!;
      start = process.hrtime.bigint();
      await page.click('#back');
      await page.waitForSelector(`body[data-rendered-seq="${last - 1}"]`, { timeout: 30_000 });
      rows.push({ what: 'step back one event in the browser', value: ms(seconds(start)), target: '' });
      rows.push({ what: '  of which (in the page): fetching / building the page', value: `${await page.evaluate('document.body.dataset.fetchMs')} ms / ${await page.evaluate('document.body.dataset.renderMs')} ms`, target: '' });
      await context.close();

      // The server's replay alone, for the same positions (a second viewer, so nothing is cached).
      const viewer = new Viewer(liveLogSource(coordinator));
      await viewer.ready();
      const replays: number[] = [];
      for (const seq of positions) {
        start = process.hrtime.bigint();
        viewer.state(seq);
        replays.push(seconds(start));
      }
      rows.push({ what: `server: state at a random seq (snapshot + ≤ ${viewer.replayIndex.snapshotEvery - 1} events + view), median / worst`, value: `${ms(quantile(replays, 0.5))} / ${ms(Math.max(...replays))}`, target: '' });
      rows.push({ what: 'snapshots kept', value: viewer.replayIndex.snapshotCount, target: '' });
    } finally {
      await browser.close();
    }
  } finally {
    await server.close();
    coordinator.close();
  }
  rows.push({ what: `machine: ${cpus().length} CPUs, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' / ')} (1 / 5 / 15 min)`, value: '', target: '' });
  report('viewer', rows);
}

await main();
