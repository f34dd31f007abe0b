// `ferry config diff` against `nix store diff-closures` on real closures:
// two closures built by real Nix (test/nix-fixtures/diff-fixture.nix) are
// pushed to a coordinator running as a child process, submitted as two
// configs of a graph, and diffed by the built CLI; its package lines must
// be Nix 2.8's, line for line. The fetch estimate is checked against the
// files of the two closures read from /nix/store and hashed here, and the
// viewer's route against the API's (one handler).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, digestFromBytes } from '../castore/index.js';
import type { ConfigDiff } from '../protocol/api/config-diff.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { loadIdentity } from '../protocol/identity.js';
import { buildDiffFixture, nix, nixEnv, nixStore, nixUnavailableReason } from './nix-fixtures/index.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping config diff real-Nix tests: ${skipReason}`);
const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');

/** A file of a closure: its size, and for one that embeds store paths, its bytes with their hash parts blanked (what reference-aware dedup keys on). */
interface StoreFile {
  size: number;
  normalized?: string;
}

/** The regular files below `root` (a store path), by BLAKE3: what the castore keeps as blobs. */
function filesOf(root: string, into: Map<string, StoreFile>): void {
  const stat = lstatSync(root);
  if (stat.isSymbolicLink()) return;
  if (stat.isFile()) {
    const bytes = readFileSync(root);
    const text = bytes.toString('latin1');
    const normalized = text.replace(/\/nix\/store\/[0-9a-df-np-sv-z]{32}-/g, '/nix/store/' + '-'.repeat(32) + '-');
    into.set(digestFromBytes(blake3(bytes)), { size: stat.size, ...(normalized !== text ? { normalized } : {}) });
    return;
  }
  for (const name of readdirSync(root)) filesOf(path.join(root, name), into);
}

function closureFiles(top: string): Map<string, StoreFile> {
  const files = new Map<string, StoreFile>();
  for (const storePath of nixStore(['-qR', top]).trim().split('\n')) filesOf(storePath, files);
  return files;
}

/** `nix store diff-closures`'s lines without their colours. */
function nixDiffLines(before: string, after: string): string[] {
  const out = nix(['store', 'diff-closures', before, after]).toString('utf8');
  // eslint-disable-next-line no-control-regex
  return out.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((line) => line !== '');
}

describe.skipIf(skipReason !== undefined)('ferry config diff with real Nix', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let server: ChildProcess;
  let url: string;
  let fixture: { before: string; after: string };
  let configA: string;
  let configB: string;
  const ferry = (...args: string[]) => {
    const result = spawnSync(process.execPath, [ferryBin, ...args], { env });
    return { status: result.status ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
  };
  const submit = (target: string, message: string): string => {
    const result = ferry('config', 'submit', 'diffs', '--target', `x86_64-linux=${target}`, '--activate', 'bin/activate', '-m', message, '--url', url, '--json');
    expect(result.status, result.stderr).toBe(0);
    return (JSON.parse(result.stdout) as { configId: string }).configId;
  };

  beforeAll(async () => {
    fixture = buildDiffFixture();
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-config-diff-'));
    env = { ...nixEnv, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'data'), XDG_CACHE_HOME: path.join(dir, 'cache') };
    expect(ferry('coordinator', 'init', '--name', 'diff').status).toBe(0);
    server = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--listen', '127.0.0.1:0', '--no-quic'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    url = await new Promise((resolve, reject) => {
      server.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
        if (match) resolve(match[1]!);
      });
      server.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
    });
    for (const top of [fixture.before, fixture.after]) {
      const pushed = ferry('push', top, '--url', url, '--json');
      expect(pushed.status, pushed.stderr).toBe(0);
    }
    configA = submit(fixture.before, 'before');
    configB = submit(fixture.after, 'after');
  }, 180_000);
  afterAll(() => {
    server?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lists exactly the lines nix store diff-closures prints', () => {
    const expected = nixDiffLines(fixture.before, fixture.after);
    // The fixture exercises every rule: nothing here is vacuous.
    expect(expected).toEqual(expect.arrayContaining(['ferry-diff-zlib: 1.3 → 1.3.1', 'ferry-diff-tool: ∅ → 1.0', 'ferry-diff: ε → ∅', 'ferry-diff-system: 1 → 2']));
    expect(expected.some((line) => /^ferry-diff-openssl: \+\d+\.\d KiB$/.test(line))).toBe(true);
    expect(expected.some((line) => line.startsWith('ferry-diff-tiny'))).toBe(false);

    const explicit = ferry('config', 'diff', configA, configB, '--url', url);
    expect(explicit.status, explicit.stderr).toBe(0);
    const lines = (text: string) => text.split('\n').filter((line) => /^ {2}\S/.test(line) && !/^ {2}(closure|fetch): /.test(line)).map((line) => line.slice(2));
    expect(lines(explicit.stdout)).toEqual(expected);
    expect(explicit.stdout).toContain(`x86_64-linux: ${fixture.before} → ${fixture.after}`);
    expect(explicit.stdout).toMatch(/1 rebuilt package\(s\) not listed/);
    // With one config: against its parent, the same.
    const parent = ferry('config', 'diff', configB, '--url', url);
    expect(parent.status, parent.stderr).toBe(0);
    expect(parent.stdout).toBe(explicit.stdout);
    // Backwards, the opposite changes, as Nix has them.
    const backwards = ferry('config', 'diff', configB, configA, '--url', url);
    expect(lines(backwards.stdout)).toEqual(nixDiffLines(fixture.after, fixture.before));
  }, 60_000);

  it('--json: the packages with their sizes and paths, and what an agent running the first config fetches', () => {
    const result = ferry('config', 'diff', configA, configB, '--url', url, '--json');
    expect(result.status, result.stderr).toBe(0);
    const diff = JSON.parse(result.stdout) as ConfigDiff;
    expect(diff).toMatchObject({ configId: configB, from: configA, omittedSystems: 0 });
    const [system] = diff.systems;
    expect(system).toMatchObject({ system: 'x86_64-linux', fromTarget: fixture.before, toTarget: fixture.after, truncated: false, unlistedChanged: 1 });
    const zlib = system!.packages.find((entry) => entry.name === 'ferry-diff-zlib')!;
    expect(zlib).toMatchObject({ removedVersions: ['1.3'], addedVersions: ['1.3.1'], removedPathCount: 1, addedPathCount: 1 });
    expect(zlib.addedPaths[0]).toMatch(/-ferry-diff-zlib-1\.3\.1$/);
    const before = nixStore(['-qR', fixture.before]).trim().split('\n');
    expect(system!.before.paths).toBe(before.length);

    // The files of the second closure that the first lacks, read from the real store and hashed here.
    const filesBefore = closureFiles(fixture.before);
    const filesAfter = closureFiles(fixture.after);
    const fresh = [...filesAfter].filter(([id]) => !filesBefore.has(id));
    expect(fresh.length).toBeGreaterThan(0);
    expect(system!.fetch.newBlobs).toBe(fresh.length);
    expect(system!.fetch.newBytes).toBe(fresh.reduce((sum, [, file]) => sum + file.size, 0));
    // With reference-aware dedup: a new file that equals one the agent holds but for the store path hashes it
    // embeds is restored there; the others are fetched (those over one normalized form once). Modelled on the
    // real files: only tiny's rebuild (its name unchanged) is restored; renamed packages embed other names.
    const held = new Set([...filesBefore.values()].flatMap((file) => (file.normalized ? [file.normalized] : [])));
    let restoredBlobs = 0;
    let normalizedBlobs = 0;
    let bytes = 0;
    for (const [, file] of fresh) {
      if (file.normalized !== undefined && held.has(file.normalized)) restoredBlobs++;
      else {
        bytes += file.size;
        if (file.normalized !== undefined) {
          normalizedBlobs++;
          held.add(file.normalized);
        }
      }
    }
    expect(restoredBlobs).toBeGreaterThan(0);
    expect(system!.fetch.withTemplates).toEqual({ restoredBlobs, normalizedBlobs, bytes });
    expect(bytes).toBeLessThan(system!.fetch.newBytes);
  }, 60_000);

  it('the viewer answers the same diff (one handler); bad and unknown ids are refused clearly', async () => {
    const admin = loadIdentity(path.join(dir, 'config', 'keys', 'diff-admin.key'));
    const client = new CoordinatorHttpClient(url, admin);
    const api = await client.call('configs.diff', { configId: configB, from: configA });
    expect(await client.call('viewer.configDiff', { configId: configB, from: configA })).toEqual(api);
    expect(await client.call('configs.diff', { configId: configB })).toEqual(api);

    const unknown = ferry('config', 'diff', '0'.repeat(64), configB, '--url', url);
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toMatch(/NOT_FOUND|no config 0{64}/);
    const malformed = ferry('config', 'diff', 'abc', configB, '--url', url);
    expect(malformed.status).not.toBe(0);
    expect(malformed.stderr).toMatch(/from.*64 hex/);
    const system = ferry('config', 'diff', configA, configB, '--system', 'aarch64-linux', '--url', url);
    expect(system.status).not.toBe(0);
    expect(system.stderr).toMatch(/neither config targets system 'aarch64-linux'/);
  }, 60_000);
});
