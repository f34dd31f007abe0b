/**
 * The live coordinator's audit log as a LogSource: rows read back from its
 * SQLite database as stored (a tampered row is shown, not refused), and
 * verification by the log itself (AuditLog.verify).
 */
import { and, asc, sql } from 'drizzle-orm';
import type { Coordinator } from '../coordinator.js';
import * as schema from '../db/schema.js';
import type { LogSource } from './log-source.js';

/** A LogSource over `coordinator`'s database; it reads only (the log is append-only anyway). */
export function liveLogSource(coordinator: Coordinator): LogSource {
  const db = coordinator.database.db;
  const audit = coordinator.audit;
  const events = schema.auditEvents;
  let name: string | undefined;
  return {
    mode: 'live',
    get name() {
      name ??= coordinator.name;
      return name;
    },
    coordinatorKey: coordinator.identity.keyId,
    lastSeq: () => audit.lastSeq,
    read(from, to) {
      // As stored: AuditEvent in name only until the caller validates it (see LogSource.read).
      return to < from ? [] : audit.storedEvents(from - 1, to, to - from + 1);
    },
    checkpoints: () => audit.checkpoints(),
    verify: () => audit.verify(),
    searchPayloads(text) {
      const needle = text.toLowerCase();
      return db
        .select({ seq: events.seq })
        .from(events)
        .where(and(sql`instr(lower(${events.payload}), ${needle}) > 0`))
        .orderBy(asc(events.seq))
        .all()
        .map((row) => row.seq);
    },
  };
}
