/**
 * The fleet as it stands now, read once for the whole fleet: every agent's
 * row with its presence and last seen (derived now, db/agent-presence.ts)
 * and the config it should run. What the live fleet page
 * (viewer/live-fleet.ts) and the metrics' fleet gauges (metrics/) count.
 *
 * One read of the presence table for all agents, and the rows through the
 * state store's `get`, which keeps agent rows in memory until one is
 * written: a reading decodes only the rows changed since the last
 * (`all` decodes 10,000 every time; bench/README.md, "Live fleet page").
 */
import { asc } from 'drizzle-orm';
import type { Coordinator } from '../coordinator.js';
import * as schema from '../db/schema.js';
import type { AgentRow } from '../domain/state.js';
import type { Presence } from '../../protocol/api/views.js';
import { desiredConfigOf } from './queries.js';

/** One agent, with what is derived for it now. */
export interface AgentReading {
  row: AgentRow;
  presence: Presence;
  lastSeen: number | null;
  /** Its pin, else its graph's head, else null. */
  desired: string | null;
}

/** Every agent, in enrollment order. Reads only; throws what the database throws. */
export function readFleetAgents(coordinator: Coordinator): AgentReading[] {
  const { state, presence } = coordinator;
  const seen = presence.lastSeenAll();
  const ids = coordinator.database.db.select({ id: schema.agents.id }).from(schema.agents).orderBy(asc(schema.agents.enrolledSeq), asc(schema.agents.id)).all();
  const agents: AgentReading[] = [];
  for (const { id } of ids) {
    const row = state.get('agents', id);
    if (!row) continue;
    const lastSeen = seen.get(id) ?? null;
    agents.push({ row, presence: presence.presenceSeen(id, lastSeen), lastSeen, desired: desiredConfigOf(state, row) });
  }
  return agents;
}
