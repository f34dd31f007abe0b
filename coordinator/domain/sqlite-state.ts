/** The StateStore over the coordinator's SQLite state tables (drizzle). */
import { eq } from 'drizzle-orm';
import type { CoordinatorDb } from '../db/database.js';
import * as schema from '../db/schema.js';
import type { StateStore, StateTableName, StateTables } from './state.js';

const TABLES = {
  keys: schema.keys,
  tokens: schema.tokens,
  agents: schema.agents,
  agentFacts: schema.agentFacts,
  graphs: schema.graphs,
  configs: schema.configs,
} as const;

export class SqliteStateStore implements StateStore {
  constructor(private readonly db: CoordinatorDb) {}

  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined {
    const target = TABLES[table];
    return this.db.select().from(target).where(eq(target.id, id)).get() as StateTables[T] | undefined;
  }

  put<T extends StateTableName>(table: T, row: StateTables[T]): void {
    const target = TABLES[table];
    // drizzle's per-table insert types do not unify across the union; the row type is the table's own.
    const values = row as typeof target.$inferInsert & StateTables[StateTableName];
    this.db.insert(target).values(values as never).onConflictDoUpdate({ target: target.id, set: values as never }).run();
  }

  /** Every row of a table, ordered by id (replay comparisons, listings). */
  all<T extends StateTableName>(table: T): StateTables[T][] {
    const target = TABLES[table];
    return this.db.select().from(target).orderBy(target.id).all() as StateTables[T][];
  }
}
