/**
 * castore throughput, dedup and memory on the ~200 MiB / 20,000-file closure:
 * NAR -> castore ingest, castore -> NAR export, the bytes a second version
 * with ~10% changed files adds, and peak RSS while ingesting a 1 GiB file
 * (in a child process, so its RSS is not this one's).
 * Run: npm run bench:castore   (needs nix-store; see bench/README.md)
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCastore, exportNar, ingestStorePath } from '../castore/index.js';
import { narHash } from '../nix/nar/index.js';
import { nixEnv } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { bestOf, drain, mbPerSecond, report, runToDevNull } from './harness.js';

const runs = Number(process.env.BENCH_RUNS ?? 3);
mkdirSync(benchWorkDir, { recursive: true });

function narFileOf(storePath: string, name: string): { file: string; size: number } {
  const file = path.join(benchWorkDir, `${name}.nar`);
  execFileSync('sh', ['-c', `nix-store --dump '${storePath}' > '${file}'`], { env: nixEnv });
  return { file, size: statSync(file).size };
}

function storedBytes(store: LocalCastore): number {
  const stats = store.stats();
  return stats.blobBytes + stats.directoryBytes;
}

const v0Path = bigClosureStorePath(0, nixEnv);
const v1Path = bigClosureStorePath(1, nixEnv);
const v0 = narFileOf(v0Path, 'big-v0');
const v1 = narFileOf(v1Path, 'big-v1');
const storeDir = path.join(benchWorkDir, 'castore');
const read = (file: string) => createReadStream(file, { highWaterMark: 1 << 20 });

const nixDump = await bestOf(runs, () => runToDevNull('nix-store', ['--dump', v0Path], nixEnv));
let ingestSeconds = Infinity;
let exportSeconds = Infinity;
let dedup = { afterV0: 0, afterV1: 0 };
for (let run = 0; run < runs; run++) {
  rmSync(storeDir, { recursive: true, force: true });
  const store = LocalCastore.open(storeDir);
  try {
    let info!: Awaited<ReturnType<typeof ingestStorePath>>;
    ingestSeconds = Math.min(ingestSeconds, await bestOf(1, async () => {
      info = await ingestStorePath(store, read(v0.file), { storePath: v0Path, references: [] });
    }));
    exportSeconds = Math.min(exportSeconds, await bestOf(1, () => drain(exportNar(store, info.root))));
    const exported = await narHash(exportNar(store, info.root));
    if (exported.narHash !== info.narHash) throw new Error('export does not match the ingested NAR');
    const afterV0 = storedBytes(store);
    await ingestStorePath(store, read(v1.file), { storePath: v1Path, references: [] });
    dedup = { afterV0, afterV1: storedBytes(store) };
  } finally {
    store.close();
  }
}
rmSync(storeDir, { recursive: true, force: true });

const memoryScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'castore-memory.ts');
const memory = JSON.parse(
  execFileSync(process.execPath, ['--import', 'tsx', memoryScript], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }),
) as { fileBytes: number; seconds: number; maxRssBytes: number };

const added = dedup.afterV1 - dedup.afterV0;
report('castore', [
  { what: 'nix-store --dump (reference)', value: `${nixDump.toFixed(3)} s`, rate: mbPerSecond(v0.size, nixDump), target: '' },
  { what: 'NAR -> castore ingest', value: `${ingestSeconds.toFixed(3)} s`, rate: mbPerSecond(v0.size, ingestSeconds), target: '>= 250 MB/s' },
  { what: 'castore -> NAR export', value: `${exportSeconds.toFixed(3)} s`, rate: mbPerSecond(v0.size, exportSeconds), target: '>= 400 MB/s' },
  { what: 'stored after v0 / NAR v0', value: `${dedup.afterV0} / ${v0.size}`, rate: `${((100 * dedup.afterV0) / v0.size).toFixed(1)} %`, target: '' },
  { what: 'added by v1 (10% files changed) / NAR v1', value: `${added} / ${v1.size}`, rate: `${((100 * added) / v1.size).toFixed(1)} %`, target: '<= 15 %' },
  { what: 'both NARs vs stored', value: `${v0.size + v1.size} vs ${dedup.afterV1}`, rate: `${((100 * dedup.afterV1) / (v0.size + v1.size)).toFixed(1)} %`, target: '' },
  { what: 'peak RSS ingesting a 1 GiB file', value: `${(memory.maxRssBytes / 2 ** 20).toFixed(0)} MiB`, rate: mbPerSecond(memory.fileBytes, memory.seconds), target: '< 200 MB' },
]);
