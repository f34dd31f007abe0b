/**
 * Where the viewer reads an audit log: the live coordinator's database
 * (live-source.ts) or an export file verified with a public key obtained
 * out of band (file-source.ts). The replay index, the verification status
 * and the web viewer work on this interface only, so both modes share them.
 */
import type { ChainReport, Checkpoint } from '../audit/chain.js';
import type { AuditEvent } from '../domain/events.js';

export interface LogSource {
  /** `live`: the coordinator's own log (grows); `file`: an export (fixed, read-only). */
  readonly mode: 'live' | 'file';
  /** The coordinator's name (from its log or the export header). */
  readonly name: string;
  /** The coordinator key the log is verified with. */
  readonly coordinatorKey: string;
  /** The highest seq in the log (0 when empty). */
  lastSeq(): number;
  /**
   * Events with `from <= seq <= to`, in seq order, exactly as stored: a
   * tampered row comes back as it is (its payload parsed when it is JSON),
   * so callers must validate before trusting its shape.
   */
  read(from: number, to: number): AuditEvent[];
  /** The signed checkpoints, in seq order. */
  checkpoints(): Checkpoint[];
  /** Verifies the whole chain and the checkpoint signatures (O(log); a live coordinator keeps serving meanwhile). */
  verify(): Promise<ChainReport>;
  /** Seqs (ascending) whose payload JSON contains `text`, case-insensitively. */
  searchPayloads(text: string): number[];
}
