/**
 * Whether the process that left a marker (an ingest in progress, an
 * agent's state-directory lock) is still running.
 */
import { readFileSync } from 'node:fs';

/** Whether `pid` is a running process: a zombie (killed, not yet reaped by its parent) is not. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // Linux: the state letter follows the parenthesised command name.
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true; // no /proc: trust kill(0)
  }
}
