/**
 * The fleet state the reducer maintains, as tables of rows keyed by `id`.
 * One interface, two stores: SQLite for the live coordinator and for
 * replay into a fresh database, memory for the viewer and quick replays.
 */
import type * as schema from '../db/schema.js';
import { cloneJson } from '../../protocol/json-bounds.js';

export type KeyRow = typeof schema.keys.$inferSelect;
export type TokenRow = typeof schema.tokens.$inferSelect;
export type AgentRow = typeof schema.agents.$inferSelect;
export type AgentFactsRow = typeof schema.agentFacts.$inferSelect;
export type GraphRow = typeof schema.graphs.$inferSelect;
export type ConfigRow = typeof schema.configs.$inferSelect;
export type AlertRow = typeof schema.alerts.$inferSelect;
export type RelayRow = typeof schema.relays.$inferSelect;
export type RolloutRow = typeof schema.rollouts.$inferSelect;
export type RolloutReleaseRow = typeof schema.rolloutReleases.$inferSelect;
export type SecretRow = typeof schema.secrets.$inferSelect;
export type RuleRow = typeof schema.rules.$inferSelect;
export type ParamRow = typeof schema.params.$inferSelect;

export interface StateTables {
  keys: KeyRow;
  tokens: TokenRow;
  agents: AgentRow;
  agentFacts: AgentFactsRow;
  graphs: GraphRow;
  configs: ConfigRow;
  alerts: AlertRow;
  relays: RelayRow;
  rollouts: RolloutRow;
  rolloutReleases: RolloutReleaseRow;
  secrets: SecretRow;
  rules: RuleRow;
  params: ParamRow;
}

export type StateTableName = keyof StateTables;
export const STATE_TABLES: readonly StateTableName[] = ['keys', 'tokens', 'agents', 'agentFacts', 'graphs', 'configs', 'alerts', 'relays', 'rollouts', 'rolloutReleases', 'secrets', 'rules', 'params'];

export interface StateStore {
  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined;
  /** Inserts or replaces the row with the same id. */
  put<T extends StateTableName>(table: T, row: StateTables[T]): void;
}

export function factsRowId(agentId: string, revision: number): string {
  return `${agentId}#${revision}`;
}

/** A StateStore in memory: the viewer's and replay's. */
export class MemoryStateStore implements StateStore {
  readonly tables: { [T in StateTableName]: Map<string, StateTables[T]> } = {
    keys: new Map(),
    tokens: new Map(),
    agents: new Map(),
    agentFacts: new Map(),
    graphs: new Map(),
    configs: new Map(),
    alerts: new Map(),
    relays: new Map(),
    rollouts: new Map(),
    rolloutReleases: new Map(),
    secrets: new Map(),
    rules: new Map(),
    params: new Map(),
  };

  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined {
    return this.tables[table].get(id) as StateTables[T] | undefined;
  }

  put<T extends StateTableName>(table: T, row: StateTables[T]): void {
    // cloneJson, not structuredClone: both copy, but structuredClone recurses, and a replayed
    // log may hold facts nested deeper than it survives (see protocol/json-bounds.ts).
    (this.tables[table] as Map<string, StateTables[T]>).set(row.id, cloneJson(row));
  }
}
