/**
 * Continuous health: while a generation whose config declares a periodic
 * health check (`health.intervalSeconds`) is active, the agent runs the
 * check every interval and tells the coordinator when its health changes.
 *
 * - `unhealthyAfter` failures in a row make it `degraded`; one pass makes
 *   it `healthy` (also the first pass after activation, so the coordinator
 *   learns that the check runs).
 * - Turning degraded within `probationSeconds` of the activation rolls back
 *   to the generation before (the host's `probationRollback`), as a failed
 *   activation would; after the window it is only reported. A generation
 *   the agent went back to is never on probation (no cascade of rollbacks).
 * - Reports go out only on transitions. The coordinator may defer one (its
 *   per-agent rate limit): the monitor then sends the health it has when
 *   told to, with the count of transitions between that were not recorded.
 *
 * The monitor never runs a check while a deployment is under way, and drops
 * a result if the generation changed while the check ran.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_UNHEALTHY_AFTER } from '../protocol/config.js';
import type { Health } from '../protocol/api/fleet.js';
import type { Generation } from './generations.js';
import type { CommandResult } from './run-command.js';

/** The generation to watch, and since when it runs. */
export interface ActiveGeneration {
  generation: Generation;
  /** When its activation succeeded (ms). */
  since: number;
  /** Whether turning degraded within its probation rolls it back (false for a generation rolled back to). */
  probation: boolean;
}

/** What the coordinator said to a health report (protocol/api/views.ts HealthReportAnswerSchema). */
export interface HealthReportOutcome {
  outcome: 'recorded' | 'unchanged' | 'deferred';
  retryAfterMs: number | null;
}

export interface HealthMonitorHost {
  /** The generation to check now, or undefined (none, or a deployment under way). */
  active(): ActiveGeneration | undefined;
  check(generation: Generation): Promise<CommandResult>;
  report(report: { configId: string; health: Health; reason: string | null; suppressed: number }): Promise<HealthReportOutcome>;
  /** Rolls back from `generation` (it turned degraded in its probation); `reason` says why. */
  probationRollback(generation: Generation, reason: string): Promise<void>;
  /** A local event (the agent's event ring and log). */
  note(kind: string, message: string, configId: string): void;
  /** The running config's health changed here (before it is reported, or rolled back from). */
  changed(configId: string, health: Health): void;
  now(): number;
}

/** How often the monitor looks again when there is nothing to check, or before a check is due. */
export const HEALTH_MONITOR_TICK_MS = 500;
/** How long a report that could not be delivered waits before it is sent again. */
const REPORT_RETRY_MS = 5000;

interface Watched {
  number: number;
  since: number;
  configId: string;
  nextCheckAt: number;
  health: Health | null;
  reason: string | null;
  failures: number;
  /** What the coordinator holds (as far as the monitor knows). */
  recorded: Health | null;
  /** Transitions since the coordinator last recorded one. */
  transitions: number;
  reportAt: number;
}

function describeFailure(command: string, result: CommandResult, failures: number): string {
  const how = result.timedOut ? 'timed out' : result.exitCode === null ? 'did not run' : `exit ${result.exitCode}`;
  return `health check '${command}' failed ${failures} time(s) in a row, last ${how}; output:\n${result.outputTail}`.slice(0, 8000);
}

/** Runs a HealthMonitor's steps every HEALTH_MONITOR_TICK_MS until `signal` aborts. Never throws. */
export async function monitorHealth(host: HealthMonitorHost, signal: AbortSignal): Promise<void> {
  const monitor = new HealthMonitor(host);
  while (!signal.aborted) {
    await monitor.step();
    await sleep(HEALTH_MONITOR_TICK_MS, undefined, { signal }).catch(() => undefined);
  }
}

export class HealthMonitor {
  private watched: Watched | undefined;

  constructor(private readonly host: HealthMonitorHost) {}

  /**
   * Checks when a check is due, acts on a transition (report, or rollback
   * in probation) and sends a report the coordinator deferred once it may.
   * Never throws: a failing check, report or rollback is noted, and the
   * next step goes on.
   */
  async step(): Promise<void> {
    try {
      this.watched = await step(this.host, this.watched);
    } catch (error) {
      if (this.watched) this.host.note('error', `health monitor: ${(error as Error).message}`, this.watched.configId);
    }
  }
}

async function step(host: HealthMonitorHost, previous: Watched | undefined): Promise<Watched | undefined> {
  const active = host.active();
  const check = active?.generation.health;
  if (!active || check?.intervalSeconds === undefined) return undefined;
  const now = host.now();
  const intervalMs = check.intervalSeconds * 1000;
  let watched = previous;
  if (!watched || watched.number !== active.generation.number || watched.since !== active.since) {
    watched = { number: active.generation.number, since: active.since, configId: active.generation.configId, nextCheckAt: now, health: null, reason: null, failures: 0, recorded: null, transitions: 0, reportAt: 0 };
  }
  if (now >= watched.nextCheckAt) {
    const result = await host.check(active.generation);
    const after = host.active();
    if (after?.generation.number !== watched.number || after.since !== watched.since) return undefined;
    watched.nextCheckAt = host.now() + intervalMs;
    watched.failures = result.ok ? 0 : watched.failures + 1;
    const health: Health | null = result.ok ? 'healthy' : watched.failures >= (check.unhealthyAfter ?? DEFAULT_UNHEALTHY_AFTER) ? 'degraded' : watched.health;
    if (health !== watched.health) {
      // The first result after activation (or a restart) is where the monitor starts, not a transition.
      if (watched.health !== null) watched.transitions++;
      watched.health = health;
      watched.reason = result.ok ? null : describeFailure(check.command, result, watched.failures);
      host.note('health', `generation ${watched.number} is ${health}${watched.reason ? `: ${watched.reason}` : ''}`, watched.configId);
      host.changed(watched.configId, health!);
      const probationMs = (check.probationSeconds ?? 0) * 1000;
      if (health === 'degraded' && active.probation && host.now() - active.since < probationMs) {
        await host.probationRollback(active.generation, `${watched.reason} (within the ${check.probationSeconds} s probation after activation)`);
        return undefined;
      }
    }
  }
  if (watched.health !== null && watched.health !== watched.recorded && host.now() >= watched.reportAt) await sendReport(host, watched);
  return watched;
}

async function sendReport(host: HealthMonitorHost, watched: Watched): Promise<void> {
  const health = watched.health!;
  // The net change is the event; the transitions beyond it went unrecorded (a check that flapped).
  const suppressed = Math.max(0, watched.transitions - 1);
  let answer: HealthReportOutcome;
  try {
    answer = await host.report({ configId: watched.configId, health, reason: watched.reason, suppressed });
  } catch {
    // Offline, or the coordinator has not yet heard that this config is active: again later.
    watched.reportAt = host.now() + REPORT_RETRY_MS;
    return;
  }
  if (answer.outcome === 'deferred') {
    watched.reportAt = host.now() + (answer.retryAfterMs ?? REPORT_RETRY_MS);
    return;
  }
  watched.recorded = health;
  if (answer.outcome === 'recorded') watched.transitions = 0;
}
