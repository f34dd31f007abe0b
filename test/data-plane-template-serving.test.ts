// The data plane serving a closure the coordinator keeps as reference-aware blobs (docs/castore.md,
// "Reference-aware blobs"): files that embed their own and their references' hash parts are
// normalized blobs plus templates on the coordinator, and an agent fetching over QUIC or HTTP still
// receives (and verifies) the real bytes — small ones in batches, a large one in segments — so its
// NARs are byte-identical; its own castore normalizes them against the same hash parts as it stores
// them (the copy's template hints), so the next rebuild restores them instead of moving them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore } from '../castore/index.js';
import { ingestVersion, version } from '../castore/services/template-conformance.case.js';
import { openDataClient } from '../protocol/connect.js';
import { enrollAgent, fetchConfigClosure, narBytes, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
let configId: string;
const v = version(9);
let nars: { lib: Buffer; app: Buffer };

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-data-templates-'));
  // As a narinfo upload or `ferry castore ingest` stores them on the coordinator.
  const ingested = await ingestVersion(test.coordinator.castore, v);
  nars = { lib: ingested.libNar, app: ingested.appNar };
  expect(test.coordinator.castore.stats().templatedBlobs).toBe(3);
  const submitted = await test.adminClient.call('graphs.submit', { graph: 'tmpl', ...signedConfig(test.admin, 'tmpl', [], { 'x86_64-linux': v.app }) });
  configId = submitted.configId;
}, 60_000);

afterAll(async () => {
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('fetching a closure kept as templates', () => {
  for (const transport of ['quic', 'http'] as const) {
    it(`restores the real bytes for the agent over ${transport}, byte-identical NARs, kept as templates there too`, async () => {
      const agent = await enrollAgent(test, 'tmpl');
      const { client } = await openDataClient(test.http.url, agent, { httpOnly: transport === 'http', tlsFingerprint: test.coordinator.tls.fingerprint });
      const target = LocalCastore.open(path.join(work, transport));
      try {
        const report = await fetchConfigClosure(client, target, configId, { coordinatorKey: test.coordinator.identity.keyId });
        expect(report).toMatchObject({ target: v.app, copiedStorePaths: 2 });
        expect(client.transportKind).toBe(transport);
        expect((await narBytes(target, v.lib)).equals(nars.lib)).toBe(true);
        expect((await narBytes(target, v.app)).equals(nars.app)).toBe(true);
        expect(target.stats().templatedBlobs).toBe(3);
      } finally {
        target.close();
        await client.close();
      }
    }, 60_000);
  }

  it('a rebuild fetched next restores its binaries from the normalized blobs the target holds: no byte of them moves', async () => {
    const rebuilt = version(10);
    const ingested = await ingestVersion(test.coordinator.castore, rebuilt);
    const submitted = await test.adminClient.call('graphs.submit', { graph: 'tmpl', ...signedConfig(test.admin, 'tmpl', [configId], { 'x86_64-linux': rebuilt.app }) });
    const agent = await enrollAgent(test, 'tmpl');
    const { client } = await openDataClient(test.http.url, agent, { tlsFingerprint: test.coordinator.tls.fingerprint });
    const target = LocalCastore.open(path.join(work, 'quic')); // holds version 9, fetched above
    try {
      const report = await fetchConfigClosure(client, target, submitted.configId, { coordinatorKey: test.coordinator.identity.keyId });
      expect((await narBytes(target, rebuilt.app)).equals(ingested.appNar)).toBe(true);
      // Each binary differs from version 9's only in the hash parts it embeds (without templates,
      // group deltas would move the 16 KiB groups its sites touch: 6 x 16 KiB + 77 bytes).
      expect(report.restoredBlobs).toBe(3);
      expect(report.deltaBlobs).toBe(0);
      expect(report.copiedBytes).toBe(0);
    } finally {
      target.close();
      await client.close();
    }
  }, 60_000);
});
