// The `ferry` command as users run it: the built bin/ferry in a child
// process (`npm test` builds first), on real files and, where Nix exists,
// real store paths.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY_VERSION } from '../protocol/version.js';
import { buildFixtureClosure, nix, nixUnavailableReason } from './nix-fixtures/index.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');

function ferry(args: string[], input?: Buffer): { status: number; stdout: Buffer; stderr: string } {
  const result = spawnSync(process.execPath, [ferryBin, ...args], { input, maxBuffer: 1 << 28 });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr.toString() };
}

describe('ferry CLI', () => {
  let dir: string;
  let tree: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-cli-'));
    tree = path.join(dir, 'tree');
    mkdirSync(path.join(tree, 'bin'), { recursive: true });
    writeFileSync(path.join(tree, 'bin', 'run'), '#!/bin/sh\necho hi\n');
    chmodSync(path.join(tree, 'bin', 'run'), 0o755);
    writeFileSync(path.join(tree, 'data'), Buffer.alloc(50_000, 9));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists command groups and has --help on every level', () => {
    const top = ferry(['--help']);
    expect(top.status).toBe(0);
    expect(top.stdout.toString()).toMatch(/nar\s+NAR archives/);
    expect(top.stdout.toString()).toMatch(/castore\s+/);
    expect(ferry(['nar', '--help']).stdout.toString()).toMatch(/nar restore <file.nar\|-> <dir>/);
    expect(ferry(['castore', 'gc', '--help']).stdout.toString()).toMatch(/--dry-run/);
    expect(ferry(['--version']).stdout.toString()).toBe(`ferry ${FERRY_VERSION}\n`);
  });

  it('explains usage mistakes with exit code 2', () => {
    const wrong = ferry(['nar', 'dump']);
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/Usage: ferry nar dump/);
    expect(ferry(['nar', 'frobnicate']).status).toBe(2);
    expect(ferry(['nope']).stderr).toMatch(/unknown command group 'nope'/);
    // Periodic health options are checked before anything is asked of a coordinator.
    const submit = ['config', 'submit', 'web', '--url', 'http://127.0.0.1:9', '--target', 'x86_64-linux=/nix/store/00000000000000000000000000000000-web', '--activate', 'bin/activate'];
    const cases: [string[], RegExp][] = [
      [['--probation', '60'], /need --health CMD/],
      [['--health', 'bin/check', '--probation', '60'], /--health-failures and --probation need --health-interval/],
      [['--health', 'bin/check', '--health-interval', '0'], /--health-interval must be at least 1 second/],
      [['--health', 'bin/check', '--health-interval', '10', '--health-failures', 'x'], /--health-failures must be a non-negative integer/],
    ];
    for (const [extra, message] of cases) {
      const refused = ferry([...submit, ...extra]);
      expect(refused.status, extra.join(' ')).toBe(2);
      expect(refused.stderr).toMatch(message);
    }
  });

  it('dumps, hashes, lists and restores NARs', () => {
    const nar = ferry(['nar', 'dump', tree]).stdout;
    const narFile = path.join(dir, 'tree.nar');
    writeFileSync(narFile, nar);
    const hash = ferry(['nar', 'hash', '--json', '-'], nar);
    expect(JSON.parse(hash.stdout.toString())).toMatchObject({ narSize: nar.length, narHash: expect.stringMatching(/^sha256:/) });
    const listing = JSON.parse(ferry(['nar', 'ls', '--json', narFile]).stdout.toString()) as { path: string; executable?: boolean }[];
    expect(listing.map((e) => e.path)).toEqual(['', 'bin', 'bin/run', 'data']);
    expect(listing[2]!.executable).toBe(true);
    const restored = path.join(dir, 'restored');
    expect(ferry(['nar', 'restore', narFile, restored]).status).toBe(0);
    expect(readFileSync(path.join(restored, 'data')).length).toBe(50_000);
    expect(ferry(['nar', 'dump', restored]).stdout.equals(nar)).toBe(true);
  });

  it('refuses a hostile NAR with the code, offset and nothing left behind', () => {
    const nar = ferry(['nar', 'dump', tree]).stdout;
    const evil = Buffer.from(nar);
    const name = evil.indexOf(Buffer.from('data'));
    evil.write('..\0\0', name, 'latin1'); // the entry name 'data' becomes '..' + NULs: length stays 4
    const target = path.join(dir, 'evil');
    const result = ferry(['nar', 'restore', '-', target], evil);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/ferry: error \[NAR_BAD_NAME\]: .*byte offset \d+/);
    expect(existsSync(target)).toBe(false);
    const truncated = ferry(['nar', 'hash', '-'], nar.subarray(0, 300));
    expect(truncated.stderr).toMatch(/\[NAR_TRUNCATED\].*byte offset 300/);
  });

  it('ingests into a castore, exports byte-identically, and reports stat, fsck and gc as JSON', () => {
    const nar = ferry(['nar', 'dump', tree]).stdout;
    const dataDir = path.join(dir, 'data');
    const storePath = '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-tree';
    const ingest = ferry(['castore', 'ingest', '--data-dir', dataDir, '--store-path', storePath, '--json', '-'], nar);
    expect(ingest.status, ingest.stderr).toBe(0);
    expect(JSON.parse(ingest.stdout.toString())).toMatchObject({ storePath, narSize: nar.length });
    expect(ferry(['castore', 'export', '--data-dir', dataDir, storePath]).stdout.equals(nar)).toBe(true);
    expect(JSON.parse(ferry(['castore', 'stat', '--json', '--data-dir', dataDir]).stdout.toString())).toMatchObject({ storePaths: 1, blobs: 2 });
    expect(JSON.parse(ferry(['castore', 'fsck', '--json', '--data-dir', dataDir]).stdout.toString()).problems).toEqual([]);
    expect(JSON.parse(ferry(['castore', 'gc', '--dry-run', '--json', '--data-dir', dataDir]).stdout.toString())).toMatchObject({ removedBlobs: 0 });
    const wrongHash = ferry(['castore', 'ingest', '--data-dir', dataDir, '--store-path', `${storePath}2`, '--nar-hash', 'sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73', '-'], nar);
    expect(wrongHash.status).toBe(1);
    expect(wrongHash.stderr).toMatch(/BLOB_CORRUPT.*hashes to/);
    expect(JSON.parse(ferry(['castore', 'stat', '--json', '--data-dir', dataDir]).stdout.toString())).toMatchObject({ storePaths: 1 });
  });

  it.skipIf(nixUnavailableReason() !== undefined)('dumps a real store path exactly as nix-store --dump', () => {
    const { app } = buildFixtureClosure();
    expect(ferry(['nar', 'dump', app]).stdout.equals(nix(['--dump', app], { command: 'nix-store' }))).toBe(true);
  });
});
