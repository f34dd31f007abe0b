import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentBusyError, lockStateDir } from './state-lock.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-state-lock-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('the state directory lock', () => {
  it('holds the pid while taken, and goes on release', async () => {
    const release = await lockStateDir(dir);
    expect(readFileSync(path.join(dir, 'lock'), 'utf8').trim()).toBe(String(process.pid));
    release();
    expect(existsSync(path.join(dir, 'lock'))).toBe(false);
  });

  it('refuses while another live process holds it, or waits for it, and takes over once that process is gone', async () => {
    // A real other process stands in for a running `ferry agent run`.
    const holder = spawn('sleep', ['30']);
    await new Promise((resolve) => holder.once('spawn', resolve));
    writeFileSync(path.join(dir, 'lock'), `${holder.pid}\n`);
    await expect(lockStateDir(dir, { name: 'lock' })).rejects.toBeInstanceOf(AgentBusyError);
    await expect(lockStateDir(dir)).rejects.toThrow(new RegExp(`pid ${holder.pid}`));
    // A waiter is told once, and gets the lock when the holder goes.
    const waits: number[] = [];
    const waiting = lockStateDir(dir, { waitMs: 10_000, onWait: (pid) => waits.push(pid) });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const exited = new Promise((resolve) => holder.once('exit', resolve));
    holder.kill('SIGKILL');
    await exited;
    const release = await waiting;
    expect(waits).toEqual([holder.pid]);
    expect(readFileSync(path.join(dir, 'lock'), 'utf8').trim()).toBe(String(process.pid));
    release();
  });
});
