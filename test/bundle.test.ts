// Air-gapped deployment: a bundle written from the coordinator's castore and
// key, applied by an agent whose coordinator is unreachable, reported when it
// is back. Tampered and foreign bundles are refused with nothing stored.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { BundleError, Castore, CastoreError, writeBundle } from '../castore/index.js';
import { startHttpServer } from '../coordinator/server.js';
import { Identity } from '../protocol/identity.js';
import { nixSystem } from '../agent/facts.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, signedConfig, pushToCoordinator, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
const app = fakeStorePath('bundled-app');

async function bytesOf(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return Buffer.concat(out);
}

async function* fromBuffer(buffer: Buffer): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < buffer.length; offset += 10_000) yield buffer.subarray(offset, offset + 10_000);
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-bundle-'));
  const source = Castore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'app'), 'bundle', { small: 30, large: 1, largeSize: 300_000 });
  await addTreeAsStorePath(source, path.join(work, 'app'), app);
  await pushToCoordinator(test, source, [app]);
  source.close();
}, 60_000);

afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('bundles', () => {
  it('deploys a signed bundle with the coordinator unreachable, and reports once it is back', async () => {
    const { configId } = await test.adminClient.post<{ configId: string }>(
      '/v1/graphs/offline/configs',
      signedConfig(test.admin, 'offline', [], { [nixSystem()]: app }, 'air-gapped', { activate: 'echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/marker"', health: 'test -s "$FERRY_STATE_DIR/marker"' }),
    );
    const config = test.coordinator.state.get('configs', configId)!;
    const written = writeBundle(test.coordinator.castore, test.coordinator.identity, { ...(config.body as Record<string, unknown>), id: configId, targets: (config.body as { targets: Record<string, string> }).targets });
    const bundle = await bytesOf(written.bytes);
    // The size announced before the first byte (for progress) is exact.
    expect(bundle.length).toBe(written.size);
    expect(written.storePaths).toBe(test.coordinator.castore.closure([app]).length);

    const stateDir = path.join(work, 'agent');
    const { agentId } = await enrollStateDir(test, { stateDir, name: 'island' });

    // The coordinator goes away: the HTTP port closes.
    const port = Number(new URL(test.http.url).port);
    await test.http.close();
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      // Refused first: a flipped byte deep inside the bundle, then a bundle signed by another key.
      const tampered = Buffer.from(bundle);
      tampered[tampered.length - 2000] = tampered[tampered.length - 2000]! ^ 1;
      await expect(agent.applyBundle(fromBuffer(tampered))).rejects.toBeInstanceOf(CastoreError);
      const stranger = Identity.generate();
      const foreign = await bytesOf(writeBundle(test.coordinator.castore, stranger, { ...(config.body as Record<string, unknown>), id: configId, targets: (config.body as { targets: Record<string, string> }).targets }).bytes);
      await expect(agent.applyBundle(fromBuffer(foreign))).rejects.toBeInstanceOf(BundleError);
      const local = Castore.open(path.join(stateDir, 'castore'));
      expect(local.listStorePaths()).toEqual([]);
      local.close();

      const outcome = await agent.applyBundle(fromBuffer(bundle));
      expect(outcome).toEqual({ configId, result: 'active' });
      expect(readFileSync(path.join(stateDir, 'marker'), 'utf8').trim()).toBe(configId);
      expect(agent.state.pendingReports.map((report) => report.phase)).toEqual(['activating', 'active']);

      // Back online: the queued reports are delivered in order.
      test.http = await startHttpServer(test.coordinator, '127.0.0.1', port);
      await agent.runOnce();
      expect(agent.state.pendingReports).toEqual([]);
      expect(test.coordinator.state.get('agents', agentId)).toMatchObject({ currentConfig: configId, phase: 'active' });
    } finally {
      await agent.close();
    }
  }, 60_000);
});
