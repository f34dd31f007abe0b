/**
 * An exported audit log (`ferry audit export`) as a read-only LogSource,
 * verified with the coordinator public key the caller obtained out of band
 * (never the key the file names about itself).
 */
import { readFileSync } from 'node:fs';
import { parseAuditExport, verifyAuditExport, type ParsedExport } from '../audit/export.js';
import type { ChainReport } from '../audit/chain.js';
import { publicKeyOf, type KeyId } from '../../protocol/identity.js';
import { stringifyJson } from '../../protocol/json-bounds.js';
import type { LogSource } from './log-source.js';

/**
 * A LogSource over a parsed export, verified with `coordinatorKey`. The
 * export is fixed, so its verification is computed once.
 */
export function exportLogSource(parsed: ParsedExport, coordinatorKey: KeyId): LogSource {
  const { events } = parsed;
  const checkpoints = parsed.checkpoints.slice().sort((a, b) => a.seq - b.seq);
  const bySeq = new Map(events.map((event, index) => [event.seq, index]));
  const last = events.reduce((max, event) => Math.max(max, event.seq), 0);
  let report: Promise<ChainReport> | undefined;
  let texts: string[] | undefined;
  return {
    mode: 'file',
    name: parsed.header.name,
    coordinatorKey,
    lastSeq: () => last,
    read(from, to) {
      const out = [];
      for (let seq = from; seq <= to; seq++) {
        const index = bySeq.get(seq);
        if (index !== undefined) out.push(events[index]!);
      }
      return out;
    },
    checkpoints: () => checkpoints,
    verify() {
      report ??= Promise.resolve(verifyAuditExport(parsed, publicKeyOf(coordinatorKey)));
      return report;
    },
    searchPayloads(text) {
      // stringifyJson: an exported payload may nest deeper than JSON.stringify survives.
      texts ??= events.map((event) => stringifyJson(event.payload).toLowerCase());
      const needle = text.toLowerCase();
      const found: number[] = [];
      texts.forEach((payload, index) => {
        if (payload.includes(needle)) found.push(events[index]!.seq);
      });
      return found.sort((a, b) => a - b);
    },
  };
}

/** Reads, parses and wraps an export file (throws with the line number if it is not one). */
export function readExportLogSource(file: string, coordinatorKey: KeyId): LogSource {
  return exportLogSource(parseAuditExport(readFileSync(file, 'utf8')), coordinatorKey);
}
