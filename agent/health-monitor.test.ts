// The health monitor's decisions, step by step, against a scripted host (a clock, check results
// and the coordinator's answers that the test chooses): the real checks, reports and rollbacks
// with processes are test/agent-health.test.ts.
import { describe, expect, it } from 'vitest';
import { asStorePath } from '../nix/store-path.js';
import type { Generation } from './generations.js';
import { HealthMonitor, type ActiveGeneration, type HealthMonitorHost, type HealthReportOutcome } from './health-monitor.js';

function generation(number: number, health: Partial<NonNullable<Generation['health']>> = {}): Generation {
  return {
    number,
    configId: String(number).repeat(64).slice(0, 64),
    graph: 'g',
    target: asStorePath('/nix/store/00000000000000000000000000000000-x'),
    location: '/tmp/x',
    closure: [],
    activation: { command: 'true', environment: {}, timeoutSeconds: 10 },
    health: { command: 'check', timeoutSeconds: 5, retries: 0, intervalSeconds: 10, unhealthyAfter: 2, ...health },
    hlc: null, deactivate: null,
    secrets: null,
    params: null,
    createdAt: 0,
  };
}

class ScriptedHost implements HealthMonitorHost {
  clock = 1_000_000;
  active_: ActiveGeneration | undefined;
  results: boolean[] = [];
  answers: (HealthReportOutcome | Error)[] = [];
  reports: { health: string; suppressed: number; reason: string | null }[] = [];
  rollbacks: string[] = [];
  checks = 0;
  active = () => this.active_;
  check = async () => {
    this.checks++;
    const ok = this.results.shift() ?? true;
    return { ok, exitCode: ok ? 0 : 1, timedOut: false, outputTail: ok ? '' : 'service down' };
  };
  report = async (report: { health: string; suppressed: number; reason: string | null }) => {
    this.reports.push(report);
    const answer = this.answers.shift() ?? { outcome: 'recorded' as const, retryAfterMs: null };
    if (answer instanceof Error) throw answer;
    return answer;
  };
  probationRollback = async (_generation: Generation, reason: string) => {
    this.rollbacks.push(reason);
    this.active_ = undefined;
  };
  note = () => undefined;
  changed = () => undefined;
  now = () => this.clock;
}

describe('the health monitor', () => {
  it('checks every interval, reports healthy first, degraded after unhealthyAfter failures in a row, and only transitions', async () => {
    const host = new ScriptedHost();
    host.active_ = { generation: generation(1), since: host.clock - 3_600_000, probation: true };
    const monitor = new HealthMonitor(host);
    host.results = [true, false, false, false, true];
    await monitor.step();
    expect(host.reports.map((r) => r.health)).toEqual(['healthy']);
    await monitor.step(); // not due yet
    expect(host.checks).toBe(1);
    for (let i = 0; i < 4; i++) {
      host.clock += 10_000;
      await monitor.step();
    }
    expect(host.checks).toBe(5);
    // One failure is not degraded; the second in a row is; the third is no news; a pass is.
    expect(host.reports.map((r) => [r.health, r.suppressed])).toEqual([
      ['healthy', 0],
      ['degraded', 0],
      ['healthy', 0],
    ]);
    expect(host.reports[1]!.reason).toMatch(/failed 2 time\(s\) in a row, last exit 1; output:\nservice down/);
    // Activated an hour ago: outside any probation, nothing rolled back.
    expect(host.rollbacks).toEqual([]);
  });

  it('rolls back instead of reporting when degraded within the probation, never for a generation without it', async () => {
    const host = new ScriptedHost();
    host.active_ = { generation: generation(2, { probationSeconds: 60 }), since: host.clock, probation: true };
    const monitor = new HealthMonitor(host);
    host.results = [true, false, false];
    for (let i = 0; i < 3; i++) {
      await monitor.step();
      host.clock += 10_000;
    }
    expect(host.rollbacks).toHaveLength(1);
    expect(host.rollbacks[0]).toMatch(/within the 60 s probation/);
    expect(host.reports.map((r) => r.health)).toEqual(['healthy']);

    // The same failures in a generation rolled back to (probation: false) are only reported.
    const back = new ScriptedHost();
    back.active_ = { generation: generation(1, { probationSeconds: 60 }), since: back.clock, probation: false };
    const again = new HealthMonitor(back);
    back.results = [false, false];
    for (let i = 0; i < 2; i++) {
      await again.step();
      back.clock += 10_000;
    }
    expect(back.rollbacks).toEqual([]);
    expect(back.reports.map((r) => r.health)).toEqual(['degraded']);
  });

  it('sends a deferred report when told, with the transitions between counted as suppressed', async () => {
    const host = new ScriptedHost();
    host.active_ = { generation: generation(3, { unhealthyAfter: 1 }), since: 0, probation: false };
    const monitor = new HealthMonitor(host);
    // healthy (recorded), degraded (recorded), then flapping while deferred.
    host.results = [true, false, true, false, true];
    host.answers = [{ outcome: 'recorded', retryAfterMs: null }, { outcome: 'recorded', retryAfterMs: null }, { outcome: 'deferred', retryAfterMs: 35_000 }];
    await monitor.step();
    host.clock += 10_000;
    await monitor.step();
    host.clock += 10_000;
    await monitor.step(); // healthy: deferred for 35 s
    expect(host.reports.map((r) => r.health)).toEqual(['healthy', 'degraded', 'healthy']);
    host.clock += 10_000;
    await monitor.step(); // degraded again: what the coordinator holds, nothing to send
    host.clock += 10_000;
    await monitor.step(); // healthy, but the deferral runs until +35 s
    expect(host.reports).toHaveLength(3);
    host.clock += 16_000;
    await monitor.step();
    // Three transitions since the degraded one was recorded; the event is their net change.
    expect(host.reports.at(-1)).toMatchObject({ health: 'healthy', suppressed: 2 });
  });

  it('drops a result when the generation changed while the check ran, and retries a report that failed', async () => {
    const host = new ScriptedHost();
    host.active_ = { generation: generation(4), since: 0, probation: false };
    const monitor = new HealthMonitor(host);
    host.check = async () => {
      host.active_ = { generation: generation(5), since: host.clock, probation: true };
      return { ok: false, exitCode: 1, timedOut: false, outputTail: '' };
    };
    await monitor.step();
    expect(host.reports).toEqual([]);

    const offline = new ScriptedHost();
    offline.active_ = { generation: generation(6), since: 0, probation: false };
    offline.answers = [new Error('unreachable')];
    const later = new HealthMonitor(offline);
    await later.step();
    await later.step(); // within the retry pause: not sent again
    expect(offline.reports).toHaveLength(1);
    offline.clock += 5_000;
    await later.step();
    expect(offline.reports).toHaveLength(2);
  });
});
