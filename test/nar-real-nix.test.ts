// The NAR codec against real Nix: our dump of every fixture path is
// byte-identical to `nix-store --dump`, Nix restores our NARs and we restore
// Nix's, and our NarHash equals the one Nix registered.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeNar, dumpPath, encodeNar, narHash, restoreNar } from '../nix/nar/index.js';
import { buildFixtureClosure, nix, nixEnv, nixStore, nixUnavailableReason, type FixtureClosure } from './nix-fixtures/index.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping NAR real-Nix tests: ${skipReason}`);

async function bytesOf(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

describe.skipIf(skipReason !== undefined)('NAR codec with real Nix', () => {
  let fixture: FixtureClosure;
  let dir: string;
  beforeAll(() => {
    fixture = buildFixtureClosure();
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-nar-nix-'));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('dumps every fixture path exactly as nix-store --dump, with the NarHash Nix registered', async () => {
    for (const storePath of fixture.paths) {
      const ours = await bytesOf(dumpPath(storePath));
      const theirs = nix(['--dump', storePath], { command: 'nix-store' });
      expect(ours.equals(theirs), storePath).toBe(true);
      expect((await narHash(once(ours))).narHash).toBe(nixStore(['--query', '--hash', storePath]).trim());
      expect((await bytesOf(encodeNar(decodeNar(once(theirs))))).equals(theirs)).toBe(true);
    }
  });

  it('restores Nix NARs, and Nix restores ours, to identical trees', async () => {
    for (const [index, storePath] of fixture.paths.entries()) {
      const theirs = nix(['--dump', storePath], { command: 'nix-store' });
      const oursDir = path.join(dir, `ours-${index}`);
      await restoreNar(once(theirs), oursDir);
      expect((await bytesOf(dumpPath(oursDir))).equals(theirs)).toBe(true);
      const nixDir = path.join(dir, `nix-${index}`);
      execFileSync('nix-store', ['--restore', nixDir], { input: await bytesOf(dumpPath(oursDir)), env: nixEnv });
      expect(nix(['--dump', nixDir], { command: 'nix-store' }).equals(theirs)).toBe(true);
    }
  });
});
