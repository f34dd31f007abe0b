/**
 * The live fleet page at 10,000 agents (coordinator/viewer/live-fleet.ts,
 * live-streams.ts), in process on a real coordinator (SQLite file):
 * 1. a fleet of BENCH_AGENTS agents enrolled, approved, following one
 *    graph, most active on its head, some fetching, failed or degraded,
 *    all heard from (presence);
 * 2. one reading of the fleet (`fleetNow`: every agent row, its presence,
 *    desired config; every graph's rollout) — median and worst of 20;
 * 3. what a client is sent per update: the default page (100 agents) and
 *    the largest (500), as JSON bytes;
 * 4. a stream over real HTTP while 2,000 events commit as fast as the
 *    coordinator records them: how many messages, and bytes, it got, and
 *    how many readings of the fleet the coordinator made.
 * Targets: a message of a few hundred KiB at most, whatever the fleet's
 * size; at most ~2 messages a second under load.
 * Run: npx tsx bench/live-fleet.bench.ts   (BENCH_AGENTS=... for another size)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Coordinator } from '../coordinator/coordinator.js';
import * as commands from '../coordinator/domain/commands.js';
import type { Actor } from '../coordinator/domain/commands.js';
import { startHttpServer } from '../coordinator/server.js';
import { fleetNow, liveFleetPage } from '../coordinator/viewer/live-fleet.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { signedConfig } from '../test/data-plane-fixture.js';
import { addStorePath, bootstrap, coordinatorActor } from '../test/fleet-simulator.js';
import { report } from './harness.js';

const AGENTS = Number(process.env.BENCH_AGENTS ?? 10_000);
const BURST = 2000;
const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-live-bench-'));
const coordinator = Coordinator.open(path.join(dir, 'coordinator'), { checkpointEvery: 10_000 });
try {
  const { admin, adminActor } = bootstrap(coordinator);
  const storePath = await addStorePath(coordinator, 'app-1.0');
  const started = performance.now();
  const tokenText = coordinator.execute(adminActor, (context) => {
    const created = commands.createToken(context, { uses: AGENTS, autoApprove: true });
    return { draft: created.draft, result: created.token };
  })!.result;
  const config = signedConfig(admin, 'edge', [], { 'x86_64-linux': storePath }, 'app 1.0');
  coordinator.record(adminActor, (context) => commands.submitConfig(context, { ...config }));
  const head = coordinator.state.get('graphs', 'edge')!.head;
  for (let i = 0; i < AGENTS; i++) {
    const agent = Identity.generate();
    const actor: Actor = { keyId: agent.keyId, role: 'agent', requestSignature: null };
    coordinator.record(actor, (context) => commands.enrollAgent(context, { token: tokenText, name: `agent-${i}`, facts: { system: 'x86_64-linux', hostname: `agent-${i}`, cpus: 2 } }));
    coordinator.record(adminActor, (context) => commands.assignAgent(context, { agentId: agent.keyId, graph: 'edge' }));
    const phase = i % 20 === 0 ? 'fetching' : i % 20 === 1 ? 'failed' : 'active';
    coordinator.record(actor, (context) => commands.reportStatus(context, { configId: head, phase, error: phase === 'failed' ? 'activation failed' : null }));
    if (i % 50 === 2) coordinator.record(actor, (context) => commands.reportHealth(context, { configId: head, health: 'degraded', reason: 'app.service: inactive (dead)' }));
    coordinator.presence.touch(agent.keyId);
  }
  coordinator.presence.flush();
  process.stdout.write(`  ${AGENTS} agents, ${coordinator.lastSeq} events (${((performance.now() - started) / 1000).toFixed(0)} s)\n`);

  const readings: number[] = [];
  let now = fleetNow(coordinator);
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    now = fleetNow(coordinator);
    readings.push(performance.now() - t);
  }
  readings.sort((a, b) => a - b);
  const pageTimes: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = performance.now();
    JSON.stringify(liveFleetPage(now, { agentQuery: 'degraded' }));
    pageTimes.push(performance.now() - t);
  }
  pageTimes.sort((a, b) => a - b);
  const page100 = Buffer.byteLength(JSON.stringify(liveFleetPage(now)));
  const page500 = Buffer.byteLength(JSON.stringify(liveFleetPage(now, { agentLimit: 500 })));

  // A stream over real HTTP while events commit.
  const http = await startHttpServer(coordinator, '127.0.0.1', 0, { log: () => undefined });
  const viewer = Identity.generate();
  coordinator.record(coordinatorActor(coordinator), (context) => commands.addKey(context, { keyId: viewer.keyId, role: 'viewer', label: 'bench' }));
  const { loginPath } = await new CoordinatorHttpClient(http.url, viewer).call('viewer.session');
  const cookie = (await fetch(new URL(loginPath, http.url), { redirect: 'manual' })).headers.get('set-cookie')!.split(';')[0]!;
  const abort = new AbortController();
  const response = await fetch(`${http.url}/viewer/live/stream`, { headers: { cookie }, signal: abort.signal });
  let messages = 0;
  let bytes = 0;
  let largest = 0;
  const reading = (async () => {
    let buffer = '';
    try {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        bytes += chunk.length;
        buffer += Buffer.from(chunk).toString('utf8');
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (block.includes('event: fleet')) {
            messages++;
            largest = Math.max(largest, Buffer.byteLength(block));
          }
        }
      }
    } catch {
      // aborted
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 500));
  const before = { messages, bytes };
  const burstStart = performance.now();
  const cpuStart = process.cpuUsage();
  const self = coordinatorActor(coordinator);
  for (let i = 0; i < BURST; i++) {
    coordinator.record(self, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer', label: `burst ${i}` }));
    if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
  }
  const burstSeconds = (performance.now() - burstStart) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const cpu = process.cpuUsage(cpuStart);
  abort.abort();
  await reading;
  await http.close();

  report(`live fleet page, ${AGENTS} agents`, [
    { measure: 'one reading of the fleet (fleetNow), median / worst of 20', value: `${readings[10]!.toFixed(1)} ms / ${readings[19]!.toFixed(1)} ms` },
    { measure: 'one page cut and encoded (filter over all agents), median', value: `${pageTimes[10]!.toFixed(2)} ms` },
    { measure: 'a message, default page (100 agents)', value: kib(page100) },
    { measure: 'a message, largest page (500 agents)', value: kib(page500) },
    { measure: `stream during ${BURST} events in ${burstSeconds.toFixed(1)} s (+1.5 s after)`, value: `${messages - before.messages} messages, ${kib(bytes - before.bytes)}, largest ${kib(largest)}` },
    { measure: 'process CPU meanwhile (recording the events included)', value: `${((cpu.user + cpu.system) / 1e6).toFixed(2)} s in ${(burstSeconds + 1.5).toFixed(1)} s` },
  ]);
} finally {
  coordinator.close();
  rmSync(dir, { recursive: true, force: true });
}
