/**
 * One agent process per state directory: `ferry agent run`, and the local
 * commands that change the machine (apply-bundle, rollback, gc), hold
 * `<state-dir>/lock` (the holder's pid, created exclusively). Two of them
 * at once would race on agent.json, the profile and the temp trees of a
 * deployment. A lock whose process is gone (SIGKILL, reboot) is taken over.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export class AgentBusyError extends Error {
  override readonly name = 'AgentBusyError';
  readonly code = 'AGENT_BUSY';
}

/** Whether `pid` is a running process: a zombie (killed, not yet reaped by its parent) is not. */
function processAlive(pid: number): boolean {
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

/**
 * Takes the state directory's lock for this process and returns its
 * release. Refuses (AgentBusyError, naming the holder) while another live
 * process holds it.
 */
export function lockStateDir(stateDir: string): () => void {
  const file = path.join(stateDir, 'lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => rmSync(file, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let holder = Number.NaN;
    try {
      holder = Number.parseInt(readFileSync(file, 'utf8'), 10);
    } catch {
      continue; // released meanwhile
    }
    if (Number.isInteger(holder) && holder !== process.pid && processAlive(holder)) {
      throw new AgentBusyError(`${stateDir} is in use by another ferry agent process (pid ${holder}): stop it first (systemctl stop ferry-agent)`);
    }
    // Its process is gone (SIGKILL, reboot; a pid equal to ours is an earlier process's): take it over.
    rmSync(file, { force: true });
  }
  throw new AgentBusyError(`${stateDir}: could not take its lock (another process keeps taking it)`);
}
