/**
 * The live coordinator's audit log as a LogSource: rows read back from its
 * SQLite database as stored (a tampered row is shown, not refused), and
 * verification by the coordinator itself (Coordinator.verifyAudit).
 */
import { and, asc, sql } from 'drizzle-orm';
import type { Coordinator } from '../coordinator.js';
import * as schema from '../db/schema.js';
import type { AuditEvent } from '../domain/events.js';
import type { LogSource } from './log-source.js';

function parsePayloadText(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

type EventRow = typeof schema.auditEvents.$inferSelect;

/** A LogSource over `coordinator`'s database; it reads only (the log is append-only anyway). */
export function liveLogSource(coordinator: Coordinator): LogSource {
  const db = coordinator.database.db;
  const events = schema.auditEvents;
  // Replay reads up to a snapshot interval of rows per jump: one statement, prepared once
  // (drizzle's query builder costs more than the read itself here).
  const range = coordinator.database.sqlite.prepare<[number, number], EventRow>(
    'SELECT seq, hlc, wall_time AS wallTime, actor_key AS actorKey, actor_role AS actorRole, action, subject, payload, ' +
      'request_signature AS requestSignature, prev_hash AS prevHash, hash FROM audit_events WHERE seq BETWEEN ? AND ? ORDER BY seq',
  );
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
      if (to < from) return [];
      const rows = range.all(from, to);
      // As stored: AuditEvent in name only until the caller validates it (see LogSource.read).
      return rows.map((row) => ({ ...row, payload: parsePayloadText(row.payload) }) as AuditEvent);
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
