/**
 * Audit export: JSON lines that anyone can verify offline with only the
 * coordinator's public key — a header, every event, then the signed
 * checkpoints (the export signs one at its end, so everything is covered).
 */
import { z } from 'zod';
import { AuditEventSchema, type AuditEvent } from '../domain/events.js';
import { verifyChain, type ChainReport, type Checkpoint } from './chain.js';
import { jsonBoundsViolation, MAX_STORED_JSON_DEPTH, stringifyJson } from '../../protocol/json-bounds.js';

export const EXPORT_FORMAT = 'ferry-audit-export-v1';

const HeaderSchema = z.object({ type: z.literal('header'), format: z.literal(EXPORT_FORMAT), coordinatorKey: z.string(), name: z.string(), exportedAt: z.number() });
const CheckpointLineSchema = z.object({ type: z.literal('checkpoint'), seq: z.number().int(), hash: z.string(), signature: z.string() });

/**
 * The lines of an export. Events are written with stringifyJson (the bytes
 * JSON.stringify writes, at any depth): a log may hold payloads nested
 * deeper than JSON.stringify survives, and must still export.
 */
export function* exportLines(header: { coordinatorKey: string; name: string; exportedAt: number }, events: Iterable<AuditEvent>, checkpoints: readonly Checkpoint[]): Generator<string> {
  yield `${JSON.stringify({ type: 'header', format: EXPORT_FORMAT, ...header })}\n`;
  for (const event of events) yield `${stringifyJson({ type: 'event', ...event })}\n`;
  for (const checkpoint of checkpoints) yield `${JSON.stringify({ type: 'checkpoint', ...checkpoint })}\n`;
}

export interface ParsedExport {
  header: z.infer<typeof HeaderSchema>;
  events: AuditEvent[];
  checkpoints: Checkpoint[];
}

/**
 * Parses an export; refuses (with the line number) anything that is not
 * one, including a line nested deeper than MAX_STORED_JSON_DEPTH (checked
 * right after JSON.parse: the file is untrusted, and nothing recursive
 * may see it first). Lines within it are safe for every reader of a log
 * (verification, replay, the viewer walk payloads iteratively).
 */
export function parseAuditExport(text: string): ParsedExport {
  const lines = text.split('\n').filter((line) => line.length > 0);
  const fail = (line: number, why: string): never => {
    throw new Error(`audit export line ${line}: ${why}`);
  };
  let header: ParsedExport['header'] | undefined;
  const events: AuditEvent[] = [];
  const checkpoints: Checkpoint[] = [];
  lines.forEach((line, index) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      fail(index + 1, 'not JSON');
    }
    const violation = jsonBoundsViolation(value, { maxDepth: MAX_STORED_JSON_DEPTH });
    if (violation) fail(index + 1, `${violation.code}: the line ${violation.message}`);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(index + 1, 'not a JSON object');
    const type = (value as { type?: unknown }).type;
    if (index === 0) {
      const parsed = HeaderSchema.safeParse(value);
      if (!parsed.success) fail(1, `not a ${EXPORT_FORMAT} header`);
      header = parsed.data;
    } else if (type === 'event') {
      const { type: _type, ...rest } = value as Record<string, unknown>;
      const parsed = AuditEventSchema.safeParse(rest);
      if (!parsed.success) fail(index + 1, `bad event: ${parsed.error.issues[0]!.message}`);
      events.push(parsed.data!);
    } else if (type === 'checkpoint') {
      const parsed = CheckpointLineSchema.safeParse(value);
      if (!parsed.success) fail(index + 1, 'bad checkpoint');
      checkpoints.push({ seq: parsed.data!.seq, hash: parsed.data!.hash, signature: parsed.data!.signature });
    } else {
      fail(index + 1, `unknown line type ${JSON.stringify(type)}`);
    }
  });
  if (!header) throw new Error('audit export is empty');
  return { header, events, checkpoints };
}

/** Verifies an export with a public key obtained out of band (never the one the file claims). */
export function verifyAuditExport(parsed: ParsedExport, coordinatorPublicKey: Uint8Array): ChainReport {
  return verifyChain(parsed.events, parsed.checkpoints, coordinatorPublicKey);
}
