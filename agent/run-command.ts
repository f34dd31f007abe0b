/**
 * Running a config's activation or health-check command: `/bin/sh -c` in
 * the target's directory, with a timeout that kills the whole process
 * group, keeping the tail of its output for the report.
 */
import { spawn } from 'node:child_process';

export interface CommandResult {
  ok: boolean;
  exitCode: number | null;
  timedOut: boolean;
  /** Last few KiB of stdout+stderr. */
  outputTail: string;
}

const TAIL_BYTES = 4096;

export function runCommand(command: string, options: { cwd: string; env: Record<string, string>; timeoutSeconds: number }): Promise<CommandResult> {
  return new Promise((resolve) => {
    let tail = '';
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
    };
    const child = spawn('/bin/sh', ['-c', command], { cwd: options.cwd, env: { ...process.env, ...options.env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, options.timeoutSeconds * 1000);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, exitCode: null, timedOut: false, outputTail: `${tail}${error.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0 && !timedOut, exitCode: code, timedOut, outputTail: tail });
    });
  });
}
