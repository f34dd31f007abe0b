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

export class SqliteStateStore implements StateStore {
  private readonly sqlite: Database.Database;
  private readonly access: { [T in StateTableName]: TableAccess };

  /** `db` is the coordinator's drizzle database; the store prepares its statements on the same connection. */
  constructor(db: CoordinatorDb) {
    this.sqlite = db.$client;
    const access: Partial<Record<StateTableName, TableAccess>> = {};
    for (const table of STATE_TABLES) access[table] = prepareTable(this.sqlite, TABLES[table]);
    this.access = access as { [T in StateTableName]: TableAccess };
  }

  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined {
    const access = this.access[table];
    const values = access.get.get(id);
    return values === undefined ? undefined : (decode(access, values) as StateTables[T]);
  }

  put<T extends StateTableName>(table: T, row: StateTables[T]): void {
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
