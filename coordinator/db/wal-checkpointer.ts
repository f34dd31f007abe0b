/**
 * Background WAL checkpoints: a worker thread with its own connection to the
 * coordinator's database runs `PRAGMA wal_checkpoint(PASSIVE)` on a timer.
 *
 * A checkpoint copies the WAL's pages back into the database file and
 * fsyncs both; on this kind of machine ~3/4 of its time is waiting for the
 * disk. Done on the command thread it stalled every command behind it; in a
 * worker it overlaps with them (SQLite lets one connection checkpoint while
 * another commits). PASSIVE never blocks readers or writers and never waits.
 *
 * The worker alone cannot bound the WAL under a continuous stream of
 * commands: SQLite restarts the WAL only when it is completely checkpointed
 * as a write begins, and the writer keeps adding frames while the worker
 * copies. So the coordinator still runs a passive checkpoint itself every
 * so many events (cheap then: only what the worker has not copied yet).
 *
 * Durability is not involved: commits are durable in the WAL before a
 * checkpoint ever looks at them, and a checkpoint interrupted by a crash is
 * redone from the WAL at the next open.
 */
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import { startModuleWorker } from '../../nix/runnable-module.js';

const CHECKPOINT_WORKER = new URL('./wal-checkpoint-worker.js', import.meta.url);

/** What the checkpointing thread is started with: the database, better-sqlite3's resolved path, the period. */
export interface WalCheckpointerData {
  file: string;
  driver: string;
  intervalMs: number;
}

/** To the checkpointing thread: close the connection and end. */
export type WalCheckpointerMessage = 'stop';

export class WalCheckpointer {
  private worker: Worker | undefined;
  /** Set when the worker failed or exited on its own: the coordinator then checkpoints on its own thread. */
  failed = false;

  constructor(file: string, intervalMs: number) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = startModuleWorker(CHECKPOINT_WORKER, { workerData: { file, driver, intervalMs } satisfies WalCheckpointerData });
    worker.unref();
    worker.on('error', () => {
      this.failed = true;
    });
    worker.on('exit', () => {
      if (this.worker === worker) this.failed = true;
      this.worker = undefined;
    });
    this.worker = worker;
  }

  get running(): boolean {
    return this.worker !== undefined && !this.failed;
  }

  /** Stops the worker: it closes its connection after any checkpoint in progress. */
  stop(): void {
    const worker = this.worker;
    this.worker = undefined;
    worker?.postMessage('stop' satisfies WalCheckpointerMessage);
  }
}
