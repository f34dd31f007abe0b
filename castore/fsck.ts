/**
 * fsck over the service interfaces, for any backend: re-verifies every
 * object and reports what is wrong and where, without changing anything.
 * Blobs are scrubbed by their backend (which knows where the bytes are and
 * names the first bad 16 KiB group), directories decoded strictly and
 * re-hashed, references checked, store path records re-validated (a path,
 * reference or deriver that is not exactly `/nix/store/<hash>-<valid name>`
 * is reported), and, with `checkNars`, every registered store path
 * re-exported and its NarHash compared with the registry's.
 */
import { createHash } from 'node:crypto';
import { encodeNixBase32 } from '../nix/index.js';
import { CastoreError } from './errors.js';
import { decodeDirectory, directoryId, directorySize } from './directory.js';
import type { Digest, Node } from './node.js';
import { exportNar } from './nar-export.js';
import type { CastoreServices } from './services/castore-services.js';
import type { StorePathInfo } from './store-path-info.js';

export interface FsckProblem {
  kind: 'blob' | 'directory' | 'store-path';
  /** Blob or directory id, or store path. */
  id: string;
  problem: string;
}

export interface FsckReport {
  blobs: number;
  directories: number;
  storePaths: number;
  problems: FsckProblem[];
}

export interface FsckOptions {
  /** Also re-export every store path and compare its NarHash (slow: reads everything again). */
  checkNars?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** Checks every object of `store` (see above); the report lists each problem once, naming the object. */
export async function fsck(store: Pick<CastoreServices, 'blobs' | 'directories' | 'pathInfo'>, options: FsckOptions = {}): Promise<FsckReport> {
  const problems: FsckProblem[] = [];
  const blobs: { id: Digest; size: number }[] = [];
  for await (const blob of store.blobs.list()) blobs.push({ id: blob.id, size: blob.size });
  const directoryIds: Digest[] = [];
  for await (const directory of store.directories.list()) directoryIds.push(directory.id);
  const storePathNames: string[] = [];
  for await (const storePath of store.pathInfo.listPaths()) storePathNames.push(storePath);
  const total = blobs.length + directoryIds.length + storePathNames.length;
  let done = 0;
  const blobSizes = new Map<Digest, number>();
  for (const blob of blobs) {
    blobSizes.set(blob.id, blob.size);
    const problem = await store.blobs.scrub(blob.id);
    if (problem) problems.push({ kind: 'blob', id: blob.id, problem });
    options.onProgress?.(++done, total);
  }

  const directorySizes = new Map<Digest, number>();
  const directoryRows: { id: Digest; data: Uint8Array }[] = [];
  for (const id of directoryIds) {
    const data = await store.directories.getEncoded(id).catch((error: unknown) => error as Error);
    if (data instanceof Uint8Array) directoryRows.push({ id, data });
    else problems.push({ kind: 'directory', id, problem: data ? data.message : 'it is listed but cannot be read' });
  }
  for (const row of directoryRows) {
    try {
      const entries = decodeDirectory(row.data, row.id);
      directorySizes.set(row.id, directorySize(entries));
      if (directoryId(row.data) !== row.id) problems.push({ kind: 'directory', id: row.id, problem: 'encoding does not hash to its id' });
    } catch (error) {
      problems.push({ kind: 'directory', id: row.id, problem: (error as Error).message });
    }
  }
  const checkNode = (node: Node, where: string, kind: FsckProblem['kind'], id: string): void => {
    if (node.type === 'file') {
      const size = blobSizes.get(node.digest);
      if (size === undefined) problems.push({ kind, id, problem: `${where} references missing blob ${node.digest}` });
      else if (size !== node.size) problems.push({ kind, id, problem: `${where} says ${node.size} bytes, blob ${node.digest} has ${size}` });
    } else if (node.type === 'directory') {
      const size = directorySizes.get(node.digest);
      if (size === undefined) problems.push({ kind, id, problem: `${where} references missing or invalid directory ${node.digest}` });
      else if (size !== node.size) problems.push({ kind, id, problem: `${where} says ${node.size} nodes, directory ${node.digest} has ${size}` });
    }
  };
  for (const row of directoryRows) {
    if (directorySizes.has(row.id)) for (const entry of decodeDirectory(row.data, row.id)) checkNode(entry, `entry '${entry.name}'`, 'directory', row.id);
    options.onProgress?.(++done, total);
  }

  // Row by row: an invalid row (a store path, reference or deriver Nix would refuse) is a problem to report, not a reason to stop.
  const storePaths: StorePathInfo[] = [];
  for (const storePath of storePathNames) {
    try {
      const info = await store.pathInfo.get(storePath);
      if (info) storePaths.push(info);
    } catch (error) {
      if (!(error instanceof CastoreError) || error.code !== 'STORE_PATH_INVALID') throw error;
      problems.push({ kind: 'store-path', id: storePath, problem: error.message });
      options.onProgress?.(++done, total);
    }
  }
  const valid = new Set<string>(storePaths.map((info) => info.storePath));
  for (const info of storePaths) {
    checkNode(info.root, 'root', 'store-path', info.storePath);
    for (const reference of info.references) {
      if (reference !== info.storePath && !valid.has(reference)) {
        problems.push({ kind: 'store-path', id: info.storePath, problem: `reference ${reference} is not registered (or its record is invalid)` });
      }
    }
    if (options.checkNars && !problems.some((p) => p.id === info.storePath)) {
      try {
        const sha256 = createHash('sha256');
        let size = 0;
        for await (const chunk of exportNar(store, info.root)) {
          sha256.update(chunk);
          size += chunk.length;
        }
        const narHash = `sha256:${encodeNixBase32(sha256.digest())}`;
        if (narHash !== info.narHash || size !== info.narSize) {
          problems.push({ kind: 'store-path', id: info.storePath, problem: `exported NAR is ${narHash} (${size} bytes), registry says ${info.narHash} (${info.narSize})` });
        }
      } catch (error) {
        problems.push({ kind: 'store-path', id: info.storePath, problem: `export failed: ${(error as Error).message}` });
      }
    }
    options.onProgress?.(++done, total);
  }
  return { blobs: blobs.length, directories: directoryIds.length, storePaths: storePathNames.length, problems };
}
