// castore against real Nix: every path of the fixture closure, dumped by
// `nix-store --dump`, goes into castore and comes back byte-identical, with
// the NarHash and NarSize Nix records.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore, exportNar, fsck, ingestStorePath } from '../castore/index.js';
import { dumpStorePath, queryPathInfos } from '../nix/index.js';
import { buildFixtureClosure, nix, nixEnv, nixUnavailableReason, type FixtureClosure } from './nix-fixtures/index.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping castore real-Nix tests: ${skipReason}`);

describe.skipIf(skipReason !== undefined)('castore with real Nix', () => {
  let fixture: FixtureClosure;
  let dir: string;
  let store: LocalCastore;

  beforeAll(() => {
    Object.assign(process.env, { NIX_CONFIG: nixEnv.NIX_CONFIG });
    fixture = buildFixtureClosure();
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-castore-nix-'));
    store = LocalCastore.open(dir);
  });
  afterAll(() => {
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ingests every path and exports byte-identical NARs with matching NarHash', async () => {
    const infos = await queryPathInfos(fixture.paths);
    expect(infos).toHaveLength(fixture.paths.length);
    for (const info of infos) {
      const registered = await ingestStorePath(store, dumpStorePath(info.path), {
        storePath: info.path,
        references: info.references,
        narSize: info.narSize,
      });
      const nixHash = nix(['--query', '--hash', info.path], { command: 'nix-store' }).toString().trim();
      expect(registered.narHash).toBe(nixHash);
      expect(registered.narSize).toBe(info.narSize);
      const exported: Uint8Array[] = [];
      for await (const chunk of exportNar(store, registered.root)) exported.push(chunk);
      const expected = nix(['--dump', info.path], { command: 'nix-store' });
      expect(Buffer.concat(exported).equals(expected), info.path).toBe(true);
    }
    expect(store.closure([fixture.app])).toEqual([...fixture.paths].sort());
    // The README, lib-tool, app and self-reference files embed store paths: kept as templates.
    expect(store.stats().templatedBlobs).toBeGreaterThanOrEqual(4);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
  });

  it('a rebuild (every path new) adds templates and the one file whose content changed, nothing else', async () => {
    const rebuilt = buildFixtureClosure('ferry-castore-rebuild');
    const before = store.stats();
    for (const info of await queryPathInfos(rebuilt.paths)) {
      const registered = await ingestStorePath(store, dumpStorePath(info.path), { storePath: info.path, references: info.references, narHash: info.narHash });
      const expected = nix(['--dump', info.path], { command: 'nix-store' });
      const exported: Uint8Array[] = [];
      for await (const chunk of exportNar(store, registered.root)) exported.push(chunk);
      expect(Buffer.concat(exported).equals(expected), info.path).toBe(true);
    }
    const after = store.stats();
    // Only the greeting's text (it contains the salt) is new bytes; every other changed file is a new template over a normalized blob already stored.
    expect(after.blobs - after.templatedBlobs - (before.blobs - before.templatedBlobs)).toBe(1);
    expect(after.templatedBlobs - before.templatedBlobs).toBe(before.templatedBlobs);
    expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
  });
});
