// Hostile input: an agent that lies in its status report to read closures
// that are not its own (issue 16, defect 3). Read access comes only from
// what the coordinator decided (the agent's desired config: its pin, else
// its graph's head), never from what the agent claims it runs. Checked on
// every read path an agent key has: the data plane over QUIC and over the
// HTTP fallback (/v1/data), and the Nix binary cache with its netrc.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, digestFromBytes } from '../castore/index.js';
import { openCoordinatorDatabase } from '../coordinator/db/database.js';
import { nixCachePassword } from '../coordinator/nix-cache/index.js';
import { SqliteStateStore } from '../coordinator/domain/sqlite-state.js';
import { STATE_TABLES } from '../coordinator/domain/state.js';
import { parseNarInfo, storePathBaseName } from '../nix/index.js';
import { DataError, type DataClient } from '../protocol/data-client.js';
import { openDataClient } from '../protocol/connect.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import type { Identity } from '../protocol/identity.js';
import { addTreeAsStorePath, enrollAgent, fakeStorePath, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
const secretPath = fakeStorePath('graph-a-secrets-1.0');
const ownPath = fakeStorePath('graph-b-app-1.0');
const secretBytes = Buffer.from('graph A only: database password hunter2\n');
const ownBytes = Buffer.from('graph B: nothing secret here\n');
const secretBlob = digestFromBytes(blake3(secretBytes));
const ownBlob = digestFromBytes(blake3(ownBytes));
let configA: string;
let configB: string;
let liar: Identity;

const SYSTEM = 'x86_64-linux';

function netrc(identity: Identity): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${identity.keyId}:${nixCachePassword(identity)}`).toString('base64')}` };
}

function hashPartOf(storePath: string): string {
  return storePathBaseName(storePath).slice(0, 32);
}

async function dataCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DataError) return error.code;
    throw error;
  }
  return 'ALLOWED';
}

async function dataClient(identity: Identity, httpOnly: boolean): Promise<DataClient> {
  return (await openDataClient(test.http.url, identity, { httpOnly, tlsFingerprint: test.coordinator.tls.fingerprint })).client;
}

/** Reads a blob's bytes over `client` (blob.get: outboard, then data), or throws its refusal. */
async function readBlob(client: DataClient, id: string): Promise<Buffer> {
  return client.call(
    { op: 'blob.get', id, offset: 0, outboard: false },
    {
      consume: async (reply) => {
        const bytes = Buffer.from(await reply.body.readExact(reply.header.length, `blob ${id}`));
        await reply.body.expectEnd();
        return bytes;
      },
    },
  );
}

/** Reads small blobs in one request (blobs.get), or throws its refusal. */
async function readBlobs(client: DataClient, ids: string[]): Promise<Buffer[]> {
  return client.call(
    { op: 'blobs.get', ids },
    {
      consume: async (reply) => {
        const out: Buffer[] = [];
        for (const blob of reply.header.blobs) out.push(Buffer.from(await reply.body.readExact(blob.size, `blob ${blob.id}`)));
        await reply.body.expectEnd();
        return out;
      },
    },
  );
}

/** What the agent can read of each config, over one transport. */
async function dataPlaneReads(identity: Identity, httpOnly: boolean) {
  const client = await dataClient(identity, httpOnly);
  try {
    const secretRoot = test.coordinator.castore.getStorePath(secretPath)!.root;
    const result = {
      secretManifest: await dataCode(client.call({ op: 'closure.manifest', configId: configA, system: SYSTEM })),
      secretBlob: await dataCode(readBlob(client, secretBlob)),
      secretBlobs: await dataCode(readBlobs(client, [secretBlob])),
      secretDirectory: await dataCode(client.call({ op: 'directories.get', ids: [secretRoot.type === 'directory' ? secretRoot.digest : ''] })),
      ownManifest: (await client.call({ op: 'closure.manifest', configId: configB, system: SYSTEM })).header.target,
      ownBlob: (await readBlob(client, ownBlob)).toString(),
      ownBlobs: (await readBlobs(client, [ownBlob])).map((bytes) => bytes.toString()),
    };
    return { transport: client.transportKind, ...result };
  } finally {
    await client.close();
  }
}

/** HTTP statuses of the Nix cache's narinfo and NAR of `storePath` for `identity`. */
async function cacheReads(identity: Identity, storePath: string) {
  const cache = `${test.http.url}/nix-cache`;
  // The NAR's URL as a reader who may see it learns it.
  const info = parseNarInfo(await (await fetch(`${cache}/${hashPartOf(storePath)}.narinfo`, { headers: netrc(test.admin) })).text());
  return {
    narinfo: (await fetch(`${cache}/${hashPartOf(storePath)}.narinfo`, { headers: netrc(identity) })).status,
    nar: (await fetch(`${cache}/${info.url}`, { headers: netrc(identity) })).status,
    narZst: (await fetch(`${cache}/${info.url}.zst`, { headers: netrc(identity) })).status,
  };
}

function report(identity: Identity, body: unknown): Promise<unknown> {
  // Raw: some of these reports are what no schema allows.
  return new CoordinatorHttpClient(test.http.url, identity).post('/v1/agent/status', body);
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-closure-'));
  mkdirSync(path.join(work, 'a', 'etc'), { recursive: true });
  writeFileSync(path.join(work, 'a', 'etc', 'secret'), secretBytes);
  mkdirSync(path.join(work, 'b', 'share'), { recursive: true });
  writeFileSync(path.join(work, 'b', 'share', 'readme'), ownBytes);
  await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'a'), secretPath);
  await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'b'), ownPath);
  configA = (await test.adminClient.call('graphs.submit', { graph: 'graph-a', ...signedConfig(test.admin, 'graph-a', [], { [SYSTEM]: secretPath }) })).configId;
  configB = (await test.adminClient.call('graphs.submit', { graph: 'graph-b', ...signedConfig(test.admin, 'graph-b', [], { [SYSTEM]: ownPath }) })).configId;
  liar = await enrollAgent(test, 'graph-b');
  await report(liar, { configId: configB, phase: 'active', error: null });
}, 60_000);

afterAll(async () => {
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('defect 3: an agent lying about its current config', () => {
  it('defect 3: the lie is recorded as what the agent says it runs, and grants nothing', async () => {
    const before = test.coordinator.lastSeq;
    await report(liar, { configId: configA, phase: 'active', error: null });
    // Recorded (an offline bundle may legitimately run a config the coordinator did not assign)…
    expect(test.coordinator.lastSeq).toBe(before + 1);
    expect(test.coordinator.state.get('agents', liar.keyId)).toMatchObject({ currentConfig: configA, phase: 'active', desiredGraph: 'graph-b' });
    // …but a config that does not exist is still refused.
    const missing = await report(liar, { configId: 'f'.repeat(64), phase: 'active', error: null }).catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(ApiError);
    expect(missing).toMatchObject({ status: 404, code: 'NOT_FOUND' });
  });

  for (const httpOnly of [false, true]) {
    it(`defect 3: the data plane over ${httpOnly ? 'the HTTP fallback (/v1/data)' : 'QUIC'} refuses the other config's manifest and secret blob (FORBIDDEN), serves the agent's own`, async () => {
      await report(liar, { configId: configA, phase: 'active', error: null });
      expect(await dataPlaneReads(liar, httpOnly)).toEqual({
        transport: httpOnly ? 'http' : 'quic',
        secretManifest: 'FORBIDDEN',
        secretBlob: 'FORBIDDEN',
        secretBlobs: 'FORBIDDEN',
        secretDirectory: 'FORBIDDEN',
        ownManifest: ownPath,
        ownBlob: ownBytes.toString(),
        ownBlobs: [ownBytes.toString()],
      });
    }, 60_000);
  }

  it("defect 3: the Nix cache refuses the other config's narinfo and NAR to the agent's netrc (404), serves its own", async () => {
    await report(liar, { configId: configA, phase: 'active', error: null });
    expect(await cacheReads(liar, secretPath)).toEqual({ narinfo: 404, nar: 404, narZst: 404 });
    expect(await cacheReads(liar, ownPath)).toEqual({ narinfo: 200, nar: 200, narZst: 200 });
    // The admin reads both: the refusal is the agent's, not a missing path.
    expect((await cacheReads(test.admin, secretPath)).narinfo).toBe(200);
  });

  it('defect 3: read access follows the coordinator’s assignment (pin or graph), and ends when the assignment moves', async () => {
    const agent = await enrollAgent(test, 'graph-b');
    // Pinned to A by an operator: A is readable, B (its graph, overridden by the pin) is not.
    await test.adminClient.call('agents.pin', { agentId: agent.keyId, configId: configA });
    expect(await cacheReads(agent, secretPath)).toEqual({ narinfo: 200, nar: 200, narZst: 200 });
    expect((await cacheReads(agent, ownPath)).narinfo).toBe(404);
    await report(agent, { configId: configA, phase: 'active', error: null });
    // Unpinned: it follows graph-b again, and having run A legitimately does not keep A readable.
    await test.adminClient.call('agents.pin', { agentId: agent.keyId, configId: null });
    expect(test.coordinator.state.get('agents', agent.keyId)?.currentConfig).toBe(configA);
    expect(await cacheReads(agent, secretPath)).toEqual({ narinfo: 404, nar: 404, narZst: 404 });
    const client = await dataClient(agent, true);
    try {
      expect(await dataCode(client.call({ op: 'closure.manifest', configId: configA, system: SYSTEM }))).toBe('FORBIDDEN');
      expect(await dataCode(readBlob(client, secretBlob))).toBe('FORBIDDEN');
      expect((await client.call({ op: 'closure.manifest', configId: configB, system: SYSTEM })).header.target).toBe(ownPath);
    } finally {
      await client.close();
    }
  }, 60_000);

  it('defect 3: replaying the log reproduces the live state, lies included', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-replay-'));
    const replayDb = openCoordinatorDatabase(path.join(dir, 'replay.db'));
    try {
      const replayed = new SqliteStateStore(replayDb.db);
      expect(test.coordinator.replayInto(replayed).lastSeq).toBe(test.coordinator.lastSeq);
      for (const table of STATE_TABLES) expect(replayed.all(table), table).toEqual(test.coordinator.state.all(table));
      expect(replayed.get('agents', liar.keyId)?.currentConfig).toBe(configA);
    } finally {
      replayDb.sqlite.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
