/**
 * What one event changed: the state rows it touched, before and after, and
 * field by field. The event is applied by the reducer itself (applyEvent)
 * through a store that notes each row's value before its first write, so
 * the diff is exactly what the reducer did, not a second interpretation of
 * the payload.
 */
import { sameJson } from '../domain/commands.js';
import type { AuditEvent } from '../domain/events.js';
import { applyEvent } from '../domain/reducer.js';
import type { StateStore, StateTableName, StateTables } from '../domain/state.js';
import type { FieldChange, RowChange } from '../../protocol/api/viewer-views.js';

/** A store that passes everything through to `inner` and remembers the rows written. */
class RecordingStore implements StateStore {
  readonly touched = new Map<string, { table: StateTableName; id: string; before: StateTables[StateTableName] | null }>();
  constructor(private readonly inner: StateStore) {}

  get<T extends StateTableName>(table: T, id: string): StateTables[T] | undefined {
    return this.inner.get(table, id);
  }

  put<T extends StateTableName>(table: T, row: StateTables[T]): void {
    const key = `${table}\u0000${row.id}`;
    if (!this.touched.has(key)) this.touched.set(key, { table, id: row.id, before: this.inner.get(table, row.id) ?? null });
    this.inner.put(table, row);
  }
}

/**
 * Applies `event` to `store` with the reducer and returns the rows it
 * changed. Throws what applyEvent throws (ReducerError) for an event that
 * does not apply; `store` may then hold part of it.
 */
export function applyAndDiff(store: StateStore, event: AuditEvent): RowChange[] {
  const recorder = new RecordingStore(store);
  applyEvent(recorder, event);
  const changes: RowChange[] = [];
  for (const { table, id, before } of recorder.touched.values()) {
    const after = store.get(table, id)!;
    const keys = new Set([...Object.keys(before ?? {}), ...Object.keys(after)]);
    const fields: FieldChange[] = [];
    for (const key of keys) {
      const old = before ? (before as unknown as Record<string, unknown>)[key] : undefined;
      const now = (after as unknown as Record<string, unknown>)[key];
      // sameJson, not util.isDeepStrictEqual: rows are JSON, and a replayed log may hold facts nested
      // deeper than a recursive comparison survives.
      if (!before || !sameJson(old, now)) fields.push({ field: key, before: old ?? null, after: now ?? null });
    }
    changes.push({ table, id, kind: before ? (fields.length > 0 ? 'changed' : 'unchanged') : 'added', before, after, fields });
  }
  return changes;
}
