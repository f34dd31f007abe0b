/**
 * The viewer's operations over one log source, as JSON-ready results: the
 * same code answers the web viewer's API, `ferry audit show|replay` against a
 * live coordinator (through that API) and against an export file (directly).
 * The results are the replies VIEWER_ROUTES describes (protocol/api/viewer-views.ts).
 */
import { clipJsonDepth, MAX_VIEWER_JSON_DEPTH } from '../../protocol/json-bounds.js';
import { FerryError } from '../../protocol/errors.js';
import { ActionSchema } from '../domain/events.js';
import type { EventDetail, StateResult, TimelinePage, VerificationStatus, ViewerInfo } from '../../protocol/api/viewer-views.js';
import { fleetView, type FleetViewOptions } from './fleet-view.js';
import type { LogSource } from './log-source.js';
import { ReplayIndex, type TimelinePageRequest } from './replay-index.js';
import type { TimelineFilter } from './timeline.js';
import { configSignatureStatus, eventVerification, VerificationCache, type VerificationOptions } from './verification.js';

export interface ViewerOptions {
  /** Snapshot interval of the replay index (default 500). */
  snapshotEvery?: number;
  verification?: VerificationOptions;
}

/** Options for `state`: a page of agents and short histories, or everything (`full`). */
export interface StateOptions {
  full?: boolean;
  agentOffset?: number;
  agentLimit?: number;
  agentQuery?: string;
}

export class Viewer {
  private index: ReplayIndex;
  readonly verification: VerificationCache;
  private readonly snapshotEvery: number;
  /** The verification the index was last checked against (a different break means re-index). */
  private indexedAgainst: VerificationStatus | undefined;

  constructor(
    readonly source: LogSource,
    options: ViewerOptions = {},
  ) {
    this.snapshotEvery = options.snapshotEvery ?? 500;
    this.index = new ReplayIndex(source, { snapshotEvery: this.snapshotEvery });
    this.verification = new VerificationCache(source, options.verification);
  }

  /**
   * Brings the index up to date with the log, and the verification status
   * too (re-checked as VerificationCache decides, or now with `forceVerify`).
   * When a re-check finds the log broken differently than before (rows
   * edited in place), the index is rebuilt from the log as it now is.
   */
  async ready(forceVerify = false): Promise<VerificationStatus> {
    await this.index.refresh();
    const status = await this.verification.status(forceVerify);
    const known = this.indexedAgainst;
    this.indexedAgainst = status;
    if (known && JSON.stringify(status.firstBad) !== JSON.stringify(known.firstBad)) {
      this.index = new ReplayIndex(this.source, { snapshotEvery: this.snapshotEvery });
      await this.index.refresh();
    }
    return status;
  }

  /** The verification status `ready` last brought up to date. */
  private currentVerification(): VerificationStatus {
    const status = this.verification.peek();
    if (!status) throw new Error('Viewer: call ready() before reading from it');
    return status;
  }

  /** The replay index (for the benchmark and tests). */
  get replayIndex(): ReplayIndex {
    return this.index;
  }

  info(): ViewerInfo {
    return {
      name: this.source.name,
      coordinatorKey: this.source.coordinatorKey,
      mode: this.source.mode,
      lastSeq: this.index.lastSeq,
      replayableThrough: this.index.replayableThrough,
      stoppedAt: this.index.stoppedAt,
      snapshotEvery: this.index.snapshotEvery,
      verification: this.currentVerification(),
      actions: [...ActionSchema.options],
    };
  }

  /**
   * A position named by the user: a seq (`1234`), `end`, or a time (ISO
   * 8601, e.g. `2026-11-26T10:00:00Z`: the last event at or before it).
   * Refuses (FerryError OUT_OF_RANGE) anything else.
   */
  resolvePosition(at: string): number {
    const text = at.trim();
    if (text === 'end' || text === 'latest' || text === '') return this.index.replayableThrough;
    if (/^\d+$/.test(text)) return Number(text);
    if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
      const ms = Date.parse(text);
      if (Number.isFinite(ms)) return this.index.seqAtTime(ms);
    }
    throw new FerryError('OUT_OF_RANGE', `'${at}' is neither a seq number nor an ISO time`);
  }

  timeline(filter: TimelineFilter, page: TimelinePageRequest): TimelinePage {
    return this.index.timeline(filter, page);
  }

  /**
   * One event with its verification status and what it changed. Subtrees
   * nested deeper than MAX_VIEWER_JSON_DEPTH (only a log written before
   * the JSON bounds holds them) are replaced by a placeholder: every
   * reader of this result (JSON encoders, the page, the CLI) recurses.
   */
  event(seq: number): EventDetail {
    const entry = this.index.entry(seq);
    if (!entry) throw new FerryError('OUT_OF_RANGE', `no event ${seq} in the log (1..${this.index.lastSeq})`);
    const { event, diff, replayProblem } = this.index.eventWithDiff(seq);
    return clipJsonDepth<EventDetail>({
      entry,
      event,
      actorName: this.index.nameOf(String(event.actorKey)),
      verification: eventVerification(this.currentVerification(), seq),
      requestSignature: typeof event.requestSignature === 'string' ? event.requestSignature : null,
      configSignature: configSignatureStatus(event),
      diff,
      replayProblem,
    }, MAX_VIEWER_JSON_DEPTH);
  }

  /** The fleet after event `seq`, replayed with the coordinator's reducer; over-deep facts clipped as in `event`. */
  state(seq: number, options: StateOptions = {}): StateResult {
    const store = this.index.stateAt(seq);
    const viewOptions: FleetViewOptions = options.full
      ? { agentLimit: null, historyLimit: null, listLimit: null }
      : { agentOffset: options.agentOffset ?? 0, agentLimit: options.agentLimit ?? 100, historyLimit: 10, listLimit: 100 };
    if (options.agentQuery) viewOptions.agentQuery = options.agentQuery;
    const state = fleetView(store, (graph, limit) => this.index.headMovesOf(graph, seq, limit), viewOptions);
    return clipJsonDepth<StateResult>({
      seq,
      position: seq === 0 ? null : (this.index.entry(seq) ?? null),
      lastSeq: this.index.lastSeq,
      replayableThrough: this.index.replayableThrough,
      verification: this.currentVerification(),
      state,
    }, MAX_VIEWER_JSON_DEPTH);
  }
}
