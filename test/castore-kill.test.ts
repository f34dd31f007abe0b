// A real crash: an ingest in a child process is killed with SIGKILL after
// staging blobs. Nothing of it is visible; `castore gc --dry-run` counts
// what it left (without removing it), GC removes it, and so does simply
// opening the castore again (defect 8: its temp files used to stay in
// castore/tmp forever when no GC ran).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { LocalCastore, collectGarbage, type GcReport } from '../castore/index.js';

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const child = path.join(fixtures, 'ingest-until-killed.ts');
/** The CLI from source (the benches' fixture): build/ may be stale while tests run. */
const ferrySource = path.join(fixtures, '..', '..', 'bench', 'fixtures', 'ferry-cli.ts');
let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Stages an ingest into `castoreDir` in a child process and kills it with SIGKILL before it commits. */
async function crashIngest(castoreDir: string): Promise<void> {
  const proc = spawn(process.execPath, ['--import', 'tsx', child, castoreDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (data: Buffer) => data.toString().includes('staged') && resolve());
    proc.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
  });
  proc.kill('SIGKILL');
  await new Promise((resolve) => proc.on('exit', resolve));
}

function ferry(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', ferrySource, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    proc.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const list = (sub: string): string[] => (existsSync(path.join(dir!, 'castore', sub)) ? readdirSync(path.join(dir!, 'castore', sub)) : []);

it('an ingest killed with SIGKILL leaves nothing visible, and GC removes its staging', async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-castore-kill-'));
  await crashIngest(path.join(dir, 'castore'));
  // Opened as a dry run does (keeping what the crash left), to see GC remove it.
  const store = LocalCastore.open(path.join(dir, 'castore'), { keepStaleFiles: true });
  try {
    const count = (what: 'blobs' | 'packFiles' | 'openIngests'): number => store.stats()[what];
    expect(count('blobs')).toBe(0);
    expect(count('packFiles')).toBe(0);
    expect(list('packs')).toHaveLength(1); // the small blobs, unpublished
    expect(list('tmp')).toHaveLength(1); // the large blob, unpublished
    expect(await collectGarbage(store)).toMatchObject({ staleIngestsCleaned: 1, staleTempFiles: 1, stalePackFiles: 1 });
    for (const what of ['blobs', 'packFiles', 'openIngests'] as const) expect(count(what), what).toBe(0);
    expect(list('tmp')).toEqual([]);
    expect(list('packs')).toEqual([]);
  } finally {
    store.close();
  }
});

it('defect 8: `castore gc --dry-run` counts what a killed ingest left without removing it; reopening the castore removes it', async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-castore-kill-'));
  await crashIngest(path.join(dir, 'castore'));

  const dry = await ferry(['castore', 'gc', '--dry-run', '--json', '--data-dir', dir]);
  expect(dry.status, dry.stderr).toBe(0);
  const report = JSON.parse(dry.stdout) as GcReport;
  expect(report).toMatchObject({ dryRun: true, staleIngestsCleaned: 1, staleTempFiles: 1, stalePackFiles: 1 });
  expect(report.staleFileBytes).toBeGreaterThan(3_000_000); // the 3 MB blob and the pack of 600 small ones
  const text = await ferry(['castore', 'gc', '--dry-run', '--data-dir', dir]);
  expect(text.stdout).toMatch(/would remove what crashed ingests left: 1 temp file\(s\) and 1 unpublished pack\(s\) \(\S+ \S+\), 1 ingest record\(s\)/);
  // A dry run changes nothing.
  expect(list('tmp')).toHaveLength(1);
  expect(list('packs')).toHaveLength(1);

  // Any process opening the castore (the coordinator, the agent, a CLI command) removes them.
  const store = LocalCastore.open(path.join(dir, 'castore'));
  try {
    expect(list('tmp')).toEqual([]);
    expect(list('packs')).toEqual([]);
    expect(store.stats().openIngests).toBe(0);
    expect(await collectGarbage(store, { dryRun: true })).toMatchObject({ staleIngestsCleaned: 0, staleTempFiles: 0, stalePackFiles: 0, staleFileBytes: 0 });
  } finally {
    store.close();
  }
});
