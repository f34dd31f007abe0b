// An agent keeps each byte once and GC keeps what its kept generations need:
// a real coordinator on 127.0.0.1 and an in-process agent deploying three
// configs whose closures share a library and a file, then `gc`.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { LocalCastore, fsck } from '../castore/index.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, narOfTree, pushToCoordinator, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
const lib = fakeStorePath('gc-lib');
const apps = { x: fakeStorePath('gc-app-x'), y: fakeStorePath('gc-app-y'), z: fakeStorePath('gc-app-z') };
const shared = 'the same file in every app\n'.repeat(1000);

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-agent-gc-'));
  const source = LocalCastore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'lib'), 'gc-lib', { small: 40, large: 1, largeSize: 1_500_000 });
  await addTreeAsStorePath(source, path.join(work, 'lib'), lib);
  for (const [name, storePath] of Object.entries(apps)) {
    writeTree(path.join(work, name), `gc-${name}`, { small: 20, large: 0 });
    writeFileSync(path.join(work, name, 'shared.txt'), shared);
    // The same bytes as an executable: another mode, so never a link to shared.txt.
    if (name === 'z') writeFileSync(path.join(work, name, 'shared-script'), shared, { mode: 0o755 });
    await addTreeAsStorePath(source, path.join(work, name), storePath, [lib]);
  }
  await pushToCoordinator(test, source, Object.values(apps));
  source.close();
}, 60_000);

afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('agent store and castore', () => {
  it('keeps each byte once, and gc keeps exactly what kept generations need, moving shared blobs off deleted paths', async () => {
    const stateDir = path.join(work, 'agent');
    const storeDir = path.join(stateDir, 'store');
    const { agentId } = await enrollStateDir(test, { stateDir, storeDir, name: 'gc', pinnedTls: true });
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      let parent: string[] = [];
      for (const storePath of [apps.x, apps.y]) {
        const { configId } = await test.adminClient.call('graphs.submit', { graph: 'gc', ...signedConfig(test.admin, 'gc', parent, { [nixSystem()]: storePath }, 'gc', { activate: 'true' }) });
        if (parent.length === 0) await test.adminClient.call('agents.assign', { agentId, graph: 'gc' });
        parent = [configId];
        expect(await agent.runOnce()).toBe('active');
      }
      const castoreDir = path.join(stateDir, 'castore');
      // Nothing of the closure is stored twice: no pack and no blob file in the castore.
      expect(existsSync(path.join(castoreDir, 'packs')) ? readdirSync(path.join(castoreDir, 'packs')) : []).toEqual([]);
      expect(existsSync(path.join(castoreDir, 'blobs')) ? readdirSync(path.join(castoreDir, 'blobs'), { recursive: true }).filter((entry) => String(entry).length > 2) : []).toEqual([]);

      // Back on x, whose shared.txt blob the castore now reads from y's copy; then keep only the current generation.
      await agent.rollback(1);
      const removed = await agent.gc(0);
      expect(removed).toEqual({ removedGenerations: [2], removedStorePaths: [apps.y] });
      expect(existsSync(path.join(storeDir, path.basename(apps.y)))).toBe(false);
      for (const kept of [lib, apps.x]) expect(existsSync(path.join(storeDir, path.basename(kept)))).toBe(true);
      const local = LocalCastore.open(castoreDir);
      try {
        // Every blob still known is readable and verified from a kept store file (y's are gone).
        expect((await fsck(local, { checkNars: true })).problems).toEqual([]);
        const files: string[] = [];
        for await (const blob of local.blobs.list()) files.push(local.verifiedStoreFile(blob.id) ?? '');
        expect(files.length).toBeGreaterThan(60);
        expect(local.stats().adoptedBlobs).toBe(files.length);
        for (const file of files) expect(file.startsWith(path.join(storeDir, path.basename(apps.y)))).toBe(false);
      } finally {
        local.close();
      }

      // z shares lib and shared.txt: the upgrade fetches neither again, and materializes them from the store.
      const { configId } = await test.adminClient.call('graphs.submit', { graph: 'gc', ...signedConfig(test.admin, 'gc', parent, { [nixSystem()]: apps.z }, 'gc', { activate: 'true' }) });
      expect(await agent.runOnce()).toBe('active');
      const fetched = agent.events.read().find((event) => event.kind === 'fetched' && event.configId === configId)!;
      const fetchedBytes = Number(/(\d+) bytes/.exec(fetched.message)![1]);
      expect(fetchedBytes).toBeLessThan(20 * 9100); // z's own small files only: not lib's 1.5 MB, not shared.txt again
      for (const storePath of [lib, apps.z]) {
        const materialized = await narOfTree(path.join(storeDir, path.basename(storePath)));
        expect(materialized.equals(await narOfTree(path.join(work, storePath === lib ? 'lib' : 'z')))).toBe(true);
      }
      // The unchanged file is the same inode as x's (a hard link, bytes once on disk); the executable copy is not.
      const inode = (storePath: string, name: string) => statSync(path.join(storeDir, path.basename(storePath), name)).ino;
      expect(inode(apps.z, 'shared.txt')).toBe(inode(apps.x, 'shared.txt'));
      expect(inode(apps.z, 'shared-script')).not.toBe(inode(apps.x, 'shared.txt'));
      expect(statSync(path.join(storeDir, path.basename(apps.z), 'shared.txt'))).toMatchObject({ mode: 0o100444, mtimeMs: 1000, nlink: 2 });
    } finally {
      await agent.close();
    }
  }, 60_000);
});
