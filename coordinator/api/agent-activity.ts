/**
 * What agents are doing right now: fetch progress and their recent local
 * events. Volatile by design — it changes many times a second during a
 * deployment and would drown the audit log — so it lives in memory, per
 * coordinator process, and is lost on restart (agents resend it).
 */
import type { z } from 'zod';
import type { AgentActivitySchema } from '../../protocol/api/inputs.js';
import type { Coordinator } from '../coordinator.js';

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
