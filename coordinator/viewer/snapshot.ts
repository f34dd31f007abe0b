/**
 * Snapshots of the replayed state tables, one every `every` events, so that
 * reaching any position replays at most `every - 1` events.
 *
 * Rows are shared, never copied: MemoryStateStore stores a fresh clone on
 * every put and the reducer replaces rows rather than mutating them, so a
 * stored row never changes after it is written. Code reading a restored
 * store's rows must therefore never mutate them.
 *
 * To keep memory flat on long logs, only every `fullEvery`-th snapshot
 * copies the tables' maps; the ones between hold just the rows written since
 * the previous snapshot (the reducer never deletes a row, so writes are the
 * whole difference). Restoring copies the nearest full snapshot and applies
 * at most `fullEvery - 1` such deltas: map writes, not replay. At 100,000
 * events this takes the snapshots from ~150 MiB of map copies to a fraction.
 */
import { MemoryStateStore, STATE_TABLES, type StateStore, type StateTableName, type StateTables } from '../domain/state.js';

type Tables = { [T in StateTableName]: Map<string, StateTables[T]> };
type Rows = Record<StateTableName, Map<string, unknown>>;

function emptyRows(): Rows {
  const rows: Partial<Rows> = {};
  for (const table of STATE_TABLES) rows[table] = new Map();
  return rows as Rows;
}

function copyTables(tables: Tables | Rows): Rows {
  const copy: Partial<Rows> = {};
  for (const table of STATE_TABLES) copy[table] = new Map((tables as Rows)[table]);
  return copy as Rows;
}

/** A store that writes through to `inner` and remembers which rows were written. */
class TrackingStore implements StateStore {
  written: Record<StateTableName, Set<string>> = Snapshots.emptyWritten();
  constructor(readonly inner: MemoryStateStore) {}

  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined {
    return this.inner.get(table, id);
  }

  put<T extends StateTableName>(table: T, row: StateTables[T]): void {
    this.inner.put(table, row);
    this.written[table].add(row.id);
  }
}

export class Snapshots {
  /** seq / every -> the full tables (every fullEvery-th) or the rows written since the previous snapshot. */
  private readonly kept: { full: boolean; rows: Rows }[] = [];
  private readonly tracker: TrackingStore;

  /**
   * Snapshots of `tip`, the store the caller replays the log into through
   * `store` (which tracks what changes). Takes the empty state as snapshot 0.
   */
  constructor(
    tip: MemoryStateStore,
    readonly every: number,
    readonly fullEvery = 10,
  ) {
    this.tracker = new TrackingStore(tip);
    this.kept.push({ full: true, rows: copyTables(tip.tables) });
  }

  static emptyWritten(): Record<StateTableName, Set<string>> {
    const written: Partial<Record<StateTableName, Set<string>>> = {};
    for (const table of STATE_TABLES) written[table] = new Set();
    return written as Record<StateTableName, Set<string>>;
  }

  /** The store to apply events to: the tip, with its writes tracked. */
  get store(): StateStore {
    return this.tracker;
  }

  /** How many snapshots are kept (including the empty state). */
  get count(): number {
    return this.kept.length;
  }

  /** Call after applying event `seq` when `seq` is a multiple of `every`. */
  take(seq: number): void {
    if (seq !== this.kept.length * this.every) throw new RangeError(`snapshot ${seq} out of order (next is ${this.kept.length * this.every})`);
    const tip = this.tracker.inner;
    if (this.kept.length % this.fullEvery === 0) {
      this.kept.push({ full: true, rows: copyTables(tip.tables) });
    } else {
      const rows = emptyRows();
      for (const table of STATE_TABLES) {
        const source = tip.tables[table] as Map<string, unknown>;
        for (const id of this.tracker.written[table]) rows[table].set(id, source.get(id));
      }
      this.kept.push({ full: false, rows });
    }
    this.tracker.written = Snapshots.emptyWritten();
  }

  /** The seq of the snapshot a replay to `seq` starts from. */
  baseOf(seq: number): number {
    return Math.min(Math.floor(seq / this.every), this.kept.length - 1) * this.every;
  }

  /** A new store holding the state of the snapshot at or before `seq` (see baseOf); the snapshots stay as they were. */
  restore(seq: number): MemoryStateStore {
    const index = this.baseOf(seq) / this.every;
    let full = index;
    while (!this.kept[full]!.full) full--;
    const tables = copyTables(this.kept[full]!.rows);
    for (let i = full + 1; i <= index; i++) {
      const delta = this.kept[i]!.rows;
      for (const table of STATE_TABLES) for (const [id, row] of delta[table]) tables[table].set(id, row);
    }
    const store = new MemoryStateStore();
    for (const table of STATE_TABLES) (store.tables as Rows)[table] = tables[table];
    return store;
  }
}
