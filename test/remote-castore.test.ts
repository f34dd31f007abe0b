// The coordinator's data plane read as a castore (castore/remote/remote-castore.ts): the read
// cases of the conformance suite, over real HTTP/QUIC on 127.0.0.1, against what a real
// coordinator's castore holds; a reader that refuses bytes that are not what was asked for;
// and the verified copy's cases from it into a local castore (through its bulk reads).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RemoteCastore } from '../castore/remote/remote-castore.js';
import { describeReaderConformance, pseudoRandom } from '../castore/services/conformance.case.js';
import { describeCopyConformance } from '../castore/transfer/copy-closure.case.js';
import { digestFromBytes, blake3, LocalCastore, withIngest, type StorePathInfo } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import { startTestCoordinator } from './data-plane-fixture.js';

describeReaderConformance('remote (the coordinator data plane)', async () => {
  const test = await startTestCoordinator();
  const { client } = await openDataClient(test.http.url, test.admin);
  const reader = new RemoteCastore(client);
  return {
    source: test.coordinator.castore,
    reader,
    // What a signed closure manifest would vouch for.
    publish: async (storePaths) => {
      const infos = await Promise.all(storePaths.map((storePath) => test.coordinator.castore.pathInfo.get(storePath)));
      reader.pathInfo.learn(infos.filter((info): info is StorePathInfo => info !== undefined));
    },
    close: async () => {
      await client.close();
      await test.close();
    },
  };
});

describeCopyConformance('remote (the coordinator data plane) -> local', async () => {
  const test = await startTestCoordinator();
  const { client } = await openDataClient(test.http.url, test.admin);
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-copy-remote-'));
  const target = LocalCastore.open(dir);
  const source = new RemoteCastore(client);
  return {
    origin: test.coordinator.castore,
    source,
    // What a signed closure manifest would vouch for.
    publish: (infos) => source.pathInfo.learn(infos),
    target,
    close: async () => {
      target.close();
      rmSync(dir, { recursive: true, force: true });
      await client.close();
      await test.close();
    },
  };
});

describe('the remote castore', () => {
  it('reads a range of a large blob verified group by group, and lacks what the coordinator lacks', async () => {
    const test = await startTestCoordinator();
    const { client } = await openDataClient(test.http.url, test.admin);
    try {
      const bytes = pseudoRandom(9 * 1024 * 1024 + 5, 77); // more than one request's segment
      const id = await withIngest(test.coordinator.castore, (ingest) => ingest.putBlobBytes(bytes));
      expect(id).toBe(digestFromBytes(blake3(bytes)));
      const reader = new RemoteCastore(client);
      const chunks: Uint8Array[] = [];
      for await (const chunk of reader.blobs.read(id, { offset: 100_001, length: 8 * 1024 * 1024 })) chunks.push(chunk);
      expect(Buffer.concat(chunks).equals(bytes.subarray(100_001, 100_001 + 8 * 1024 * 1024))).toBe(true);
      const unknown = digestFromBytes(blake3(new Uint8Array([1])));
      expect(await reader.blobs.missing([unknown, id])).toEqual([unknown]);
    } finally {
      await client.close();
      await test.close();
    }
  });
});
