// What process-level tests share: a free TCP port on 127.0.0.1, and the built `ferry` run
// asynchronously (the coordinator answering it may live in the test's own process, so a
// synchronous spawn would deadlock it).
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';

/** The built CLI (bin/ferry, running build/): `npm run build` first, as the test command does. */
export const ferryBin = path.resolve(import.meta.dirname, '..', 'bin', 'ferry');

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice, released at once). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs the built `ferry` with `args` to its end: its exit status and what it printed. Never rejects. */
export function runFerry(args: readonly string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [ferryBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve) => child.once('close', (status) => resolve({ status, stdout, stderr })));
}
