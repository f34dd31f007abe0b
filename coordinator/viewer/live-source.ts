/**
 * The live coordinator's audit log as a LogSource: rows read back from its
 * SQLite database as stored (a tampered row is shown, not refused), and
 * verification by the coordinator itself (Coordinator.verifyAudit).
 */
import { and, asc, sql } from 'drizzle-orm';
import type { Coordinator } from '../coordinator.js';
import * as schema from '../db/schema.js';
import type { LogSource } from './log-source.js';

/** A LogSource over `coordinator`'s database; it reads only (the log is append-only anyway). */
export function liveLogSource(coordinator: Coordinator): LogSource {
  const db = coordinator.database.db;
  const events = schema.auditEvents;
  let name: string | undefined;
  return {
    mode: 'live',
    get name() {
      name ??= coordinator.name;
      return name;
    },
    coordinatorKey: coordinator.identity.keyId,
    lastSeq: () => coordinator.lastSeq,
    read(from, to) {
      // As stored: AuditEvent in name only until the caller validates it (see LogSource.read).
      return to < from ? [] : coordinator.storedEvents(from - 1, to, to - from + 1);
    },
    checkpoints: () => coordinator.checkpoints(),
    verify: () => coordinator.verifyAudit(),
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
