/**
 * Group-level dedup on fetch (`blobs.delta`, protocol/data-protocol.ts):
 * a file whose store path was rebuilt or edited usually differs from its
 * previous version in a few 16 KiB groups (an embedded store path, a
 * version string, a patched function). The receiver finds that previous
 * version in its castore (the same file of a store path of the same name),
 * sends the BLAKE3 chaining values of its groups, and receives only the
 * groups whose chaining value differs; the others are copied from the
 * basis. Chaining values are what the wanted blob's outboard holds for each
 * group, so no metadata beyond the castore's own is needed; a group only
 * matches at the same offset (an in-place edit, a same-length store path
 * rewrite), not after an insertion.
 *
 * Nothing weakens verification: the new blob's tree, from the chaining
 * values of the groups received (hashed) and of those reused (the basis's,
 * from its outboard checked against its id), must hash to the wanted id
 * before anything is kept, and the reused bytes must hash to the basis's
 * id as they are copied. A blob that fails either (a basis changed on
 * disk, a coordinator that sent wrong bytes) is fetched whole instead, as
 * is every blob the coordinator declines.
 */
import { DataClient, DataError, TransportError } from '../../protocol/data-client.js';
import { unzstdWhole } from '../../protocol/compression/wire.js';
import { DELTA_CV_BYTES, MAX_BATCH_BYTES, MAX_BATCHED_BLOB_BYTES, MAX_DELTA_BLOBS, MAX_DELTA_GROUPS } from '../../protocol/data-protocol.js';
import { cvToBytes, GroupBuffer, groupChainingValue, groupCount, GROUP_SIZE, blake3Hasher, outboardFromGroupCvs, verifyOutboard } from '../blake3/index.js';
import { parseDrvName } from '../../nix/drv-name.js';
import { CastoreError } from '../errors.js';
import { digestFromBytes, digestToBytes, type Digest, type Entry, type FileNode, type Node } from '../node.js';
import type { LocalCastore } from '../local/local-castore.js';
import type { BlobWriter } from '../services/blob-service.js';
import type { StorePathInfo } from '../store-path-info.js';

/** What a local target offers as the basis of deltas: synchronous reads of the previous versions. */
export type DeltaBasisStore = Pick<LocalCastore, 'listStorePaths' | 'hasBlob' | 'hasDirectory' | 'readDirectory' | 'readBlob' | 'readOutboard' | 'readBlobRangeSync'>;

/** Local versions of a store path's name searched for bases. */
const MAX_BASIS_CANDIDATES = 4;

/** A wanted blob and the local blob it is likely a new version of. */
export interface DeltaPair {
  target: FileNode;
  basis: FileNode;
}

/**
 * A store path's name without its version, as Nix's parseDrvName splits
 * it (nix/drv-name.ts: `hello-2.12.1` -> `hello`, `perl5.36.0-JSON-4.10` -> `perl5.36.0-JSON`).
 */
export function packageName(storePathName: string): string {
  return parseDrvName(storePathName).name;
}

/** The name part of a store path (after its hash and dash). */
function storePathName(storePath: string): string {
  const base = storePath.slice(storePath.lastIndexOf('/') + 1);
  return base.slice(base.indexOf('-') + 1);
}

/**
 * For each wanted blob of more than one group, a previous version the
 * castore holds: the file at the same path inside a local store path of
 * the same name (else of the same name without version), preferring one
 * of the same size (in-place edits and store path rewrites keep sizes).
 * `readDirectory` reads the new trees (just fetched or local).
 */
export function findDeltaBases(
  store: DeltaBasisStore,
  lacking: readonly StorePathInfo[],
  readDirectory: (id: Digest) => readonly Entry[],
  wanted: ReadonlyMap<Digest, FileNode>,
): DeltaPair[] {
  // Blobs of one group are never deltas: without any larger, no need to read the registry.
  if (![...wanted.values()].some((blob) => groupCount(blob.size) > 1)) return [];
  const lackingPaths = new Set(lacking.map((info) => info.storePath));
  const byName = new Map<string, StorePathInfo[]>();
  const byPackage = new Map<string, StorePathInfo[]>();
  for (const info of store.listStorePaths()) {
    if (lackingPaths.has(info.storePath)) continue;
    const name = storePathName(info.storePath);
    for (const [map, key] of [[byName, name], [byPackage, packageName(name)]] as const) {
      const list = map.get(key);
      if (list) list.push(info);
      else map.set(key, [info]);
    }
  }
  const bases = new Map<Digest, FileNode>();
  const walk = (now: Node, before: Node): void => {
    if (now.type === 'file' && before.type === 'file') {
      if (!wanted.has(now.digest) || groupCount(now.size) < 2 || now.digest === before.digest) return;
      const known = bases.get(now.digest);
      if (known && (known.size === now.size || before.size !== now.size)) return;
      if (store.hasBlob(before.digest)) bases.set(now.digest, before);
      return;
    }
    if (now.type !== 'directory' || before.type !== 'directory' || !store.hasDirectory(before.digest)) return;
    const previous = new Map(store.readDirectory(before.digest).map((entry) => [entry.name, entry]));
    for (const entry of readDirectory(now.digest)) {
      const match = previous.get(entry.name);
      if (match) walk(entry, match);
    }
  };
  for (const info of lacking) {
    const name = storePathName(info.storePath);
    const candidates = byName.get(name) ?? byPackage.get(packageName(name)) ?? [];
    // An agent keeps a few generations, so a few versions of a name; a castore holding hundreds stays cheap.
    for (const candidate of candidates.slice(0, MAX_BASIS_CANDIDATES)) walk(info.root, candidate.root);
  }
  return [...bases].map(([id, basis]) => ({ target: wanted.get(id)!, basis }));
}

/** A blob's bytes as 16 KiB groups (the last one shorter), each a fresh view that may be kept. */
async function* groupsOf(store: DeltaBasisStore, id: Digest): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  for await (const chunk of store.readBlob(id)) {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(GROUP_SIZE - pendingBytes, chunk.length - at);
      pending.push(chunk.subarray(at, at + take));
      pendingBytes += take;
      at += take;
      if (pendingBytes === GROUP_SIZE) {
        yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
      }
    }
  }
  if (pendingBytes > 0) yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
}

/** Length of group `index` of a blob of `size` bytes. */
function groupLength(size: number, index: number): number {
  return Math.min(GROUP_SIZE, size - index * GROUP_SIZE);
}

/**
 * The chaining values (8 words per group) the basis's groups have as
 * groups of the target, as far as the basis reaches: from the basis's own
 * outboard, checked against its id, where the group lengths agree (all
 * but the target's last group, usually), else hashed from its bytes. The
 * bytes are checked against these values when the blob is assembled.
 * Throws what the store's reads throw (a basis gone or changed on disk).
 */
export function basisChainingValues(store: Pick<DeltaBasisStore, 'readOutboard' | 'readBlobRangeSync'>, pair: DeltaPair): Uint32Array {
  const { target, basis } = pair;
  const reach = Math.min(groupCount(target.size), groupCount(basis.size));
  const cvs = new Uint32Array(reach * 8);
  const tree = groupCount(basis.size) > 1 ? verifyOutboard(digestToBytes(basis.digest), basis.size, store.readOutboard(basis.digest), basis.digest) : undefined;
  const buffer = new GroupBuffer();
  let count = 0;
  for (; count < reach; count++) {
    const wanted = groupLength(target.size, count);
    const held = groupLength(basis.size, count);
    if (held < wanted) break;
    if (held === wanted && tree) cvs.set(tree.groupCv(count)!, count * 8);
    else cvs.set(groupChainingValue(store.readBlobRangeSync(basis.digest, count * GROUP_SIZE, wanted), count, buffer), count * 8);
  }
  return cvs.subarray(0, count * 8);
}

/**
 * Runs of the target's groups whose chaining value differs from the
 * basis's (`basisCvs`: 32-byte values as on the wire, as many groups as
 * the basis reaches), ascending: [first group, count]. What a sender of a
 * delta sends (the coordinator's `blobs.delta`, a based bundle).
 */
export function differingRuns(groups: number, basisCvs: Uint8Array, groupCv: (index: number) => Uint32Array | undefined): [number, number][] {
  const runs: [number, number][] = [];
  const basisGroups = basisCvs.length / DELTA_CV_BYTES;
  const words = new Uint32Array(8);
  for (let index = 0; index < groups; index++) {
    let same = false;
    if (index < basisGroups) {
      const expected = groupCv(index)!;
      const at = index * DELTA_CV_BYTES;
      for (let word = 0; word < 8; word++) words[word] = basisCvs[at + word * 4]! | (basisCvs[at + word * 4 + 1]! << 8) | (basisCvs[at + word * 4 + 2]! << 16) | (basisCvs[at + word * 4 + 3]! << 24);
      same = words.every((word, i) => word >>> 0 === expected[i]);
    }
    if (same) continue;
    const last = runs.at(-1);
    if (last && last[0] + last[1] === index) last[1]++;
    else runs.push([index, 1]);
  }
  return runs;
}

export interface GroupDeltaSink {
  /**
   * A writer for an assembled blob over MAX_BATCHED_BLOB_BYTES whose bytes
   * are verified against `outboard` (itself checked against the blob's id)
   * as they are written: the writer need not hash them again.
   */
  largeWriter(blob: FileNode, outboard: Uint8Array): BlobWriter;
  /** An assembled blob of at most MAX_BATCHED_BLOB_BYTES, already checked against its id. */
  small(blob: FileNode, bytes: Uint8Array): Promise<void>;
}

export interface GroupDeltaReport {
  /** Blobs assembled from a basis and the groups received. */
  assembled: number;
  /** Bytes of the groups received for them (uncompressed). */
  groupBytes: number;
  /** Blobs to fetch whole: declined by the coordinator, or whose assembly did not verify. */
  whole: FileNode[];
}

/** Requests of at most MAX_DELTA_BLOBS blobs, MAX_DELTA_GROUPS basis groups and MAX_BATCH_BYTES of wanted bytes (or one larger blob). */
export function deltaBatches(pairs: readonly DeltaPair[]): DeltaPair[][] {
  const batches: DeltaPair[][] = [];
  let batch: DeltaPair[] = [];
  let groups = 0;
  let bytes = 0;
  for (const pair of pairs) {
    const pairGroups = Math.min(groupCount(pair.target.size), MAX_DELTA_GROUPS);
    if (batch.length > 0 && (batch.length >= MAX_DELTA_BLOBS || groups + pairGroups > MAX_DELTA_GROUPS || bytes + pair.target.size > MAX_BATCH_BYTES)) {
      batches.push(batch);
      batch = [];
      groups = 0;
      bytes = 0;
    }
    batch.push(pair);
    groups += pairGroups;
    bytes += pair.target.size;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/**
 * Fetches one batch of blobs as deltas against their bases and hands each
 * verified blob to `sink`. Never throws for a blob that cannot be
 * assembled: it is returned in `whole`; throws what the transport throws
 * (a DataError from a coordinator that does not know `blobs.delta` turns
 * every blob of the batch to `whole`).
 */
export async function fetchGroupDeltaBatch(client: DataClient, store: DeltaBasisStore, batch: readonly DeltaPair[], sink: GroupDeltaSink): Promise<GroupDeltaReport> {
  const unasked: FileNode[] = [];
  const asked: { pair: DeltaPair; cvs: Uint32Array }[] = [];
  for (const pair of batch) {
    // A basis that is gone or unreadable since it was chosen: fetch whole.
    let cvs: Uint32Array;
    try {
      cvs = basisChainingValues(store, pair);
    } catch {
      cvs = new Uint32Array(0);
    }
    const groups = Math.min(cvs.length / 8, MAX_DELTA_GROUPS);
    if (groups === 0) unasked.push(pair.target);
    else asked.push({ pair, cvs: cvs.subarray(0, groups * 8) });
  }
  if (asked.length === 0) return { assembled: 0, groupBytes: 0, whole: unasked };
  let report: GroupDeltaReport;
  try {
    report = await client.call(
      { op: 'blobs.delta', blobs: asked.map(({ pair, cvs }) => ({ id: pair.target.digest, basisGroups: cvs.length / 8 })), ...(client.accept ? { accept: client.accept } : {}) },
      {
        body: asked.map(({ cvs }) => cvsToBytes(cvs)),
        // Retried as a whole after a transport failure: each attempt reports on its own.
        consume: async (reply) => {
          const attempt: GroupDeltaReport = { assembled: 0, groupBytes: 0, whole: [] };
          let replySent = 0;
          if (reply.header.blobs.length !== asked.length) throw new TransportError(`the coordinator answered ${reply.header.blobs.length} deltas for ${asked.length} blobs`);
          for (const [index, meta] of reply.header.blobs.entries()) {
            const { pair, cvs } = asked[index]!;
            const target = pair.target;
            if (meta.id !== target.digest || meta.size !== target.size) throw new TransportError(`the coordinator sent a delta of ${meta.id} (${meta.size} bytes) where ${target.digest} was asked for`);
            if (meta.runs === null) {
              attempt.whole.push(target);
              continue;
            }
            const sentLength = checkRuns(meta.runs, target, replySent);
            replySent += sentLength;
            let sent: Uint8Array | undefined;
            if (meta.encoding === 'zstd') {
              if (!client.compression || meta.wireSize === undefined || meta.wireSize > sentLength) {
                throw new DataError('BAD_RESPONSE', `the coordinator sent the delta of ${meta.id} as ${meta.wireSize} bytes of zstd for ${sentLength} bytes`);
              }
              const wire = await reply.body.readExact(meta.wireSize, `delta of ${meta.id}`);
              // Bounded by the declared length; a frame that does not decompress to it is corrupt: fetch the blob whole.
              sent = await unzstdWhole(wire, sentLength, `delta of ${meta.id}`).catch(() => undefined);
            } else {
              sent = await reply.body.readExact(sentLength, `delta of ${meta.id}`);
            }
            if (sent && (await assemble(store, pair, cvs, meta.runs, sent, sink))) {
              attempt.assembled++;
              attempt.groupBytes += sentLength;
            } else {
              attempt.whole.push(target);
            }
          }
          await reply.body.expectEnd();
          return attempt;
        },
      },
    );
  } catch (error) {
    if (!(error instanceof DataError)) throw error;
    // A coordinator without blobs.delta (or refusing this request): fetch these whole.
    return { assembled: 0, groupBytes: 0, whole: [...unasked, ...asked.map(({ pair }) => pair.target)] };
  }
  return { ...report, whole: [...unasked, ...report.whole] };
}

/**
 * Refuses (BAD_RESPONSE) runs out of order or outside the blob, and runs
 * that would take the reply's sent groups past MAX_BATCH_BYTES (what a
 * coordinator ever sends in one reply: the receiver holds them in memory);
 * `alreadySent` is what earlier blobs of the reply took. Returns the bytes
 * these runs cover.
 */
export function checkRuns(runs: readonly (readonly [number, number])[], target: FileNode, alreadySent = 0): number {
  const groups = groupCount(target.size);
  let next = 0;
  let length = 0;
  for (const [first, count] of runs) {
    if (first < next || first + count > groups) throw new DataError('BAD_RESPONSE', `the delta of ${target.digest} names groups ${first}+${count}, out of order or past its ${groups} groups`);
    next = first + count;
    length += Math.min(target.size, next * GROUP_SIZE) - first * GROUP_SIZE;
  }
  if (alreadySent + length > MAX_BATCH_BYTES) throw new DataError('BAD_RESPONSE', `the deltas of one reply add up to more than ${MAX_BATCH_BYTES} bytes`);
  return length;
}

/** Chaining values as the 32-byte little-endian values of the wire. */
export function cvsToBytes(cvs: Uint32Array): Uint8Array {
  const out = new Uint8Array(cvs.length * 4);
  for (let group = 0; group < cvs.length / 8; group++) cvToBytes(cvs.subarray(group * 8, group * 8 + 8), out, group * DELTA_CV_BYTES);
  return out;
}

/**
 * Builds the target from the sent groups and the basis, keeping it only if
 * it is the target: first its tree, from the sent groups' chaining values
 * (hashed) and the basis's for the others, must hash up to the target's
 * id; then, as the bytes are written, the basis's bytes must hash (whole,
 * natively) to the basis's id, which its chaining values were checked
 * against. Returns false, keeping nothing, when either fails (a coordinator
 * that sent wrong bytes, a basis changed on disk).
 */
async function assemble(store: DeltaBasisStore, pair: DeltaPair, basisCvs: Uint32Array, runs: readonly [number, number][], sent: Uint8Array, sink: GroupDeltaSink): Promise<boolean> {
  const { target, basis } = pair;
  const groups = groupCount(target.size);
  const basisGroups = basisCvs.length / 8;
  const isSent = new Uint8Array(groups);
  for (const [first, count] of runs) isSent.fill(1, first, first + count);
  const leaves = new Uint32Array(groups * 8);
  const buffer = new GroupBuffer();
  for (let index = 0, sentAt = 0; index < groups; index++) {
    const length = groupLength(target.size, index);
    if (isSent[index]) {
      groupChainingValue(sent.subarray(sentAt, sentAt + length), index, buffer, leaves.subarray(index * 8, index * 8 + 8));
      sentAt += length;
    } else if (index < basisGroups) {
      leaves.set(basisCvs.subarray(index * 8, index * 8 + 8), index * 8);
    } else {
      return false; // a group neither sent nor in the basis
    }
  }
  const tree = outboardFromGroupCvs(leaves, groups, buffer);
  if (digestFromBytes(tree.root) !== target.digest) return false;

  const large = target.size > MAX_BATCHED_BLOB_BYTES;
  const out = large ? undefined : new Uint8Array(target.size);
  const writer = large ? sink.largeWriter(target, tree.outboard) : undefined;
  const basisHash = blake3Hasher();
  let written = 0;
  let sentAt = 0;
  try {
    const basisGroupsRead = groupsOf(store, basis.digest);
    for (let index = 0; index < groups; index++) {
      const length = groupLength(target.size, index);
      const fromBasis = index < groupCount(basis.size) ? (await basisGroupsRead.next()).value : undefined;
      if (fromBasis) basisHash.update(fromBasis);
      let bytes: Uint8Array;
      if (isSent[index]) {
        bytes = sent.subarray(sentAt, sentAt + length);
        sentAt += length;
      } else {
        if (!fromBasis || fromBasis.length < length) throw new CastoreError('BLOB_CORRUPT', `the basis of ${target.digest} ended early`);
        bytes = fromBasis.subarray(0, length);
      }
      if (writer) writer.write(bytes);
      else out!.set(bytes, written);
      written += bytes.length;
    }
    // The rest of the basis, to check all of it.
    for (let rest = await basisGroupsRead.next(); !rest.done; rest = await basisGroupsRead.next()) basisHash.update(rest.value);
  } catch (error) {
    writer?.discard();
    if (error instanceof CastoreError) return false;
    throw error;
  }
  if (digestFromBytes(basisHash.digest()) !== basis.digest) {
    writer?.discard();
    return false;
  }
  if (writer) {
    writer.finish();
    return true;
  }
  await sink.small(target, out!);
  return true;
}
