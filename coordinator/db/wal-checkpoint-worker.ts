/**
 * The WAL checkpointer's thread (wal-checkpointer.ts, started through
 * nix/runnable-module.ts): its own connection to the coordinator's
 * database, a passive checkpoint every `intervalMs`, until told to stop.
 */
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import type BetterSqlite3 from 'better-sqlite3';
import type { WalCheckpointerData, WalCheckpointerMessage } from './wal-checkpointer.js';

const { file, driver, intervalMs } = workerData as WalCheckpointerData;
const port = parentPort!;
// The driver by its resolved path: a worker module names no package (nix/runnable-module.ts).
const Database = createRequire(driver)(driver) as typeof BetterSqlite3;
const db = new Database(file);
// The checkpointing connection's own setting decides its fsyncs: WAL before copying, database after.
db.pragma('synchronous = NORMAL');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
let stopped = false;
const timer = setInterval(() => {
  if (stopped) return;
  try {
    checkpoint.get();
  } catch {
    // SQLITE_BUSY and the like: the next tick tries again; the coordinator's own checkpoints bound the WAL.
  }
}, intervalMs);
port.on('message', (message: WalCheckpointerMessage) => {
  if (message === 'stop') {
    stopped = true;
    clearInterval(timer);
    db.close();
    port.close();
  }
});
