// How an agent's deployment resumes: the fetch hands verified batched blobs
// to the materializer only (no second copy in the castore), so the temp
// trees in the store directory are the progress an interrupted attempt
// leaves. The next attempt takes them up, fetches only what is missing and
// replaces whatever in them is not exactly right. A real coordinator on
// 127.0.0.1; the interruption is a small-blob sink that throws (a SIGKILL is the
// e2e test's).
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adoptMaterializedFiles } from '../agent/adopt-store-files.js';
import { ClosureMaterializer } from '../agent/materialize.js';
import { LocalCastore, fsck, referencesFirst, type CopyOptions } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import { fetchConfigClosure, addTreeAsStorePath, enrollAgent, fakeStorePath, narOfTree, pushToCoordinator, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
let configId: string;
const lib = fakeStorePath('resume-lib');
const app = fakeStorePath('resume-app');

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-agent-resume-'));
  const source = LocalCastore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'lib'), 'resume-lib', { small: 300, large: 0 });
  writeTree(path.join(work, 'app'), 'resume-app', { small: 60, large: 0 });
  await addTreeAsStorePath(source, path.join(work, 'lib'), lib);
  await addTreeAsStorePath(source, path.join(work, 'app'), app, [lib]);
  await pushToCoordinator(test, source, [app]);
  source.close();
  configId = (await test.adminClient.call('graphs.submit', { graph: 'resume', ...signedConfig(test.admin, 'resume', [], { 'x86_64-linux': app }) })).configId;
}, 60_000);

afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe("an agent's interrupted deployment", () => {
  it('resumes from the files its temp trees hold, fetching only the rest, and publishes exact store paths', async () => {
    const agent = await enrollAgent(test, 'resume');
    const { client, info } = await openDataClient(test.http.url, agent, { tlsFingerprint: test.coordinator.tls.fingerprint });
    const store = LocalCastore.open(path.join(work, 'agent-castore'));
    const storeDir = path.join(work, 'agent-store');
    /** One attempt, as Agent.deploy makes it; `stopAfter` blobs, it fails like a dropped connection. */
    const attempt = async (stopAfter = Infinity) => {
      const materializer = new ClosureMaterializer(store, storeDir);
      let offered = 0;
      const options: CopyOptions & { coordinatorKey: typeof info.coordinatorKey } = {
        coordinatorKey: info.coordinatorKey,
        parallel: 1,
        smallBlobs: {
          plan: (infos, readDirectory) => materializer.plan(referencesFirst(infos), readDirectory),
          accept: async (id, bytes) => {
            if (offered++ === stopAfter) throw new Error('connection lost (simulated)');
            await materializer.offer(id, bytes);
          },
        },
      };
      try {
        const report = await fetchConfigClosure(client, store, configId, options);
        await materializer.finish();
        return report;
      } catch (error) {
        await materializer.suspend();
        throw error;
      }
    };
    try {
      await expect(attempt(150)).rejects.toThrow(/simulated/);
      // Nothing was published, nothing stored twice: the progress is the temp trees.
      const temps = readdirSync(storeDir);
      expect(temps.every((name) => name.startsWith('.ferry-tmp-'))).toBe(true);
      expect(store.missingBlobs([])).toEqual([]);
      expect(store.stats().blobs).toBe(0);
      // Damage the leftovers as a crash or a person might: a file cut short, a stray entry.
      const libTemp = path.join(storeDir, temps.find((name) => name.includes('resume-lib'))!);
      const written = readdirSync(libTemp, { recursive: true }).map(String).filter((entry) => /\/f\d+$/.test(entry) && existsSync(path.join(libTemp, entry)));
      expect(written.length).toBeGreaterThan(10);
      const victim = path.join(libTemp, written[0]!);
      chmodSync(path.dirname(victim), 0o755);
      chmodSync(victim, 0o644);
      writeFileSync(victim, 'cut short');
      writeFileSync(path.join(libTemp, 'stray'), 'not part of the store path');

      const resumed = await attempt();
      // Exactly what the first attempt had not written, and the damaged file's blob: 360 - 150 + 1.
      expect(resumed.copiedBlobs).toBe(211);
      for (const [storePath, dir] of [[lib, 'lib'], [app, 'app']] as const) {
        const published = path.join(storeDir, path.basename(storePath));
        expect((await narOfTree(published)).equals(await narOfTree(path.join(work, dir)))).toBe(true);
      }
      expect(readdirSync(storeDir).filter((name) => name.startsWith('.'))).toEqual([]);

      // The castore learns the blobs from the store's files, and verifies them there.
      const { adopted } = adoptMaterializedFiles(store, storeDir, [lib, app].map((storePath) => store.getStorePath(storePath)!));
      expect(adopted).toBe(360);
      expect(store.stats().adoptedBlobs).toBe(360);
      expect((await fsck(store, { checkNars: true })).problems).toEqual([]);
    } finally {
      store.close();
      await client.close();
    }
  }, 60_000);
});
