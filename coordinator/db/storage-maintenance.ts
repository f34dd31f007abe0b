/**
 * Storage maintenance: when the coordinator's WAL is folded back into the
 * database file (db/database.ts says why not inside commits). A worker
 * thread (db/wal-checkpointer.ts) checkpoints every
 * WAL_BACKGROUND_INTERVAL_MS, started once WAL_BACKGROUND_AFTER_EVENTS
 * events were committed since the database was opened (a one-off CLI
 * command never starts it); the command thread runs a passive checkpoint
 * itself after every WAL_CHECKPOINT_EVERY_EVENTS events (outside their
 * transactions), which bounds the WAL (~7 pages per event: ~110 MiB) under
 * a continuous stream; without a worker, an unref'd timer folds an idle
 * coordinator's WAL back every WAL_CHECKPOINT_INTERVAL_MS.
 */
import type Database from 'better-sqlite3';
import { WalCheckpointer } from './wal-checkpointer.js';

export const WAL_CHECKPOINT_EVERY_EVENTS = 4096;
const WAL_BACKGROUND_AFTER_EVENTS = 256;
const WAL_BACKGROUND_INTERVAL_MS = 250;
const WAL_CHECKPOINT_INTERVAL_MS = 2000;
/** A checkpoint of the command thread that could not finish (the worker held the checkpoint lock, a reader an old snapshot) is retried this many events later. */
const WAL_CHECKPOINT_RETRY_EVENTS = 64;

export interface StorageMaintenanceOptions {
  /** Run a passive WAL checkpoint on the command thread after this many events (default WAL_CHECKPOINT_EVERY_EVENTS). */
  walCheckpointEvery?: number;
  /** Checkpoint the WAL in a background worker thread too (default true). */
  backgroundWalCheckpoints?: boolean;
}

export class StorageMaintenance {
  private readonly walCheckpoint: Database.Statement<[], { busy: number; log: number; checkpointed: number }>;
  private readonly walCheckpointEvery: number;
  private backgroundWalCheckpoints: boolean;
  private eventsSinceWalCheckpoint = 0;
  private eventsSinceOpen = 0;
  private readonly walTimer: NodeJS.Timeout;
  private walCheckpointer: WalCheckpointer | undefined;

  constructor(
    private readonly sqlite: Database.Database,
    options: StorageMaintenanceOptions = {},
  ) {
    this.walCheckpoint = sqlite.prepare('PRAGMA wal_checkpoint(PASSIVE)');
    this.walCheckpointEvery = options.walCheckpointEvery ?? WAL_CHECKPOINT_EVERY_EVENTS;
    this.backgroundWalCheckpoints = options.backgroundWalCheckpoints ?? true;
    this.walTimer = setInterval(() => {
      if (this.eventsSinceWalCheckpoint > 0 && !this.walCheckpointer?.running) this.checkpointWal();
    }, WAL_CHECKPOINT_INTERVAL_MS);
    this.walTimer.unref();
  }

  /** Counts one committed event; call after its transaction, never inside one. May checkpoint or start the worker. */
  afterCommit(): void {
    this.eventsSinceOpen++;
    if (++this.eventsSinceWalCheckpoint >= this.walCheckpointEvery) this.checkpointWal();
    else if (this.eventsSinceOpen >= WAL_BACKGROUND_AFTER_EVENTS && this.backgroundWalCheckpoints && !this.walCheckpointer) this.startWalCheckpointer();
  }

  private startWalCheckpointer(): void {
    try {
      this.walCheckpointer = new WalCheckpointer(this.sqlite.name, WAL_BACKGROUND_INTERVAL_MS);
    } catch {
      // No worker thread (resource limits): the command thread's own checkpoints keep the WAL bounded.
      this.backgroundWalCheckpoints = false;
    }
  }

  /** Whether a background thread is checkpointing the WAL (started after the first few hundred events). */
  get backgroundWalCheckpointing(): boolean {
    return this.walCheckpointer?.running ?? false;
  }

  /**
   * Folds the WAL back into the database file (PASSIVE: never waits for
   * readers, never blocks writers; with the worker running, only what it
   * has not copied yet). Not inside a transaction: the events are already
   * durable in the WAL; this only bounds its size. Returns whether the
   * whole WAL is now in the database file. Never throws.
   */
  checkpointWal(): boolean {
    const sqlite = this.sqlite;
    if (!sqlite.open || sqlite.inTransaction) return false;
    let complete = false;
    try {
      const result = this.walCheckpoint.get();
      // Only a complete checkpoint lets the next commit start the WAL over; otherwise try again soon.
      complete = result !== undefined && result.busy === 0 && result.checkpointed >= result.log;
    } catch {
      // Never fail a command that has committed (or a timer) over housekeeping: the WAL just stays longer.
    }
    this.eventsSinceWalCheckpoint = complete ? 0 : Math.max(0, this.walCheckpointEvery - WAL_CHECKPOINT_RETRY_EVENTS);
    return complete;
  }

  /** Stops the timer and the worker (which finishes a checkpoint in progress); call before the database closes. */
  close(): void {
    clearInterval(this.walTimer);
    this.walCheckpointer?.stop();
    this.walCheckpointer = undefined;
  }
}
