/**
 * Materializing the ~200 MiB / 20,000-file benchmark closure from a local
 * castore into a store directory: `materializeStorePath` (agent/materialize.ts)
 * against the implementation it replaced (kept below as the reference), in
 * the same run, alternating which goes first.
 *
 * Every run writes into a new store directory: on this ext4 (no journal)
 * creating files within ~5 minutes of deleting many is several times slower
 * (the kernel skips recently deleted inodes one by one: `recently_deleted`
 * in perf), so all outputs are deleted only at the end, and the store path
 * is found without `nix-store --add` (below). `sync` runs
 * (untimed) before each run, so that one run's writeback does not land in
 * the next one's time. One untimed warm-up run of each comes first: it
 * starts the writer threads (once per process) and absorbs what is left of
 * earlier deletions.
 *
 * Checks: every output (new and reference) has the same names, types,
 * modes, sizes, mtimes and atimes as the first reference output, and the
 * same file modes and mtimes as the Nix store path itself; every new
 * output has the same file contents and symlink targets as the reference.
 *
 * Run: npm run bench:materialize   (needs nix-store; see bench/README.md)
 * BENCH_RUNS=N (default 5) runs of each; BENCH_KEEP=1 keeps the outputs.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { materializeStorePath, removeTree } from '../agent/materialize.js';
import { storePathLocation } from '../nix/store-path.js';
import { LocalCastore, ingestStorePath, type Node, type StorePathInfo } from '../castore/index.js';
import { storePathBaseName } from '../nix/index.js';
import { nixEnv } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { report } from './harness.js';

// ---------------------------------------------------------------------------
// REFERENCE: materializeStorePath as it was before this benchmark (commit be0012e),
// unchanged but for names: open 0644 + write + close, then chmod and utimes by path,
// one async-generator read per file, all on the main thread.

async function referenceWriteNode(store: LocalCastore, node: Node, target: string): Promise<void> {
  switch (node.type) {
    case 'symlink':
      symlinkSync(node.target, target);
      lutimesSync(target, 1, 1);
      return;
    case 'file': {
      const fd = openSync(target, 'wx', 0o644);
      try {
        if (node.size > 0) {
          for await (const chunk of store.readBlob(node.digest)) {
            for (let offset = 0; offset < chunk.length; ) offset += writeSync(fd, chunk, offset, chunk.length - offset);
          }
        }
      } finally {
        closeSync(fd);
      }
      chmodSync(target, node.executable ? 0o555 : 0o444);
      utimesSync(target, 1, 1);
      return;
    }
    case 'directory':
      mkdirSync(target, { mode: 0o755 });
      for (const entry of store.readDirectory(node.digest)) await referenceWriteNode(store, entry, path.join(target, entry.name));
      chmodSync(target, 0o555);
      utimesSync(target, 1, 1);
      return;
  }
}

async function referenceMaterializeStorePath(store: LocalCastore, info: StorePathInfo, storeDir: string): Promise<boolean> {
  const final = storePathLocation(storeDir, info.storePath);
  if (existsSync(final)) return false;
  mkdirSync(storeDir, { recursive: true });
  const temp = path.join(storeDir, `.ferry-tmp-${storePathBaseName(info.storePath)}-${randomBytes(4).toString('hex')}`);
  try {
    await referenceWriteNode(store, info.root, temp);
    const dirFd = openSync(storeDir, 'r');
    try {
      renameSync(temp, final);
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch (error) {
    removeTree(temp);
    throw error;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Comparing trees.

interface TreeEntry {
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  size: number;
  mtimeMs: number;
  atimeMs: number;
}

/** lstat of every path below `root` (no reads: reading a file would change its atime). */
function manifestOf(root: string): Map<string, TreeEntry> {
  const manifest = new Map<string, TreeEntry>();
  const walk = (relative: string) => {
    const stat = lstatSync(path.join(root, relative));
    const type = stat.isDirectory() ? 'directory' : stat.isSymbolicLink() ? 'symlink' : stat.isFile() ? 'file' : undefined;
    if (!type) throw new Error(`${relative} in ${root} is neither a file, a directory nor a symlink`);
    manifest.set(relative, { type, mode: stat.mode & 0o7777, size: stat.size, mtimeMs: stat.mtimeMs, atimeMs: stat.atimeMs });
    if (type === 'directory') for (const name of readdirSync(path.join(root, relative)).sort()) walk(relative === '' ? name : `${relative}/${name}`);
  };
  walk('');
  return manifest;
}

function compareManifests(what: string, expected: Map<string, TreeEntry>, actual: Map<string, TreeEntry>, fields: (keyof TreeEntry)[], only?: (entry: TreeEntry) => boolean): void {
  const names = (manifest: Map<string, TreeEntry>) => [...manifest.keys()].join('\n');
  if (names(expected) !== names(actual)) throw new Error(`${what}: the trees have different names`);
  for (const [name, want] of expected) {
    const got = actual.get(name)!;
    if (only && !only(want)) continue;
    for (const field of fields) {
      if (want[field] !== got[field]) throw new Error(`${what}: ${name || '.'} has ${field} ${String(got[field])}, expected ${String(want[field])}`);
    }
  }
}

function compareContents(what: string, manifest: Map<string, TreeEntry>, expectedRoot: string, actualRoot: string): void {
  for (const [name, entry] of manifest) {
    if (entry.type === 'file') {
      if (!readFileSync(path.join(expectedRoot, name)).equals(readFileSync(path.join(actualRoot, name)))) throw new Error(`${what}: ${name} differs`);
    } else if (entry.type === 'symlink') {
      if (readlinkSync(path.join(expectedRoot, name)) !== readlinkSync(path.join(actualRoot, name))) throw new Error(`${what}: symlink ${name} differs`);
    }
  }
}

// ---------------------------------------------------------------------------

const runs = Number(process.env.BENCH_RUNS ?? 5);
const work = path.join(benchWorkDir, `materialize-${process.pid}`);
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
// Outputs are ~2.7 GB per run of this benchmark: removed at exit, also after a failure.
process.on('exit', () => {
  if (process.env.BENCH_KEEP) process.stderr.write(`outputs kept in ${work}\n`);
  else removeTree(work);
});

// The closure, from `nix-store --dump` straight into a fresh castore (no NAR file shared with other benchmarks).
const storePath = bigClosureStorePath(0, nixEnv);
const store = LocalCastore.open(path.join(work, 'castore'));
const dump = spawn('nix-store', ['--dump', storePath], { env: nixEnv, stdio: ['ignore', 'pipe', 'inherit'] });
const info = await ingestStorePath(store, dump.stdout!, { storePath, references: [] });
const root = info.root;
process.stderr.write(`ingested ${storePath} (${info.narSize} bytes of NAR, ${root.type === 'directory' ? root.size : 1} nodes)\n`);

const implementations = {
  reference: referenceMaterializeStorePath,
  new: materializeStorePath,
};
type Name = keyof typeof implementations;
const times: Record<Name, number[]> = { reference: [], new: [] };
const cpu: Record<Name, number[]> = { reference: [], new: [] };
const outputs: Record<Name, string[]> = { reference: [], new: [] };

const warmUp: Record<Name, number> = { reference: 0, new: 0 };
for (let run = -1; run < runs; run++) {
  const order: Name[] = run % 2 === 0 ? ['reference', 'new'] : ['new', 'reference'];
  for (const name of order) {
    const storeDir = path.join(work, 'out', `${name}-${run < 0 ? 'warm-up' : run}`);
    execFileSync('sync');
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    if (!(await implementations[name](store, info, storeDir))) throw new Error(`${name} wrote nothing`);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpuStart);
    process.stderr.write(`run ${run < 0 ? 'warm-up' : run} ${name.padEnd(9)} ${seconds.toFixed(3)} s wall, ${((used.user + used.system) / 1e6).toFixed(3)} s CPU (all threads)\n`);
    if (run < 0) {
      warmUp[name] = seconds;
      continue;
    }
    times[name].push(seconds);
    cpu[name].push((used.user + used.system) / 1e6);
    outputs[name].push(storePathLocation(storeDir, storePath));
  }
}

// Checks (outputs are complete and untouched at this point). Each tree is walked once: listing a
// directory changes its atime (relatime, atime <= mtime), so a second walk would see other atimes.
const manifests = { reference: outputs.reference.map(manifestOf), new: outputs.new.map(manifestOf) };
const expected = manifests.reference[0]!;
const nixManifest = manifestOf(storePath);
const allFields: (keyof TreeEntry)[] = ['type', 'mode', 'size', 'mtimeMs', 'atimeMs'];
for (const name of ['reference', 'new'] as const) {
  for (const [run, manifest] of manifests[name].entries()) {
    compareManifests(`${name} run ${run} vs reference run 0`, expected, manifest, allFields);
    // As Nix lays it out: same names and types, file sizes, modes and mtimes of everything.
    compareManifests(`${name} run ${run} vs the Nix store`, nixManifest, manifest, ['type', 'mode', 'mtimeMs']);
    compareManifests(`${name} run ${run} vs the Nix store`, nixManifest, manifest, ['size'], (entry) => entry.type === 'file');
  }
}
for (const [run, output] of outputs.new.entries()) compareContents(`new run ${run} vs reference run 0`, expected, outputs.reference[0]!, output);
process.stderr.write(`checked: ${expected.size} entries per tree, ${outputs.new.length + outputs.reference.length} trees\n`);

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
const ratios = times.reference.map((reference, run) => reference / times.new[run]!);
const megabytes = info.narSize / 1e6;
report('materialize', [
  ...(['reference', 'new'] as const).map((name) => ({
    what: name === 'reference' ? 'reference (before: chmod/utimes by path, main thread only)' : 'materializeStorePath (agent/materialize.ts)',
    'median s': median(times[name]).toFixed(3),
    'min s': Math.min(...times[name]).toFixed(3),
    'median CPU s': median(cpu[name]).toFixed(3),
    rate: `${(megabytes / median(times[name])).toFixed(0)} MB/s`,
    runs: times[name].map((seconds) => seconds.toFixed(3)).join(' '),
    'warm-up s': warmUp[name].toFixed(3),
  })),
  {
    what: 'speed-up (reference / new)',
    'median s': `${(median(times.reference) / median(times.new)).toFixed(2)}x`,
    'min s': `${(Math.min(...times.reference) / Math.min(...times.new)).toFixed(2)}x`,
    'median CPU s': '',
    rate: `per run: median ${median(ratios).toFixed(2)}x`,
    runs: ratios.map((ratio) => ratio.toFixed(2)).join(' '),
    'warm-up s': '',
  },
]);

store.close();
