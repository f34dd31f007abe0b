/**
 * The verified copy's cases (copy-closure.ts), run for every pair of
 * backends (copy-closure.test.ts: local → memory, memory → local;
 * test/remote-castore.test.ts: the coordinator's data plane → local), like
 * the services' conformance suite: the closure arrives whole and
 * byte-identical, only what the target lacks is copied, small blobs can go
 * to a sink instead; and a hostile source (a blob that is not its id, a
 * directory that is not its digest, a store path record nobody vouched
 * for) makes the copy fail with the target holding nothing of it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeNar } from '../../nix/index.js';
import { blake3 } from '../blake3/index.js';
import { encodeDirectory } from '../directory.js';
import { fsck } from '../fsck.js';
import { ingestStorePath } from '../ingest-store-path.js';
import { exportNar } from '../nar-export.js';
import { digestFromBytes, type Digest, type Entry, type FileNode, type Node } from '../node.js';
import type { BlobReader } from '../services/blob-service.js';
import type { CastoreReader, CastoreServices } from '../services/castore-services.js';
import { collect, narOf, pseudoRandom } from '../services/conformance.case.js';
import type { DirectoryReader } from '../services/directory-service.js';
import type { PathInfoReader } from '../services/path-info-service.js';
import type { StorePathInfo } from '../store-path-info.js';
import { copyClosure, SMALL_BLOB_BYTES, type TransferProgress } from './copy-closure.js';

/** A source and a target; the fixture is written to `origin`, which `source` reads (itself, or a remote in front of it). */
export interface CopyPair {
  origin: CastoreServices;
  source: CastoreReader;
  /** Makes what was written to `origin` readable through `source` (a remote vouches for it). */
  publish?: (infos: readonly StorePathInfo[]) => Promise<void> | void;
  target: CastoreServices;
  close(): Promise<void> | void;
}

const FILES = {
  lib: { 'a-small': pseudoRandom(300, 11), 'b-large': pseudoRandom(SMALL_BLOB_BYTES + 2 * 16384 + 5, 12), 'c-empty': new Uint8Array(0) },
  app: { main: pseudoRandom(70_000, 13), shared: pseudoRandom(300, 11) },
};
const LIB = '/nix/store/6h6h6h6h6h6h6h6h6h6h6h6h6h6h6h6h-copy-lib';
const APP = '/nix/store/7i7i7i7i7i7i7i7i7i7i7i7i7i7i7i7i-copy-app';
const idOf = (bytes: Uint8Array): Digest => digestFromBytes(blake3(bytes));
const encodeNarOf = (files: Record<string, Uint8Array>): AsyncIterable<Uint8Array> => encodeNar(narOf(files));

interface Fixture {
  lib: StorePathInfo;
  app: StorePathInfo;
}

/** Every file below `node`. */
function filesOf(node: Node, readDirectory: (id: Digest) => readonly Entry[]): FileNode[] {
  if (node.type === 'file') return [node];
  if (node.type !== 'directory') return [];
  return readDirectory(node.digest).flatMap((entry) => filesOf(entry, readDirectory));
}

/** `source` with some answers replaced (a hostile source); everything else passes through. */
function tampered(source: CastoreReader, changes: { blobs?: Partial<BlobReader>; directories?: Partial<DirectoryReader>; pathInfo?: Partial<PathInfoReader> }): CastoreReader {
  const bind = <T extends object>(reader: T, override: Partial<T> = {}): T => {
    return new Proxy(reader, {
      get: (target, key, receiver) => {
        if (key in override) return override[key as keyof T];
        const value: unknown = Reflect.get(target, key, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  return {
    blobs: bind(source.blobs, changes.blobs),
    directories: bind(source.directories, changes.directories),
    pathInfo: bind(source.pathInfo, changes.pathInfo),
    close: () => source.close(),
  };
}

/** The copy cases, for one pair of backends. */
export function describeCopyConformance(name: string, open: () => Promise<CopyPair> | CopyPair): void {
  describe(`verified copy: ${name}`, () => {
    let pair: CopyPair;
    let fixture: Fixture;

    beforeEach(async () => {
      pair = await open();
      const lib = await ingestStorePath(pair.origin, encodeNarOf(FILES.lib), { storePath: LIB, references: [] });
      const app = await ingestStorePath(pair.origin, encodeNarOf(FILES.app), { storePath: APP, references: [LIB, APP] });
      fixture = { lib, app };
      await pair.publish?.([lib, app]);
    });
    afterEach(() => pair.close());

    /** Asserts that the target holds nothing of the fixture: no store path, no directory, no blob. */
    const expectNothingCopied = async (): Promise<void> => {
      expect(await pair.target.pathInfo.get(APP)).toBeUndefined();
      expect(await pair.target.pathInfo.get(LIB)).toBeUndefined();
      for (const info of [fixture.app, fixture.lib]) if (info.root.type === 'directory') expect(await pair.target.directories.has(info.root.digest)).toBe(false);
    };

    it('copies a closure (following references) byte-identical, reporting progress; a second copy copies nothing', async () => {
      const phases: TransferProgress['phase'][] = [];
      const report = await copyClosure(pair.source, pair.target, [APP], { onProgress: (progress) => void (phases.at(-1) !== progress.phase && phases.push(progress.phase)) });
      expect(phases).toEqual(['manifest', 'directories', 'blobs', 'registering', 'done']);
      // a-small and shared are one blob; the empty file is a blob too.
      expect(report).toMatchObject({ copiedStorePaths: 2, copiedBlobs: 4, copiedDirectories: 2, copiedBytes: 300 + FILES.lib['b-large'].length + 70_000 });
      expect(report.storePaths).toEqual([fixture.lib, fixture.app].sort((a, b) => (a.storePath < b.storePath ? -1 : 1)));
      for (const info of [fixture.lib, fixture.app]) {
        expect(await pair.target.pathInfo.get(info.storePath)).toEqual(info);
        expect((await collect(exportNar(pair.target, info.root))).equals(await collect(exportNar(pair.origin, info.root)))).toBe(true);
      }
      expect((await fsck(pair.target, { checkNars: true })).problems).toEqual([]);
      expect(await copyClosure(pair.source, pair.target, [APP])).toMatchObject({ copiedStorePaths: 0, copiedBlobs: 0, copiedDirectories: 0 });
    });

    it('copies only what the target lacks', async () => {
      await copyClosure(pair.source, pair.target, [LIB]);
      const report = await copyClosure(pair.source, pair.target, [APP]);
      // main only: shared is lib's a-small.
      expect(report).toMatchObject({ copiedStorePaths: 1, copiedBlobs: 1, copiedBytes: 70_000, copiedDirectories: 1 });
    });

    it('hands small blobs, verified, to a sink instead of the target, and only those the sink plans for', async () => {
      const offered = new Map<Digest, number>();
      let planned = 0;
      const report = await copyClosure(pair.source, pair.target, [APP], {
        smallBlobs: {
          plan: (storePaths, readDirectory) => {
            expect(offered.size).toBe(0);
            planned = storePaths.length;
            // Not lib's large file: the sink has it already, say.
            return storePaths.flatMap((info) => filesOf(info.root, readDirectory)).filter((file) => file.digest !== idOf(FILES.lib['b-large']));
          },
          accept: (id, bytes) => {
            expect(idOf(bytes)).toBe(id);
            offered.set(id, bytes.length);
          },
        },
      });
      expect(planned).toBe(2);
      expect([...offered.keys()].sort()).toEqual([idOf(FILES.lib['a-small']), idOf(FILES.lib['c-empty']), idOf(FILES.app.main)].sort());
      expect(report).toMatchObject({ copiedStorePaths: 2, copiedBlobs: 3 });
      expect(await pair.target.blobs.missing([...offered.keys()])).toHaveLength(3);
      expect(await pair.target.blobs.stat(idOf(FILES.lib['b-large']))).toBeUndefined();
    });

    it('refuses a blob whose bytes are not its id: the copy fails, the target holds nothing of it and registers nothing', async () => {
      const main = idOf(FILES.app.main);
      const forged = new Uint8Array(FILES.app.main);
      forged[40_000] = forged[40_000]! ^ 1;
      const source = tampered(pair.source, {
        blobs: {
          read: (id, range) =>
            id === main
              ? (async function* () {
                  yield forged;
                })()
              : pair.source.blobs.read(id, range),
        },
      });
      await expect(copyClosure(source, pair.target, [APP])).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
      expect(await pair.target.blobs.stat(main)).toBeUndefined();
      await expectNothingCopied();
    });

    it('refuses a directory that does not hash to its digest', async () => {
      if (fixture.app.root.type !== 'directory') throw new Error('the fixture root is a directory');
      const appRoot = fixture.app.root.digest;
      // A valid directory, but another one: app's entries with main made executable.
      const other = encodeDirectory(((await pair.origin.directories.get(appRoot)) ?? []).map((entry) => (entry.type === 'file' ? { ...entry, executable: true } : entry)));
      const source = tampered(pair.source, {
        directories: {
          getEncoded: async (id) => (id === appRoot ? other : pair.source.directories.getEncoded(id)),
        },
      });
      await expect(copyClosure(source, pair.target, [APP])).rejects.toMatchObject({ code: 'DIRECTORY_NOT_CANONICAL' });
      await expectNothingCopied();
    });

    it('refuses store paths the source does not vouch for, and a record of another path, before copying anything', async () => {
      // Vouches for app but not for the lib it references.
      const partial = tampered(pair.source, { pathInfo: { get: async (storePath) => (storePath === APP ? fixture.app : undefined) } });
      await expect(copyClosure(partial, pair.target, [APP])).rejects.toMatchObject({ code: 'STORE_PATH_NOT_FOUND' });
      await expect(copyClosure(pair.source, pair.target, ['/nix/store/8j8j8j8j8j8j8j8j8j8j8j8j8j8j8j8j-unknown'])).rejects.toMatchObject({ code: 'STORE_PATH_NOT_FOUND' });
      // Answers lib's record when asked for app.
      const lying = tampered(pair.source, { pathInfo: { get: async (storePath) => (storePath === APP ? fixture.lib : pair.source.pathInfo.get(storePath)) } });
      await expect(copyClosure(lying, pair.target, [APP])).rejects.toMatchObject({ code: 'STORE_PATH_INVALID' });
      await expectNothingCopied();
      expect(await pair.target.blobs.missing([idOf(FILES.app.main), idOf(FILES.lib['a-small'])])).toHaveLength(2);
    });
  });
}
