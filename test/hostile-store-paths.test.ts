// Hostile inputs around store paths (issue: security hardening, defects 1
// and 4): a pusher key sends store path records that are not exactly
// `/nix/store/<hash>-<valid name>` — `..`, an empty name, a subpath, a dot
// name — as the path, a reference or the deriver, over QUIC and over the
// HTTP fallback; the Nix cache gets a narinfo with such a reference; an
// older castore already holds such a row. Each is refused with a clear
// error, nothing becomes visible, nothing is audited, and no code turns
// such a path into a file path (the agent's gc once deleted the store
// dir's parent).
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore, CastoreError, fsck, ingestNar, type StorePathInfo } from '../castore/index.js';
import { Agent } from '../agent/index.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { nixCachePassword } from '../coordinator/nix-cache/credentials.js';
import { dumpPath } from '../nix/nar/index.js';
import { NixError } from '../nix/errors.js';
import { storePathLocation } from '../nix/store-path.js';
import { openDataClient } from '../protocol/connect.js';
import { DataError, type DataClient } from '../protocol/data-client.js';
import type { DataRequest } from '../protocol/data-protocol.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { bootstrap, coordinatorActor } from './fleet-simulator.js';

let test: TestCoordinator;
let work: string;
const lib = fakeStorePath('hostile-lib');
const hash = fakeStorePath('x').slice('/nix/store/'.length, '/nix/store/'.length + 32);
/** Store paths an attacker would like a receiver to map to a file: each must be refused wherever it appears. */
const JUNK = ['/nix/store/..', '/nix/store/', '/nix/store/.', `/nix/store/${hash}-ok/../..`, `/nix/store/${hash}-.hidden`, `/nix/store/${hash}-a/b`, '/etc/passwd', `/nix/store/${hash}-${'x'.repeat(212)}`];

let libInfo: StorePathInfo;

async function refusal(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof DataError) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error('expected a refusal');
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-paths-'));
  const source = LocalCastore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'lib'), 'hostile-lib', { small: 5, large: 0 });
  await addTreeAsStorePath(source, path.join(work, 'lib'), lib);
  libInfo = source.getStorePath(lib)!;
  await pushToCoordinator(test, source, [lib]);
  source.close();
}, 60_000);

afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

/**
 * A registry row as an older Ferry wrote it, straight into the castore's
 * database file (format 3): no API writes a record its schema refuses.
 */
function writeLegacyStorePathRow(castoreDir: string, storePath: string, refs: string, root: string): void {
  const db = new Database(path.join(castoreDir, 'castore.db'));
  try {
    db.prepare('INSERT INTO store_paths (path, nar_hash, nar_size, refs, deriver, ca, signatures, root, registered_at) VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, 0)')
      .run(storePath, libInfo.narHash, libInfo.narSize, refs, '[]', root);
  } finally {
    db.close();
  }
}

describe('defect 1: store paths that are not exactly /nix/store/<hash>-<name> are refused at every boundary', () => {
  for (const transport of ['quic', 'http'] as const) {
    it(`upload.storePaths over ${transport} refuses a junk path, reference or deriver; nothing is registered or audited`, async () => {
      const { client } = await openDataClient(test.http.url, test.pusher, { httpOnly: transport === 'http', tlsFingerprint: test.coordinator.tls.fingerprint });
      try {
        const seq = test.coordinator.lastSeq;
        const registered = test.coordinator.castore.listStorePaths().length;
        const stats = { bytesSent: 0, blobsSent: 0, directoriesSent: 0 };
        const send = (info: Record<string, unknown>, roots = [lib as string]) =>
          (client as DataClient).call({ op: 'upload.storePaths', roots, storePaths: [{ ...libInfo, ...info }], stats } as unknown as DataRequest<'upload.storePaths'>);
        for (const junk of JUNK) {
          for (const [field, info] of [
            ['storePath', { storePath: junk }],
            ['references', { storePath: fakeStorePath('hostile-ref'), references: [junk] }],
            ['deriver', { storePath: fakeStorePath('hostile-drv'), deriver: junk }],
          ] as const) {
            const refused = await refusal(send(info));
            expect(refused.code, `${field} ${junk}`).toBe('INVALID');
            expect(refused.message).toMatch(/not a store path/);
            expect(refused.message).toContain(field);
          }
          // A junk root, too.
          expect((await refusal(send({}, [junk]))).code).toBe('INVALID');
        }
        expect(client.transportKind).toBe(transport);
        expect(test.coordinator.lastSeq).toBe(seq);
        expect(test.coordinator.castore.listStorePaths()).toHaveLength(registered);
      } finally {
        await client.close();
      }
    });
  }

  it('the Nix cache refuses a narinfo whose reference or deriver is not a store path basename', async () => {
    const authorization = `Basic ${Buffer.from(`${test.pusher.keyId}:${nixCachePassword(test.pusher)}`).toString('base64')}`;
    const seq = test.coordinator.lastSeq;
    const storePath = fakeStorePath('hostile-narinfo');
    const hashPart = storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    for (const line of ['References: ..', 'References: .', `References: ${hash}-ok/..`, 'Deriver: ..', `References: ${hash}-.hidden`]) {
      const narinfo = [`StorePath: ${storePath}`, `URL: nar/${'0'.repeat(52)}.nar`, 'Compression: none', `NarHash: sha256:${'0'.repeat(52)}`, 'NarSize: 100', line, ''].join('\n');
      const response = await fetch(`${test.http.url}/nix-cache/${hashPart}.narinfo`, { method: 'PUT', body: narinfo, headers: { authorization, 'content-type': 'text/x-nix-narinfo' } });
      expect(response.status, line).toBe(400);
      // The cache answers Nix in plain text: the code, then the message.
      expect(await response.text()).toMatch(/^BAD_NARINFO.*not a store path/s);
    }
    expect(test.coordinator.lastSeq).toBe(seq);
  });

  it('the one store-path-to-file function refuses anything but a direct child of the store dir', () => {
    const storeDir = path.join(work, 'agent', 'store');
    expect(storePathLocation(storeDir, lib)).toBe(path.join(storeDir, path.basename(lib)));
    for (const junk of JUNK) {
      expect(() => storePathLocation(storeDir, junk), junk).toThrow(NixError);
    }
  });

  it('a castore row written by an older Ferry with a junk path is refused on read, reported by fsck, and never reaches a file path', async () => {
    const store = LocalCastore.open(path.join(work, 'old-castore'));
    try {
      const session = store.beginIngest();
      const root = (await ingestNar(session, dumpPath(path.join(work, 'lib')))).root;
      session.commit();
      // What an older coordinator signed and an older agent stored (the defect): written around the API
      // (which refuses such a record), into the file as an older Ferry wrote it.
      writeLegacyStorePathRow(path.join(work, 'old-castore'), '/nix/store/..', '[]', JSON.stringify(root));
      writeLegacyStorePathRow(path.join(work, 'old-castore'), lib, JSON.stringify(['/nix/store/']), JSON.stringify(root));
      for (const storePath of ['/nix/store/..', lib]) {
        let caught: unknown;
        try {
          store.getStorePath(storePath);
        } catch (error) {
          caught = error;
        }
        expect(caught).toBeInstanceOf(CastoreError);
        expect((caught as CastoreError).code).toBe('STORE_PATH_INVALID');
      }
      expect(() => store.listStorePaths()).toThrow(/STORE_PATH_INVALID|is invalid/);
      const report = await fsck(store);
      const problems = report.problems.filter((problem) => problem.kind === 'store-path').map((problem) => problem.id);
      expect(problems.sort()).toEqual(['/nix/store/..', lib].sort());
    } finally {
      store.close();
    }
  });

  it('an agent whose castore holds such a row refuses gc and deletes nothing above its store dir', async () => {
    const stateDir = path.join(work, 'gc-agent');
    const storeDir = path.join(stateDir, 'store');
    mkdirSync(storeDir, { recursive: true });
    await enrollStateDir(test, { stateDir, storeDir, name: 'hostile-gc' });
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      LocalCastore.open(path.join(stateDir, 'castore')).close();
      writeLegacyStorePathRow(path.join(stateDir, 'castore'), '/nix/store/..', '[]', JSON.stringify(libInfo.root));
      await expect(agent.gc(0)).rejects.toThrow(/is invalid/);
      expect(existsSync(storeDir)).toBe(true);
      expect(existsSync(stateDir)).toBe(true);
    } finally {
      await agent.close();
    }
  });
});

describe('defect 4: a store path becomes visible only with its audit event, in the same commit', () => {
  it('a publish that fails rolls the event back, and an event that does not validate is never published', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-publish-'));
    const coordinator = Coordinator.open(path.join(dir, 'coordinator'));
    try {
      bootstrap(coordinator);
      const actor = coordinatorActor(coordinator);
      const seq = coordinator.lastSeq;
      const head = coordinator.audit.storedEvents(seq - 1, seq, 1)[0]!.hash;
      const payload = { roots: [lib], registered: [lib], registeredCount: 1, alreadyPresent: 0, bytesSent: 0, blobsSent: 0, directoriesSent: 0 };
      expect(() =>
        coordinator.execute(actor, () => ({
          draft: { action: 'store.push', subject: lib, payload },
          result: undefined,
          publish: () => {
            throw new Error('the castore could not commit');
          },
        })),
      ).toThrow('the castore could not commit');
      expect(coordinator.lastSeq).toBe(seq);
      let published = false;
      expect(() =>
        coordinator.execute(actor, () => ({
          draft: { action: 'store.push', subject: lib, payload: { ...payload, registered: ['/nix/store/..'] } as unknown as typeof payload },
          result: undefined,
          publish: () => {
            published = true;
          },
        })),
      ).toThrow(/does not apply|invalid/);
      expect(published).toBe(false);
      expect(coordinator.lastSeq).toBe(seq);
      // The chain continues from where it was: the next event links to the same head.
      const next = coordinator.execute(actor, () => ({ draft: { action: 'store.push', subject: lib, payload }, result: undefined, publish: () => undefined }))!;
      expect(next.event.seq).toBe(seq + 1);
      expect(next.event.prevHash).toBe(head);
    } finally {
      coordinator.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a push batch with one bad record registers none of its valid paths and records nothing', async () => {
    // The objects of a fresh, valid store path are on the coordinator; only its record is missing.
    const fresh = fakeStorePath('hostile-fresh');
    const session = test.coordinator.castore.beginIngest();
    const root = (await ingestNar(session, dumpPath(path.join(work, 'lib')))).root;
    session.commit();
    const { client } = await openDataClient(test.http.url, test.pusher, { httpOnly: true });
    try {
      const seq = test.coordinator.lastSeq;
      const refused = await refusal(
        client.call({
          op: 'upload.storePaths',
          roots: [fresh],
          storePaths: [
            { ...libInfo, storePath: fresh, root },
            { ...libInfo, storePath: fakeStorePath('hostile-junk'), references: ['/nix/store/..'] },
          ],
          stats: { bytesSent: 0, blobsSent: 0, directoriesSent: 0 },
        } as unknown as DataRequest<'upload.storePaths'>),
      );
      expect(refused.code).toBe('INVALID');
      expect(test.coordinator.castore.getStorePath(fresh)).toBeUndefined();
      expect(test.coordinator.lastSeq).toBe(seq);
      // The same path, alone and valid, registers with its event.
      const reply = await client.call({ op: 'upload.storePaths', roots: [fresh], storePaths: [{ ...libInfo, storePath: fresh, root }], stats: { bytesSent: 0, blobsSent: 0, directoriesSent: 0 } });
      expect(reply.header.registered).toEqual([fresh]);
      const event = test.coordinator.audit.storedEvents(reply.header.seq - 1, reply.header.seq, 1)[0]!;
      expect(event).toMatchObject({ action: 'store.push', payload: { registered: [fresh] } });
      expect(test.coordinator.castore.getStorePath(fresh)?.storePath).toBe(fresh);
    } finally {
      await client.close();
    }
  });
});
