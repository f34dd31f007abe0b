/** Tiny shared benchmark harness: best-of-N wall time and a results table. */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { benchWorkDir } from './fixtures/big-closure.js';

export async function bestOf(runs: number, body: () => Promise<unknown> | unknown): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await body();
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
  }
  return best;
}

/** Runs a command with stdout discarded (to /dev/null, no pipe cost), failing on a non-zero exit. */
export function runToDevNull(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', openSync('/dev/null', 'w'), 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${command} exited with ${code}`))));
  });
}

export async function drain(chunks: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const chunk of chunks) bytes += chunk.length;
  return bytes;
}

export const MiB = 1024 * 1024;

/**
 * How the shipped unit (deploy/ferry-agent.service) starts the agent: Node's
 * flags and the environment it sets, for a process that fetches as the
 * agent does.
 */
export function agentUnit(repoRoot: string): { nodeFlags: string[]; environment: Record<string, string> } {
  const unit = readFileSync(path.join(repoRoot, 'deploy', 'ferry-agent.service'), 'utf8');
  const match = /^ExecStart=\/usr\/bin\/env node (.*?) ?\S+\/bin\/ferry agent run/m.exec(unit);
  if (!match) throw new Error('deploy/ferry-agent.service: no `ExecStart=/usr/bin/env node … bin/ferry agent run` line');
  const environment: Record<string, string> = {};
  for (const [, assignments] of unit.matchAll(/^Environment=(.*)$/gm)) {
    for (const assignment of assignments!.split(' ').filter(Boolean)) {
      const at = assignment.indexOf('=');
      environment[assignment.slice(0, at)] = assignment.slice(at + 1);
    }
  }
  return { nodeFlags: match[1]!.split(' ').filter(Boolean), environment };
}

/** A process's VmRSS or VmHWM (peak) from /proc, in bytes (0 when it is gone). */
export function procStatus(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? 0) * 1024;
}

/**
 * Resets a process's peak RSS (VmHWM) to its current RSS (Linux `clear_refs`
 * 5), so the next peak is that of what follows; false where the kernel does
 * not allow it (the peak then counts from the process's start).
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** CPU seconds (user + system, every thread) a process has used so far. */
export function procCpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export function mbPerSecond(bytes: number, seconds: number): string {
  return `${(bytes / 1e6 / seconds).toFixed(0)} MB/s`;
}

/** Prints a result table and saves it as JSON under bench/.work/results. */
export function report(name: string, rows: Record<string, string | number>[]): void {
  console.table(rows);
  const dir = path.join(benchWorkDir, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify({ date: new Date().toISOString(), rows }, null, 2)}\n`);
}
