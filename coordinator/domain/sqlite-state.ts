/**
 * The StateStore over the coordinator's SQLite state tables.
 *
 * This is the hot path of every command (the command's reads, the reducer's
 * reads and upserts) and of replay, so it runs on better-sqlite3 statements
 * prepared once per table rather than on drizzle's query builder (which
 * built the SQL and prepared a fresh statement for every call: ~60% of a
 * command's time). The drizzle schema stays the single source of truth: the
 * statements are generated from its column list, and every value goes
 * through the column's own drizzle mapping (JSON columns, booleans as 0/1),
 * so rows read and written here are exactly what drizzle reads and writes.
 *
 * Small, hot rows (keys, tokens, agents, graphs) are also kept in memory:
 * every agent request reads its agent, and its graph, several times, and
 * with 10,000 agents those reads missed SQLite's page cache (~17 µs each,
 * a sixth of a held watch's CPU). This store is the only writer of the
 * state tables, so the copy is kept exact without asking SQLite: a put
 * drops the row's copy, and reads inside a transaction go to SQLite and
 * keep nothing (they may see what a rollback undoes).
 */
import type Database from 'better-sqlite3';
import { Column, getTableColumns, getTableName } from 'drizzle-orm';
import type { SQLiteTable } from 'drizzle-orm/sqlite-core';
import type { CoordinatorDb } from '../db/database.js';
import * as schema from '../db/schema.js';
import { stringifyJson } from '../../protocol/json-bounds.js';
import { STATE_TABLES, type StateStore, type StateTableName, type StateTables } from './state.js';

const TABLES: { [T in StateTableName]: SQLiteTable } = {
  keys: schema.keys,
  tokens: schema.tokens,
  agents: schema.agents,
  agentFacts: schema.agentFacts,
  graphs: schema.graphs,
  configs: schema.configs,
  alerts: schema.alerts,
  relays: schema.relays,
  rollouts: schema.rollouts,
  rolloutReleases: schema.rolloutReleases,
  secrets: schema.secrets,
  rules: schema.rules,
  params: schema.params,
};

type Mapping = ((value: unknown) => unknown) | null;

/** One table's column mapping and its prepared statements (raw mode: rows as arrays, in column order). */
interface TableAccess {
  /** Property names, in the table's column order. */
  readonly keys: readonly string[];
  /** Driver value -> property value per column; null where drizzle's mapping is the identity. */
  readonly decoders: readonly Mapping[];
  /** Property value -> driver value per column; null where drizzle's mapping is the identity. */
  readonly encoders: readonly Mapping[];
  readonly get: Database.Statement<[string], unknown[]>;
  readonly put: Database.Statement<unknown[]>;
  readonly all: Database.Statement<[], unknown[]>;
}

const quote = (name: string): string => `"${name.replaceAll('"', '""')}"`;

function mapping(column: Column, direction: 'mapFromDriverValue' | 'mapToDriverValue'): Mapping {
  if (column[direction] === Column.prototype[direction]) return null;
  // drizzle writes JSON columns with JSON.stringify, which recurses; facts replayed from a log
  // may nest deeper than it survives. stringifyJson writes the same bytes at any depth.
  if (direction === 'mapToDriverValue' && column.columnType === 'SQLiteTextJson') return (value) => stringifyJson(value);
  return (value) => column[direction](value);
}

function prepareTable(sqlite: Database.Database, table: SQLiteTable): TableAccess {
  const tableName = getTableName(table);
  const entries = Object.entries(getTableColumns(table));
  const keys = entries.map(([key]) => key);
  const columns = entries.map(([, column]) => column);
  const names = columns.map((column) => quote(column.name));
  const idIndex = keys.indexOf('id');
  if (idIndex < 0) throw new Error(`state table ${tableName} has no id column`);
  const id = names[idIndex]!;
  const name = quote(tableName);
  const list = names.join(', ');
  const updates = names.filter((_, i) => i !== idIndex).map((column) => `${column} = excluded.${column}`);
  return {
    keys,
    decoders: columns.map((column) => mapping(column, 'mapFromDriverValue')),
    encoders: columns.map((column) => mapping(column, 'mapToDriverValue')),
    get: sqlite.prepare<[string], unknown[]>(`SELECT ${list} FROM ${name} WHERE ${id} = ?`).raw(true),
    put: sqlite.prepare<unknown[]>(`INSERT INTO ${name} (${list}) VALUES (${names.map(() => '?').join(', ')}) ON CONFLICT (${id}) DO UPDATE SET ${updates.join(', ')}`),
    all: sqlite.prepare<[], unknown[]>(`SELECT ${list} FROM ${name} ORDER BY ${id}`).raw(true),
  };
}

/** A stored row as drizzle's select returns it: null stays null, anything else through the column's decoder. */
function decode(access: TableAccess, values: readonly unknown[]): Record<string, unknown> {
  const row: Record<string, unknown> = {};
  const { keys, decoders } = access;
  for (let i = 0; i < keys.length; i++) {
    const value = values[i];
    const decoder = decoders[i];
    row[keys[i]!] = value === null || value === undefined ? null : decoder ? decoder(value) : value;
  }
  return row;
}

/** A row's bind parameters as drizzle's insert writes them: null/undefined as NULL, anything else through the column's encoder. */
function encode(access: TableAccess, row: Record<string, unknown>): unknown[] {
  const { keys, encoders } = access;
  const values = new Array<unknown>(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const value = row[keys[i]!];
    const encoder = encoders[i];
    values[i] = value === null || value === undefined ? null : encoder ? encoder(value) : value;
  }
  return values;
}

/** Tables whose rows are kept in memory: small and read by every agent request (facts and configs are neither). */
const KEPT_TABLES: ReadonlySet<StateTableName> = new Set(['keys', 'tokens', 'agents', 'graphs', 'rollouts']);

/** Rows kept per table (first kept, first dropped): 100,000 agent rows are ~50 MB. */
export const KEPT_ROWS_PER_TABLE = 100_000;

/** Freezes `value` and everything in it: a kept row is shared by every reader, so none may change it. */
function deepFreeze<V>(value: V): V {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

export class SqliteStateStore implements StateStore {
  private readonly sqlite: Database.Database;
  private readonly access: { [T in StateTableName]: TableAccess };
  /** Rows as last read outside a transaction (undefined: no such row), per kept table. */
  private readonly kept = new Map<StateTableName, Map<string, unknown>>();

  /** `db` is the coordinator's drizzle database; the store prepares its statements on the same connection. */
  constructor(db: CoordinatorDb) {
    this.sqlite = db.$client;
    const access: Partial<Record<StateTableName, TableAccess>> = {};
    for (const table of STATE_TABLES) access[table] = prepareTable(this.sqlite, TABLES[table]);
    this.access = access as { [T in StateTableName]: TableAccess };
    for (const table of KEPT_TABLES) this.kept.set(table, new Map());
  }

  /** The row with `id`, or undefined. Rows of the kept tables are frozen: copy one to change it. */
  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined {
    const kept = this.kept.get(table);
    if (kept?.has(id)) return kept.get(id) as StateTables[T] | undefined;
    const access = this.access[table];
    const values = access.get.get(id);
    const row = values === undefined ? undefined : (decode(access, values) as StateTables[T]);
    if (kept && !this.sqlite.inTransaction) {
      if (kept.size >= KEPT_ROWS_PER_TABLE) kept.delete(kept.keys().next().value!);
      kept.set(id, deepFreeze(row));
    }
    return row;
  }

  put<T extends StateTableName>(table: T, row: StateTables[T]): void {
    this.kept.get(table)?.delete(row.id);
    const access = this.access[table];
    access.put.run(...encode(access, row as unknown as Record<string, unknown>));
  }

  /** Every row of a table, ordered by id (replay comparisons, listings). */
  all<T extends StateTableName>(table: T): StateTables[T][] {
    const access = this.access[table];
    return access.all.all().map((values) => decode(access, values) as StateTables[T]);
  }

  /** Runs `body` in one transaction (a savepoint inside an open one): replay applies a whole log in one. */
  batch<R>(body: () => R): R {
    return this.sqlite.transaction(body)();
  }
}
