// What process-level tests share: a free TCP port on 127.0.0.1, and the built `ferry` run
// asynchronously (the coordinator answering it may live in the test's own process, so a
// synchronous spawn would deadlock it).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';

/** The built CLI (bin/ferry, running build/): `npm run build` first, as the test command does. */
export const ferryBin = path.resolve(import.meta.dirname, '..', 'bin', 'ferry');
/** The CLI from the sources (through tsx), for tests that need no build. */
const ferrySource = path.resolve(import.meta.dirname, '..', 'bench', 'fixtures', 'ferry-cli.ts');

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice, released at once). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs the built `ferry` with `args` to its end: its exit status and what it printed. Never rejects. */
export function runFerry(args: readonly string[]): Promise<CliRun> {
  return finished(spawn(process.execPath, [ferryBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** Runs `ferry` from the sources with `args` and `env` added to this process's, `input` on its standard input. Never rejects. */
export function runFerrySource(args: readonly string[], env: NodeJS.ProcessEnv, input = ''): Promise<CliRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', ferrySource, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.end(input);
  return finished(child);
}

function finished(child: ChildProcess): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve) => child.once('close', (status) => resolve({ status, stdout, stderr })));
}
