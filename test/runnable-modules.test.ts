// The modules that run apart (nix/runnable-module.ts: worker threads) in
// each way Ferry runs: from the sources (compiled with esbuild, as vitest and
// tsx run Ferry), from build/ (tsc's output, as an installed Ferry runs) and
// from the CLI bundle (bin/ferry). `npm test` builds first.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { decompress } from 'zstd-napi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeNixBase32 } from '../nix/index.js';
import type { WriterReply, WriterRequest } from '../agent/materialize-sink.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const ferryBin = path.join(root, 'bin', 'ferry');
const bundle = path.join(root, 'build', 'cli-bundle');

/** The worker modules, as their callers name them (relative to the repository). */
const WORKERS = ['agent/materialize-writer-worker.js', 'nix/nar/background-sha256-worker.js', 'coordinator/db/wal-checkpoint-worker.js', 'coordinator/api/stream-refiner-worker.js'];

type Tree = 'sources' | 'build';

/** A module of Ferry as that tree has it: the TypeScript source, or tsc's output in build/. */
async function load<T>(tree: Tree, module: string): Promise<T> {
  const file = tree === 'sources' ? path.join(root, module.replace(/\.js$/, '.ts')) : path.join(root, 'build', module);
  return (await import(pathToFileURL(file).href)) as T;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-runnable-modules-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each<Tree>(['sources', 'build'])('worker modules from the %s', (tree) => {
  it('the materializer writer creates files and symlinks as Nix lays them out, and reports a failure with its code', async () => {
    const { startModuleWorker } = await load<typeof import('../nix/runnable-module.js')>(tree, 'nix/runnable-module.js');
    const { OP_CLOSE, OP_OPEN, OP_SYMLINK, OP_WRITE } = await load<typeof import('../agent/materialize-sink.js')>(tree, 'agent/materialize-sink.js');
    const out = path.join(dir, `writer-${tree}`);
    mkdirSync(out);
    const worker = startModuleWorker(pathToFileURL(path.join(root, tree === 'sources' ? '' : 'build', WORKERS[0]!)));
    const ask = (request: WriterRequest) =>
      new Promise<WriterReply>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.postMessage(request, [request.arena.buffer as ArrayBuffer]);
      });
    try {
      const arena = new TextEncoder().encode('hello, store');
      const arenaBytes = arena.byteLength;
      const reply = await ask({ job: 0, ops: [OP_OPEN, `${out}/run`, 0o555, OP_WRITE, 0, 5, OP_WRITE, 5, 7, OP_CLOSE, OP_SYMLINK, `${out}/sh`, 'run'], arena, exactModes: false, end: true });
      expect(reply).toMatchObject({ job: 0, end: true });
      expect(reply.error).toBeUndefined();
      expect(reply.arena.byteLength).toBe(arenaBytes); // transferred, and handed back
      expect(readFileSync(`${out}/run`, 'utf8')).toBe('hello, store');
      expect(lstatSync(`${out}/run`).mode & 0o777).toBe(0o555);
      expect(lstatSync(`${out}/run`).mtimeMs).toBe(1000);
      expect(readlinkSync(`${out}/sh`)).toBe('run');
      expect(lstatSync(`${out}/sh`).mtimeMs).toBe(1000);
      const failed = await ask({ job: 1, ops: [OP_OPEN, `${out}/run`, 0o444, OP_CLOSE], arena: new Uint8Array(0), exactModes: false, end: true });
      expect(failed.error).toMatchObject({ code: 'EEXIST', syscall: 'open', path: `${out}/run` });
    } finally {
      await worker.terminate();
    }
  });

  it('BackgroundSha256 hashes a stream past the inline size on its thread', async () => {
    const { BackgroundSha256 } = await load<typeof import('../nix/nar/background-sha256.js')>(tree, 'nix/nar/background-sha256.js');
    const data = randomBytes(9 * 1024 * 1024 + 5);
    const hash = new BackgroundSha256();
    for (let at = 0; at < data.length; at += 1 << 20) await hash.update(data.subarray(at, at + (1 << 20)));
    expect(Buffer.from(await hash.digest()).equals(createHash('sha256').update(data).digest())).toBe(true);
  });

  it('the WAL checkpointer copies the WAL back into the database file from its thread', async () => {
    const { WalCheckpointer } = await load<typeof import('../coordinator/db/wal-checkpointer.js')>(tree, 'coordinator/db/wal-checkpointer.js');
    const file = path.join(dir, `wal-${tree}.sqlite`);
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('CREATE TABLE t (x BLOB)');
    const insert = db.prepare('INSERT INTO t VALUES (?)');
    for (let i = 0; i < 200; i++) insert.run(randomBytes(4000));
    const before = statSync(file).size;
    const checkpointer = new WalCheckpointer(file, 20);
    try {
      // The rows reach the database file only through a checkpoint (autocheckpoint is off); one may copy part of them.
      const copied = () => statSync(file).size > before + 200 * 4000;
      const deadline = Date.now() + 10_000;
      while (!copied() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(copied()).toBe(true);
      expect(checkpointer.running).toBe(true);
    } finally {
      checkpointer.stop();
      db.close();
    }
  });

  it('the stream refiner writes one zstd frame of what it was given, on its thread', async () => {
    const { refineToFile } = await load<typeof import('../coordinator/api/stream-refiner.js')>(tree, 'coordinator/api/stream-refiner.js');
    const chunks = Array.from({ length: 5 }, (_, i) => Buffer.concat([randomBytes(50_000), Buffer.alloc(200_000, i)]));
    const file = path.join(dir, `refined-${tree}.zst`);
    async function* source() {
      yield* chunks;
    }
    const size = await refineToFile(source(), file, { level: 9, windowLog: 22 }, new AbortController().signal);
    const frame = readFileSync(file);
    expect(frame.length).toBe(size);
    expect(size).toBeLessThan(5 * 250_000 / 2);
    expect(decompress(frame).equals(Buffer.concat(chunks))).toBe(true);
  });
});

describe('worker modules from the CLI bundle', () => {
  it('names each worker module as the file tsc wrote in build/', () => {
    const named = new Set<string>();
    for (const chunk of readdirSync(bundle).filter((name) => name.endsWith('.js'))) {
      for (const match of readFileSync(path.join(bundle, chunk), 'utf8').matchAll(/new URL\("([^"]+)", import\.meta\.url\)/g)) {
        const file = path.resolve(bundle, match[1]!);
        expect(statSync(file).isFile(), `${chunk} names ${match[1]}`).toBe(true);
        named.add(path.relative(path.join(root, 'build'), file));
      }
    }
    for (const worker of WORKERS) expect(named, worker).toContain(worker);
  });

  it('bin/ferry hashes a large NAR on the hashing thread (castore ingest)', () => {
    const tree = path.join(dir, 'large-tree');
    mkdirSync(tree);
    writeFileSync(path.join(tree, 'blob'), randomBytes(6 * 1024 * 1024));
    const dump = spawnSync(process.execPath, [ferryBin, 'nar', 'dump', tree], { maxBuffer: 1 << 26 });
    expect(dump.status, dump.stderr.toString()).toBe(0);
    const storePath = '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-large';
    const ingest = spawnSync(process.execPath, [ferryBin, 'castore', 'ingest', '--data-dir', path.join(dir, 'castore'), '--store-path', storePath, '--json', '-'], { input: dump.stdout });
    expect(ingest.status, ingest.stderr.toString()).toBe(0);
    expect(JSON.parse(ingest.stdout.toString())).toMatchObject({ narHash: `sha256:${encodeNixBase32(createHash('sha256').update(dump.stdout).digest())}` });
  });
});
