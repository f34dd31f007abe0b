/**
 * The audit chain: each event's hash is BLAKE3 over the canonical JSON of
 * all its fields and the previous event's hash, so editing, deleting,
 * reordering or inserting any row breaks the chain at that row. Checkpoints
 * sign (seq, hash) with the coordinator key, so an exported log can be
 * verified offline with only the coordinator's public key.
 */
import { canonicalJson } from '../../protocol/canonical-json.js';
import { blake3Hex } from '../../castore/blake3/index.js';
import { ed25519Verify } from '../../protocol/ed25519.js';
import type { AuditEvent } from '../domain/events.js';
import type { ChainReport } from '../../protocol/api/audit.js';

export const GENESIS_HASH = '0'.repeat(64);

export type UnhashedEvent = Omit<AuditEvent, 'hash'>;

/** The hash of an event: BLAKE3 (hex) of the canonical JSON of every field but `hash`. */
export function eventHash(event: UnhashedEvent): string {
  return encodedEventHash(event, canonicalJson(event.payload));
}

/**
 * eventHash, given the canonical JSON of the event's payload: the
 * coordinator encodes a payload once when it appends the event (the text is
 * hashed, stored, and parsed back for the reducer).
 */
export function encodedEventHash(event: Omit<UnhashedEvent, 'payload'>, payloadJson: string): string {
  return blake3Hex(canonicalEventJson(event, payloadJson));
}

/**
 * `canonicalJson` of an event without its hash, byte for byte (tested
 * against it), for the fixed shape of an event: its keys written in sorted
 * order, without canonicalJson's general walk, which costs several times as
 * much on the path of every command.
 */
function canonicalEventJson(event: Omit<UnhashedEvent, 'payload'>, payloadJson: string): string {
  const text = JSON.stringify;
  return (
    `{"action":${text(event.action)},"actorKey":${text(event.actorKey)},"actorRole":${text(event.actorRole)},"hlc":${text(event.hlc)},` +
    `"payload":${payloadJson},"prevHash":${text(event.prevHash)},"requestSignature":${event.requestSignature === null ? 'null' : text(event.requestSignature)},` +
    `"seq":${safeInteger(event.seq, 'seq')},"subject":${text(event.subject)},"wallTime":${safeInteger(event.wallTime, 'wallTime')}}`
  );
}

function safeInteger(value: number, what: string): number {
  if (!Number.isSafeInteger(value)) throw new TypeError(`canonical JSON allows only safe integers; $.${what} is ${value}`);
  return value;
}

export function checkpointMessage(seq: number, hash: string): Uint8Array {
  return new TextEncoder().encode(`ferry-checkpoint-v1\n${seq}\n${hash}`);
}

export interface Checkpoint {
  seq: number;
  hash: string;
  /** base64 ed25519 signature of checkpointMessage(seq, hash). */
  signature: string;
}

/** What verifying found: a wire shape (the API answers it), so its schema is protocol's. */
export type { ChainReport };

/** An event of the chain by its seq and hash: where a verification got to. */
export interface ChainPosition {
  seq: number;
  hash: string;
}

/**
 * Verifies events fed in seq order (and the checkpoints, with the
 * coordinator's public key), one at a time, so a caller can read a long log
 * in pages and let other work run between them. Reports the first bad seq
 * with the reason: a gap, a seq out of order, a broken link, a hash that
 * does not match the row, a checkpoint whose signature or hash is wrong, or
 * a checkpoint beyond the end of the log (rows cut off the end).
 */
export class ChainVerifier {
  private readonly wanted: Map<number, Checkpoint>;
  private expectedSeq = 1;
  private prevHash = GENESIS_HASH;
  private lastCheckpoint: ChainReport['lastCheckpoint'] = null;
  private failure: ChainReport | undefined;

  /**
   * `after`: resume after a position an earlier run verified (its seq and
   * hash, ChainVerifier.position): only later events are fed, and only
   * later checkpoints are checked. Cheap, but it trusts that prefix as it
   * was; a full run (no `after`) is what finds an edit inside it.
   */
  constructor(
    checkpoints: readonly Checkpoint[],
    private readonly coordinatorPublicKey: Uint8Array,
    after?: ChainPosition,
  ) {
    this.checkpoints = after ? checkpoints.filter((c) => c.seq > after.seq) : checkpoints;
    this.wanted = new Map(this.checkpoints.map((c) => [c.seq, c]));
    if (after) {
      this.expectedSeq = after.seq + 1;
      this.prevHash = after.hash;
    }
  }

  private readonly checkpoints: readonly Checkpoint[];

  /** The last event verified so far (seq 0 and the genesis hash before the first): where a later run may resume. */
  position(): ChainPosition {
    return { seq: this.expectedSeq - 1, hash: this.prevHash };
  }

  /** Checks the next event; false once the chain is broken (later events cannot be trusted, so stop feeding). */
  push(event: AuditEvent): boolean {
    if (this.failure) return false;
    const expectedSeq = this.expectedSeq;
    if (event.seq !== expectedSeq) {
      return this.fail(expectedSeq, event.seq > expectedSeq ? `event ${expectedSeq} is missing (next row is ${event.seq})` : `event ${event.seq} appears out of order`);
    }
    if (event.prevHash !== this.prevHash) return this.fail(event.seq, 'its prevHash does not link to the previous event (a row was removed, inserted or reordered)');
    if (eventHash(event) !== event.hash) return this.fail(event.seq, 'its contents do not match its hash (the row was edited)');
    const checkpoint = this.wanted.get(event.seq);
    if (checkpoint) {
      if (checkpoint.hash !== event.hash) return this.fail(event.seq, 'the signed checkpoint at this seq names another hash');
      if (!ed25519Verify(this.coordinatorPublicKey, checkpointMessage(checkpoint.seq, checkpoint.hash), Buffer.from(checkpoint.signature, 'base64'))) {
        return this.fail(event.seq, "the checkpoint's signature is not the coordinator's");
      }
      this.lastCheckpoint = { seq: checkpoint.seq, hash: checkpoint.hash };
    }
    this.prevHash = event.hash;
    this.expectedSeq++;
    return true;
  }

  /** The report once every event was fed (or the chain broke). */
  finish(): ChainReport {
    if (this.failure) return this.failure;
    const beyond = this.checkpoints.find((c) => c.seq >= this.expectedSeq);
    if (beyond) {
      this.fail(this.expectedSeq, `the log ends at ${this.expectedSeq - 1} but a signed checkpoint covers ${beyond.seq} (rows were cut off the end)`);
      return this.failure!;
    }
    const verified = this.expectedSeq - 1;
    return { ok: true, events: verified, verifiedThrough: verified, lastCheckpoint: this.lastCheckpoint, firstBad: null };
  }

  private fail(seq: number, reason: string): false {
    const verified = this.expectedSeq - 1;
    this.failure = { ok: false, events: verified, verifiedThrough: verified, lastCheckpoint: this.lastCheckpoint, firstBad: { seq, reason } };
    return false;
  }
}

/** Verifies a whole log at once (an export in memory); see ChainVerifier. */
export function verifyChain(events: Iterable<AuditEvent>, checkpoints: readonly Checkpoint[], coordinatorPublicKey: Uint8Array): ChainReport {
  const verifier = new ChainVerifier(checkpoints, coordinatorPublicKey);
  for (const event of events) if (!verifier.push(event)) break;
  return verifier.finish();
}
