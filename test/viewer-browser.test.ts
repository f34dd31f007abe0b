// The web viewer in headless Chromium (Debian's `chromium`, driven by
// playwright-core): a coordinator with a scripted history (enroll, approve,
// push, submit, activate, fail, rollback); log in with the link `ferry audit
// view` prints; step, scrub, play and jump by URL; at several positions the
// fleet the page shows must equal `ferry audit replay --at N --json`. Then a
// row of the database is edited behind the coordinator's back, and the page
// must show the break at that seq; the same export is viewed offline. The
// live fleet page shows presence and health, and updates without a reload
// when an agent reports its health or the coordinator records it offline.
// Screenshots go to test-artifacts/.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { recordPresence } from '../coordinator/domain/commands.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { coordinatorActor } from './fleet-simulator.js';
import type { StateResult } from '../protocol/api/viewer-views.js';
import { startScriptedCoordinator, type ScriptedCoordinator } from './viewer-fixture.js';

/** Debian's chromium (FERRY_CHROMIUM overrides the path). */
const CHROMIUM = process.env.FERRY_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const ferryBin = path.join(root, 'bin', 'ferry');
const artifacts = path.join(root, 'test-artifacts');

/** Why the browser test cannot run here, or undefined. With FERRY_REQUIRE_BROWSER=1 (CI) it fails instead of skipping. */
function browserUnavailableReason(): string | undefined {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install -y chromium)`;
  return undefined;
}
const unavailable = browserUnavailableReason();
const required = process.env.FERRY_REQUIRE_BROWSER === '1';
if (unavailable && !required) process.stderr.write(`viewer-browser.test.ts: skipped: ${unavailable}\n`);

/** What the page shows of the fleet, read from the DOM. */
const SCRAPE_FLEET = `(() => {
  const text = (root, selector) => (root.querySelector(selector)?.textContent ?? '').trim();
  return {
    agents: [...document.querySelectorAll('#agents tbody tr')].map((tr) => ({
      id: tr.dataset.agentId, name: text(tr, '.name'), status: text(tr, '.status'), phase: text(tr, '.phase'),
      desired: text(tr, 'td.desired'), current: text(tr, 'td.current'), presence: text(tr, 'td.presence'), health: text(tr, 'td.health'),
    })),
    graphs: [...document.querySelectorAll('div.graph')].map((g) => ({ id: g.dataset.graph, head: text(g, 'code.head') })),
    configs: [...document.querySelectorAll('#configs tbody tr')].map((tr) => ({
      id: tr.dataset.configId, succeeded: text(tr, '.succeeded'), failed: text(tr, '.failed'), pending: text(tr, '.pending'), unreported: text(tr, '.unreported'),
    })),
  };
})()`;

const short = (id: string | null): string => (id ? id.slice(0, 12) : '-');

/** The same, from `ferry audit replay --json`. */
function expectedFleet(result: StateResult) {
  return {
    agents: result.state.agents.rows.map((a) => ({
      id: a.id,
      name: a.name,
      status: a.status,
      phase: a.phase ?? '-',
      desired: short(a.desiredConfig),
      current: short(a.currentConfig),
      presence: a.recordedPresence ?? '-',
      health: a.health ?? '-',
    })),
    graphs: result.state.graphs.map((g) => ({ id: g.id, head: short(g.head) })),
    configs: result.state.configs.rows.map((c) => ({
      id: c.id,
      succeeded: String(c.summary.succeeded),
      failed: String(c.summary.failed),
      pending: String(c.summary.pending),
      unreported: String(c.summary.unreported),
    })),
  };
}

describe.skipIf(unavailable !== undefined && !required)('the web viewer in headless Chromium', () => {
  let scripted: ScriptedCoordinator;
  let browser: Browser;
  let env: NodeJS.ProcessEnv;
  const children: ChildProcess[] = [];

  // Asynchronous: the coordinator serves the CLI from this very process.
  function ferry(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [ferryBin, ...args], { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
      });
    });
  }
  async function replayJson(seq: number, extra: string[] = []): Promise<StateResult> {
    const replay = await ferry(['audit', 'replay', '--at', String(seq), '--json', ...extra]);
    expect(replay.status, replay.stderr).toBe(0);
    return JSON.parse(replay.stdout) as StateResult;
  }
  async function loginLink(): Promise<string> {
    const view = await ferry(['audit', 'view', '--json']);
    expect(view.status, view.stderr).toBe(0);
    return (JSON.parse(view.stdout) as { url: string }).url;
  }
  const rendered = (page: Page, seq: number) => page.waitForSelector(`body[data-rendered-seq="${seq}"]`, { timeout: 15_000 });
  async function expectFleetAt(page: Page, seq: number, extra: string[] = []): Promise<void> {
    await rendered(page, seq);
    expect(new URL(page.url()).hash).toBe(`#seq=${seq}`);
    expect(await page.evaluate(SCRAPE_FLEET), `fleet at ${seq}`).toEqual(expectedFleet(await replayJson(seq, extra)));
  }
  const shot = (page: Page, name: string) => page.screenshot({ path: path.join(artifacts, `viewer-${name}.png`), fullPage: true });

  beforeAll(async () => {
    if (unavailable) throw new Error(`FERRY_REQUIRE_BROWSER=1 but ${unavailable}`);
    mkdirSync(artifacts, { recursive: true });
    scripted = await startScriptedCoordinator();
    env = { ...process.env, FERRY_CONFIG_DIR: path.join(scripted.dir, 'config'), FERRY_URL: scripted.http.url, FERRY_KEY: scripted.viewerKeyFile };
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    for (const child of children) child.kill('SIGTERM');
    await browser?.close();
    await scripted?.close();
  });

  it('logs in with the link from `ferry audit view`, steps, scrubs, plays; each position equals `ferry audit replay`', async () => {
    const { marks } = scripted;
    const last = scripted.coordinator.lastSeq;
    const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(await loginLink());
    expect(new URL(page.url()).pathname).toBe('/viewer/');
    await expectFleetAt(page, last);
    await expect(page.locator('#verification').textContent()).resolves.toMatch(new RegExp(`chain verified through seq ${last}`));
    await shot(page, '1-latest');

    // Each config's closure diff against its parent (the live coordinator's castore), asked for when opened:
    // edge's second config moved app-1.0 to app-2.0, as `nix store diff-closures` would print it.
    const diffCells = page.locator('.graph[data-graph="edge"] .config-diff-cell summary');
    expect(await diffCells.count()).toBeGreaterThanOrEqual(2);
    for (let index = 0; index < (await diffCells.count()); index++) await diffCells.nth(index).click();
    const loaded = page.locator('.graph[data-graph="edge"] .config-diff[data-loaded="1"]');
    await loaded.nth(1).waitFor();
    const lines = await page.locator('.graph[data-graph="edge"] .config-diff .diff-lines').allTextContents();
    expect(lines).toContain('app: 1.0 → 2.0');
    await shot(page, '1b-closure-diff');

    // Jump by typing a seq.
    await page.fill('#goto-input', String(marks.enroll));
    await page.press('#goto-input', 'Enter');
    await expectFleetAt(page, marks.enroll!);
    expect(await page.locator('#event-title').textContent()).toBe(`#${marks.enroll} agent.enroll`);
    await shot(page, '2-enrolled');

    // Step forward and back with the buttons.
    await page.fill('#goto-input', String(marks.fail! - 2));
    await page.press('#goto-input', 'Enter');
    await expectFleetAt(page, marks.fail! - 2);
    await page.click('#forward');
    await rendered(page, marks.fail! - 1);
    await page.click('#forward');
    await expectFleetAt(page, marks.fail!);
    const diff = await page.locator('#diff').textContent();
    expect(diff).toContain('agents');
    expect(diff).toContain('health check failed: bin/check exited with 1');
    await expect(page.locator('#event-verification').getAttribute('data-state')).resolves.toBe('verified');
    await shot(page, '3-failed');
    await page.click('#back');
    await expectFleetAt(page, marks.fail! - 1);
    await page.keyboard.press('ArrowRight');
    await rendered(page, marks.fail!);

    // The scrubber.
    await page.locator('#scrubber').fill(String(marks.activate1));
    await expectFleetAt(page, marks.activate1!);

    // A shared URL opens at its position (the browser's back button goes to the previous one).
    const shared = await context.newPage();
    await shared.goto(`${new URL(page.url()).origin}/viewer/#seq=${marks.graphRollback}`);
    await expectFleetAt(shared, marks.graphRollback!);
    await shot(shared, '4-graph-rollback');
    await shared.close();
    await page.goBack();
    await rendered(page, marks.fail!);

    // Play from the rollback to the end.
    await page.fill('#goto-input', String(marks.graphRollback));
    await page.press('#goto-input', 'Enter');
    await rendered(page, marks.graphRollback!);
    await page.selectOption('#speed', '50');
    await page.click('#play');
    await rendered(page, last);
    await page.locator('#play', { hasText: 'Play' }).waitFor();
    await expectFleetAt(page, last);

    // Timeline filters: a search, and clicking an entry.
    await page.fill('#filters input[name=q]', 'bin/check exited');
    await page.click('#filters button[type=submit]');
    await page.waitForSelector(`#timeline li[data-seq="${marks.fail}"]`);
    expect(await page.locator('#timeline li').count()).toBe(1);
    await page.click(`#timeline li[data-seq="${marks.fail}"]`);
    await expectFleetAt(page, marks.fail!);
    expect(errors).toEqual([]);
    await context.close();
  }, 120_000);

  it('the live fleet page shows presence and health, and updates without a reload as events are recorded', async () => {
    const { coordinator } = scripted;
    const [gw1, gw2] = scripted.agents.map((agent) => agent.keyId);
    const head = coordinator.state.get('graphs', 'edge')!.head;
    const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(await loginLink());
    await rendered(page, coordinator.lastSeq);
    // From the audit log to the live page by its link, on the same session.
    await page.click('#to-live');
    await page.waitForSelector(`body[data-live-seq="${coordinator.lastSeq}"]`, { timeout: 15_000 });
    expect(new URL(page.url()).pathname).toBe('/viewer/live');
    await expect(page.locator('#live-status').getAttribute('data-state')).resolves.toBe('live');
    const agent = (id: string) => page.locator(`#live-agents tr[data-agent-id="${id}"]`);
    expect(await agent(gw2!).locator('td.presence').textContent()).toBe('online');
    expect(await agent(gw2!).locator('td.health').textContent()).toBe('-');
    expect(await agent(gw2!).locator('td.last-seen').textContent()).toMatch(/^\d+ s ago$/);
    const graph = page.locator('#live-graphs tr[data-graph="edge"]');
    expect(await graph.getAttribute('data-head')).toBe(head);
    expect(await graph.locator('td.succeeded').textContent()).toBe('2');
    expect(await graph.locator('td.degraded').textContent()).toBe('0');
    await shot(page, '7-live');

    // Whatever follows must change this document, not load another.
    await page.evaluate(`window.liveMarker = 'same document'`);
    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) navigations++;
    });

    // gw-2's periodic health check fails: the agent reports it, the page shows it.
    const answer = await new CoordinatorHttpClient(scripted.http.url, scripted.agents[1]!).call('agent.health', { configId: head, health: 'degraded', reason: 'app.service: inactive (dead)' });
    expect(answer.outcome).toBe('recorded');
    await page.waitForSelector(`body[data-live-seq="${answer.seq}"]`, { timeout: 10_000 });
    const health = agent(gw2!).locator('td.health');
    expect(await health.getAttribute('data-health')).toBe('degraded');
    expect(await health.textContent()).toBe('degraded app.service: inactive (dead)');
    expect(await health.getAttribute('title')).toMatch(/^degraded \(config .*\): app\.service: inactive \(dead\)$/);
    expect(await graph.locator('td.degraded').textContent()).toBe('1');
    expect(await page.locator('#live-health').textContent()).toMatch(/0 healthy, 1 degraded, 1 unchecked/);

    // The coordinator records gw-1 offline (as its sweep does): the log says offline, while gw-1 was heard from lately.
    const offline = coordinator.record(coordinatorActor(coordinator), (context) => recordPresence(context, { agentId: gw1!, presence: 'offline', lastSeen: null }))!;
    await page.waitForSelector(`body[data-live-seq="${offline.seq}"]`, { timeout: 10_000 });
    expect(await agent(gw1!).locator('td.presence').textContent()).toBe('online (log: offline)');
    await shot(page, '8-live-degraded');
    expect(navigations).toBe(0);
    expect(await page.evaluate('window.liveMarker')).toBe('same document');
    expect(Number(await page.locator('body').getAttribute('data-live-updates'))).toBeGreaterThanOrEqual(3);

    // A filter: only the degraded agent (the stream reopens with the query, which the URL keeps).
    await page.fill('#live-query', 'degraded');
    await page.press('#live-query', 'Enter');
    // Polled from here (a string predicate would be evaluated in the page, which the viewer's CSP forbids).
    await expect.poll(() => page.locator('#live-agents tbody tr').count(), { timeout: 10_000 }).toBe(1);
    expect(await page.locator('#live-agents tbody tr').getAttribute('data-agent-id')).toBe(gw2);
    expect(new URL(page.url()).hash).toBe('#q=degraded');

    // The audit log's fleet view shows the same, as recorded, at that position.
    await page.goto(`${new URL(page.url()).origin}/viewer/#seq=${offline.seq}`);
    await expectFleetAt(page, offline.seq);
    expect(await page.locator(`#agents tr[data-agent-id="${gw2}"] td.health`).textContent()).toBe('degraded');
    expect(await page.locator(`#agents tr[data-agent-id="${gw1}"] td.presence`).textContent()).toBe('offline');
    expect(errors).toEqual([]);
    await context.close();
  }, 120_000);

  it('shows where a tampered log breaks, live and from an export', async () => {
    const { marks } = scripted;
    // Someone edits a row behind the coordinator's back (bypassing the append-only triggers).
    const raw = new Database(Coordinator.paths(scripted.dataDir).database);
    raw.exec('DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete;');
    raw.prepare(`UPDATE audit_events SET payload = replace(payload, 'bin/check exited with 1', 'all fine') WHERE seq = ?`).run(marks.fail);
    raw.close();
    await scripted.restart();

    const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    const page = await context.newPage();
    await page.goto(await loginLink());
    await rendered(page, scripted.coordinator.lastSeq);
    const badge = page.locator('#verification');
    await expect(badge.getAttribute('data-broken-seq')).resolves.toBe(String(marks.fail));
    expect(await badge.textContent()).toMatch(new RegExp(`BROKEN at seq ${marks.fail}: .*edited.* chain verified through seq ${marks.fail! - 1}`));
    await badge.click();
    await rendered(page, marks.fail!);
    await expect(page.locator('#event-verification').getAttribute('data-state')).resolves.toBe('broken');
    expect(await page.locator(`#timeline li[data-seq="${marks.fail}"]`).getAttribute('class')).toContain('broken');
    expect(await page.locator(`#timeline li[data-seq="${marks.fail! + 1}"]`).getAttribute('class')).toContain('after-break');
    expect(await page.locator('#payload').textContent()).toContain('all fine');
    await shot(page, '5-tampered');
    await context.close();

    // The same log exported and viewed offline with the coordinator key: the same break, the same fleet.
    const exportFile = path.join(scripted.dir, 'audit.jsonl');
    const exported = await ferry(['audit', 'export', '-o', exportFile]);
    expect(exported.status, exported.stderr).toBe(0);
    const pubkey = scripted.coordinator.identity.keyId;
    const server = spawn(process.execPath, [ferryBin, 'audit', 'view', '--file', exportFile, '--pubkey', pubkey, '--listen', '127.0.0.1:0', '--json'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(server);
    const started = await new Promise<{ url: string }>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        try {
          resolve(JSON.parse(out) as { url: string });
        } catch {
          // not all of it yet
        }
      });
      server.on('exit', (code) => reject(new Error(`ferry audit view --file exited with ${code}: ${out}`)));
    });
    const offline = await (await browser.newContext({ viewport: { width: 1600, height: 1000 } })).newPage();
    await offline.goto(started.url);
    await rendered(offline, scripted.coordinator.lastSeq);
    await expect(offline.locator('#verification').getAttribute('data-broken-seq')).resolves.toBe(String(marks.fail));
    await offline.goto(`${new URL(started.url).origin}/viewer/#seq=${marks.activate1}`);
    await expectFleetAt(offline, marks.activate1!, ['--file', exportFile, '--pubkey', pubkey]);
    expect(await offline.locator('.mode').textContent()).toContain('offline');
    await shot(offline, '6-offline-export');
  }, 120_000);
});
