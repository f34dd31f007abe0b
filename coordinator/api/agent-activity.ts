/**
 * What agents are doing right now: fetch progress and their recent local
 * events. Volatile by design — it changes many times a second during a
 * deployment and would drown the audit log — so it lives in memory, per
 * coordinator process, and is lost on restart (agents resend it).
 */
import { z } from 'zod';
import type { Coordinator } from '../coordinator.js';

export const AgentActivitySchema = z.strictObject({
  phase: z.string().max(32),
  configId: z.string().max(64).nullable(),
  bytesDone: z.number().int().nonnegative(),
  bytesTotal: z.number().int().nonnegative(),
  objectsDone: z.number().int().nonnegative(),
  objectsTotal: z.number().int().nonnegative(),
  events: z
    .array(z.strictObject({ at: z.number().int(), kind: z.string().max(32), message: z.string().max(2048), configId: z.string().max(64).nullable().optional() }))
    .max(50),
});
export type AgentActivity = z.infer<typeof AgentActivitySchema> & { at: number };

const activities = new WeakMap<Coordinator, Map<string, AgentActivity>>();

export function agentActivities(coordinator: Coordinator): Map<string, AgentActivity> {
  let map = activities.get(coordinator);
  if (!map) {
    map = new Map();
    activities.set(coordinator, map);
  }
  return map;
}
