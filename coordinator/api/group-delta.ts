/**
 * The coordinator's side of `blobs.delta` (protocol/data-protocol.ts;
 * the receiver is castore/transfer/group-delta.ts): group-level dedup
 * against a previous version of a file that the receiver holds. The
 * receiver sends the chaining values of its basis's 16 KiB groups; this
 * side compares them with the wanted blob's own (from its outboard) and
 * sends only the groups that differ.
 *
 * Nothing the receiver claims decides what it may read: the blobs asked
 * for are checked like any other read (ClosureAccess), the chaining values
 * only choose which of their groups to leave out, and the receiver
 * verifies the blob it assembles against its id. A receiver that lies
 * about its basis only gets a blob that fails its own verification.
 */
import { createHash } from 'node:crypto';
import { differingRuns, digestToBytes, groupCount, GROUP_SIZE, verifyOutboard, type LocalCastore, type Digest } from '../../castore/index.js';
import { DELTA_CV_BYTES, MAX_BATCH_BYTES, type DataResponseInput, type ParsedDataRequest } from '../../protocol/data-protocol.js';
import type { FrameReader } from '../../protocol/framing.js';
import { FerryError } from '../../protocol/errors.js';
import type { WireCompressionCache } from './wire-compression.js';

type DeltaReplyBlob = DataResponseInput<'blobs.delta'>['blobs'][number];

/**
 * Answers a `blobs.delta` request whose body (the basis chaining values)
 * `body` is positioned at. Refuses (INVALID) a blob of one group (there is
 * nothing to leave out: fetch it whole) and more basis groups than the
 * blob has; (NOT_FOUND) unknown blobs. A blob whose groups all differ, or
 * whose differing groups would take the reply past MAX_BATCH_BYTES, gets
 * `runs: null`: the receiver fetches it whole.
 */
export async function answerGroupDelta(
  store: LocalCastore,
  request: ParsedDataRequest<'blobs.delta'>,
  body: FrameReader,
  cache: WireCompressionCache | null,
): Promise<{ header: DataResponseInput<'blobs.delta'>; pieces: Uint8Array[] }> {
  const blobs: DeltaReplyBlob[] = [];
  const pieces: Uint8Array[] = [];
  let replyBytes = 0;
  for (const wanted of request.blobs) {
    const stat = store.statBlob(wanted.id);
    if (!stat) throw new FerryError('NOT_FOUND', `blob ${wanted.id} is not in the store`);
    const groups = groupCount(stat.size);
    if (groups < 2) throw new FerryError('INVALID', `blob ${wanted.id} is one group (${stat.size} bytes): there is no delta to send, fetch it whole`);
    if (wanted.basisGroups > groups) throw new FerryError('INVALID', `${wanted.basisGroups} basis groups for blob ${wanted.id}, which has ${groups}`);
    const basisCvs = await body.readExact(wanted.basisGroups * DELTA_CV_BYTES, `basis chaining values of ${wanted.id}`);
    const tree = verifyOutboard(digestToBytes(wanted.id), stat.size, store.readOutboard(wanted.id), wanted.id);
    const runs = differingRuns(groups, basisCvs, (index) => tree.groupCv(index));
    const sent = runs.reduce((sum, [first, count]) => sum + Math.min(stat.size, (first + count) * GROUP_SIZE) - first * GROUP_SIZE, 0);
    if (sent === stat.size || replyBytes + sent > MAX_BATCH_BYTES) {
      blobs.push({ id: wanted.id, size: stat.size, runs: null });
      continue;
    }
    replyBytes += sent;
    const raw = await groupBytes(store, wanted.id, stat.size, runs, sent);
    // The same delta goes to every agent upgrading from the same basis: compressed once.
    const frame = cache?.frameOf(`${wanted.id}~${createHash('sha256').update(JSON.stringify(runs)).digest('base64url')}`, () => raw);
    if (frame) {
      blobs.push({ id: wanted.id, size: stat.size, runs, encoding: 'zstd', wireSize: frame.length });
      pieces.push(frame);
    } else {
      blobs.push({ id: wanted.id, size: stat.size, runs });
      if (raw.length > 0) pieces.push(raw);
    }
  }
  await body.expectEnd();
  return { header: { blobs }, pieces };
}

async function groupBytes(store: LocalCastore, id: Digest, size: number, runs: readonly [number, number][], total: number): Promise<Uint8Array> {
  const out = new Uint8Array(total);
  let at = 0;
  for (const [first, count] of runs) {
    const offset = first * GROUP_SIZE;
    const bytes = await store.readBlobRange(id, offset, Math.min(size, (first + count) * GROUP_SIZE) - offset);
    out.set(bytes, at);
    at += bytes.length;
  }
  return out;
}
