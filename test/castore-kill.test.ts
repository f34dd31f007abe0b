// A real crash: an ingest in a child process is killed with SIGKILL after
// staging blobs. Nothing of it is visible, and GC cleans its leftovers.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { Castore, collectGarbage } from '../castore/index.js';

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'ingest-until-killed.ts');
let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('an ingest killed with SIGKILL leaves nothing visible, and GC removes its staging', async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-castore-kill-'));
  const proc = spawn(process.execPath, ['--import', 'tsx', child, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (data: Buffer) => data.toString().includes('staged') && resolve());
    proc.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
  });
  proc.kill('SIGKILL');
  await new Promise((resolve) => proc.on('exit', resolve));

  const store = Castore.open(dir);
  try {
    const count = (table: string): number => (store.db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
    expect(count('blobs')).toBe(0);
    expect(count('packs')).toBe(0);
    expect(readdirSync(path.join(dir, 'packs'))).toHaveLength(1); // the small blobs, unpublished
    expect(readdirSync(path.join(dir, 'tmp')).length).toBe(1); // the large blob, unpublished
    expect(collectGarbage(store).staleIngestsCleaned).toBe(1);
    for (const table of ['blobs', 'packs', 'ingests']) expect(count(table), table).toBe(0);
    expect(readdirSync(path.join(dir, 'tmp'))).toEqual([]);
    expect(readdirSync(path.join(dir, 'packs'))).toEqual([]);
  } finally {
    store.close();
  }
});
