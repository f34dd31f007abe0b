/**
 * The rate limit on agents' health events. Each transition an agent
 * reports is an audit event, so a check that flaps (passes, fails, passes…)
 * could otherwise write to the log as fast as it runs. Per agent, at most
 * `burst` events are recorded in any `windowMs`; a transition beyond that
 * is deferred, and the agent sends the health it has once the window
 * allows, counting the transitions between as suppressed (recorded in the
 * next event). The first transitions of a deployment — healthy, then
 * degraded when a service dies — are within the burst and recorded at once.
 *
 * In memory, per coordinator process: a restart forgets the window, which
 * lets at most one more burst through.
 */
import type { Coordinator } from '../coordinator.js';

/** How many health events per agent, in how long (CoordinatorOptions.healthEvents). */
export interface HealthEventLimit {
  burst: number;
  windowMs: number;
}

/** Six transitions per ten minutes: a deploy's few are never deferred; a flapping check settles to one a ~100 s. */
export const DEFAULT_HEALTH_EVENT_LIMIT: HealthEventLimit = { burst: 6, windowMs: 10 * 60_000 };

export class HealthEventLimiter {
  /** Per agent, the times (ms) of its recorded health events within the window, oldest first. */
  private readonly recent = new Map<string, number[]>();

  constructor(readonly limit: HealthEventLimit = DEFAULT_HEALTH_EVENT_LIMIT) {
    if (!(Number.isInteger(limit.burst) && limit.burst >= 1 && limit.windowMs > 0)) throw new RangeError(`health event limit: burst ${limit.burst} in ${limit.windowMs} ms: needs a burst of at least 1 and a positive window`);
  }

  /** How long (ms) until `agentId` may have another health event recorded: 0 if now. */
  delay(agentId: string, now: number): number {
    const times = this.within(agentId, now);
    return times.length < this.limit.burst ? 0 : times[0]! + this.limit.windowMs - now;
  }

  /** Counts a recorded event of `agentId` at `now`. */
  note(agentId: string, now: number): void {
    const times = this.within(agentId, now);
    times.push(now);
    this.recent.set(agentId, times);
  }

  private within(agentId: string, now: number): number[] {
    const times = this.recent.get(agentId) ?? [];
    while (times.length > 0 && times[0]! <= now - this.limit.windowMs) times.shift();
    if (times.length === 0) this.recent.delete(agentId);
    return times;
  }
}

const limiters = new WeakMap<Coordinator, HealthEventLimiter>();

/** The coordinator's limiter (built on first use from its options). */
export function healthEventLimiter(coordinator: Coordinator): HealthEventLimiter {
  let limiter = limiters.get(coordinator);
  if (!limiter) {
    limiter = new HealthEventLimiter(coordinator.healthEventLimit);
    limiters.set(coordinator, limiter);
  }
  return limiter;
}
