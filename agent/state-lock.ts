/**
 * Who may change an agent's state directory, and when:
 *
 * - `run.lock`: the one `ferry agent run` working on it. A second daemon is
 *   refused (AGENT_BUSY).
 * - `lock`: whoever is changing it right now — the daemon during a round
 *   (not while it waits for the coordinator), or a local command
 *   (apply-bundle, rollback, gc). The others wait their turn, so a local
 *   rollback works while the daemon runs, and neither overwrites what the
 *   other wrote (each reads agent.json again once it holds the lock).
 *
 * A lock file holds its holder's pid, created exclusively; a lock whose
 * process is gone (SIGKILL, reboot) is taken over.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { processAlive } from '../castore/index.js';

export class AgentBusyError extends Error {
  override readonly name = 'AgentBusyError';
  readonly code = 'AGENT_BUSY';
}

/** Takes `file` for this process, or returns the pid of the live process holding it. */
function tryLock(file: string): number | undefined {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let holder = Number.NaN;
    try {
      holder = Number.parseInt(readFileSync(file, 'utf8'), 10);
    } catch {
      continue; // released meanwhile
    }
    if (Number.isInteger(holder) && holder !== process.pid && processAlive(holder)) return holder;
    // Its process is gone (SIGKILL, reboot; a pid equal to ours is an earlier process's): take it over.
    rmSync(file, { force: true });
  }
  throw new AgentBusyError(`${file}: could not take it (another process keeps taking it)`);
}

export interface LockOptions {
  /** `lock` (default) or `run.lock`. */
  name?: 'lock' | 'run.lock';
  /** How long to wait for a live holder to let go (default 0: refuse at once). */
  waitMs?: number;
  /** Told once when the lock is busy and this waits. */
  onWait?: (holderPid: number) => void;
}

/**
 * Takes a lock of the state directory for this process and returns its
 * release. Refuses (AgentBusyError, naming the holder) when another live
 * process still holds it after `waitMs`.
 */
export async function lockStateDir(stateDir: string, options: LockOptions = {}): Promise<() => void> {
  const file = path.join(stateDir, options.name ?? 'lock');
  const deadline = Date.now() + (options.waitMs ?? 0);
  let told = false;
  for (;;) {
    const holder = tryLock(file);
    if (holder === undefined) return () => rmSync(file, { force: true });
    if (Date.now() >= deadline) {
      throw new AgentBusyError(
        options.name === 'run.lock'
          ? `${stateDir} already has a ferry agent running (pid ${holder})`
          : `${stateDir} is being changed by another ferry agent process (pid ${holder}) and did not become free`,
      );
    }
    if (!told) options.onWait?.(holder);
    told = true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
