/**
 * fsck: re-verifies every object in a castore and reports what is wrong and
 * where, without changing anything. Blobs are re-hashed (and their outboards
 * recomputed), directories decoded strictly and re-hashed, references
 * checked, store path records re-validated (a path, reference or deriver
 * that is not exactly `/nix/store/<hash>-<valid name>` is reported), and,
 * with `checkNars`, every registered store path re-exported and its NarHash
 * compared with the registry's.
 */
import { blake3 } from '../blake3/index.js';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { encodeNixBase32 } from '../../nix/index.js';
import { BlobVerifier, GROUP_SIZE } from '../blake3/index.js';
import { CastoreError } from '../errors.js';
import { decodeDirectory, directoryId, directorySize } from '../directory.js';
import { digestFromBytes, digestToBytes, type Digest, type Node } from '../node.js';
import { exportNar } from '../nar-export.js';
import { blobDataPath } from './blob-files.js';
import type { Castore } from './castore.js';
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

/**
 * Streams a blob's bytes through the verifier with its stored outboard, so
 * a report names the first bad 16 KiB group (or a bad outboard).
 */
async function verifyBlob(id: Digest, size: number, outboard: Uint8Array, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<string | undefined> {
  let verifier: BlobVerifier;
  try {
    verifier = new BlobVerifier(digestToBytes(id), size, outboard, { objectId: id });
  } catch (error) {
    return `outboard does not match the blob id: ${(error as Error).message}`;
  }
  try {
    for await (const chunk of bytes) verifier.push(chunk);
    verifier.finish();
  } catch (error) {
    if (error instanceof CastoreError) {
      return error.code === 'BLAKE3_GROUP_MISMATCH'
        ? `content does not match its id from byte offset ${error.offset} (16 KiB group ${(error.offset ?? 0) / GROUP_SIZE})`
        : `the blob has the wrong length: ${error.message}`;
    }
    throw error;
  }
  return undefined;
}

export async function fsck(store: Castore, options: FsckOptions = {}): Promise<FsckReport> {
  const db = store.db;
  const problems: FsckProblem[] = [];
  const blobRows = db
    .prepare<[], { id: Digest; size: number; pack: string | null; packOffset: number | null; outboard: Buffer | null; storeFile: string | null }>(
      'SELECT id, size, pack, pack_offset AS packOffset, outboard, store_file AS storeFile FROM blobs',
    )
    .all();
  const totals = db.prepare<[], { b: number; d: number; p: number }>(
    'SELECT (SELECT COUNT(*) FROM blobs) AS b, (SELECT COUNT(*) FROM directories) AS d, (SELECT COUNT(*) FROM store_paths) AS p',
  ).get()!;
  const total = totals.b + totals.d + totals.p;
  let done = 0;
  const blobSizes = new Map<Digest, number>();
  for (const row of blobRows) {
    blobSizes.set(row.id, row.size);
    let problem: string | undefined;
    const outboard = row.outboard ? new Uint8Array(row.outboard) : new Uint8Array(0);
    if (row.storeFile !== null) {
      // Adopted: the bytes are a materialized store file, checked where they are (and left alone).
      // (A blob that was packed has no outboard: at most PACK_MAX bytes, hashed whole.)
      if (!existsSync(row.storeFile)) problem = `its store file ${row.storeFile} is missing`;
      else if (row.outboard) problem = await verifyBlob(row.id, row.size, outboard, createReadStream(row.storeFile, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>);
      else {
        const data = readFileSync(row.storeFile);
        if (data.length !== row.size || digestFromBytes(blake3(data)) !== row.id) problem = `its store file ${row.storeFile} does not hash to its id`;
      }
    } else if (row.pack !== null) {
      let data: Buffer | undefined;
      try {
        data = store.packs.read(row.pack, row.packOffset!, row.size, row.id);
      } catch (error) {
        problem = (error as Error).message;
      }
      if (data && digestFromBytes(blake3(data)) !== row.id) problem = `its bytes in pack ${row.pack} do not hash to its id`;
    } else {
      const dataPath = blobDataPath(store.dataDir, row.id);
      problem = existsSync(dataPath)
        ? await verifyBlob(row.id, row.size, outboard, createReadStream(dataPath, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>)
        : `data file ${dataPath} is missing`;
    }
    if (problem) problems.push({ kind: 'blob', id: row.id, problem });
    options.onProgress?.(++done, total);
  }

  const directorySizes = new Map<Digest, number>();
  const directoryRows = db.prepare<[], { id: Digest; data: Buffer }>('SELECT id, data FROM directories').all();
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
  for (const storePath of db.prepare<[], string>('SELECT path FROM store_paths ORDER BY path').pluck().all()) {
    try {
      storePaths.push(store.getStorePath(storePath)!);
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
  return { blobs: totals.b, directories: totals.d, storePaths: totals.p, problems };
}
