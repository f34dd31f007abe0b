/**
 * The coordinator's data plane as a read-only castore: what an agent or a
 * site relay reads through, verifying every byte before it yields it (the
 * data plane is a transport, not a trusted store). Blobs are read by range
 * against their outboard, group by group; directories are re-hashed and
 * decoded strictly; store path records are those a signed closure
 * manifest vouched for (the data plane has no per-path lookup), handed in
 * by whoever verified the manifest.
 *
 * The services answer one object at a time; bulk reads (directories by
 * the thousand, batches, one zstd stream, group deltas) are the `bulk`
 * capability (transfer/data-plane-copy.ts), which the verified copy
 * (transfer/copy-closure.ts) uses when it finds it.
 */
import { BlobVerifier, GROUP_SIZE, verifyOutboard } from '../blake3/index.js';
import { decodeDirectory, directoryId } from '../directory.js';
import { CastoreError } from '../errors.js';
import { digestToBytes, type Digest, type Entry } from '../node.js';
import type { BlobReader, BlobStat, ByteRange } from '../services/blob-service.js';
import type { CastoreReader } from '../services/castore-services.js';
import type { DirectoryReader } from '../services/directory-service.js';
import type { PathInfoReader } from '../services/path-info-service.js';
import { StorePathInfoSchema, type StorePathInfo } from '../store-path-info.js';
import { manifestProofMessage, verifyProof } from '../../protocol/coordinator-proofs.js';
import { DataError, type DataClient } from '../../protocol/data-client.js';
import type { KeyId } from '../../protocol/identity.js';
import { DataPlaneBulkCopy, type StreamTap } from '../transfer/data-plane-copy.js';
import type { BulkCopyReader } from '../transfer/copy-closure.js';
import { MAX_QUERY_ITEMS, MAX_TEMPLATE_QUERY } from '../../protocol/data-protocol.js';
import { runPool } from '../transfer/pool.js';
import type { BlobTemplate, BlobTemplateReader } from '../services/blob-templates.js';
import { WIRE_MAX_COMPRESSED_SEGMENT_BYTES } from '../../protocol/compression/wire.js';

/** `blobs.templates` requests in flight at once. */
const TEMPLATE_QUERY_PARALLEL = 4;

/** A blob is read in requests of at most this many bytes (the QUIC library buffers a reply until it is read). */
const SEGMENT_BYTES = WIRE_MAX_COMPRESSED_SEGMENT_BYTES;

const isNotFound = (error: unknown): boolean => error instanceof DataError && error.code === 'NOT_FOUND';

class RemoteBlobReader implements BlobReader, BlobTemplateReader {
  constructor(private readonly client: DataClient) {}

  /**
   * The templates among `ids` (`blobs.templates`), as the coordinator
   * claims them: whoever stores a blob from one verifies it
   * (Ingest.putTemplate). A coordinator that predates the operation
   * answers INVALID: then there are none.
   */
  async templates(ids: readonly Digest[]): Promise<Map<Digest, BlobTemplate>> {
    const found = new Map<Digest, BlobTemplate>();
    const unique = [...new Set(ids)];
    const parts: Digest[][] = [];
    for (let start = 0; start < unique.length; start += MAX_TEMPLATE_QUERY) parts.push(unique.slice(start, start + MAX_TEMPLATE_QUERY));
    let supported = true;
    // Side by side, as the copy's other requests: a cold deploy of 20,000 files asks 20 times.
    await runPool(parts, TEMPLATE_QUERY_PARALLEL, async (asked) => {
      if (!supported) return;
      const askedSet = new Set(asked);
      try {
        await this.client.call(
          { op: 'blobs.templates', ids: asked },
          {
            consume: async (reply) => {
              for (const template of reply.header.templates) {
                if (!askedSet.has(template.id) || found.has(template.id)) throw new CastoreError('BLOB_CORRUPT', `the coordinator answered a template for ${template.id}, which was not asked once`, { objectId: template.id });
                const record = new Uint8Array(await reply.body.readExact(template.recordSize, `template record of ${template.id}`));
                found.set(template.id, { normalized: template.normalized, record });
              }
              await reply.body.expectEnd();
            },
          },
        );
      } catch (error) {
        if (!(error instanceof DataError && error.code === 'INVALID')) throw error;
        supported = false;
      }
    });
    return supported ? found : new Map();
  }

  /** The blob's size and outboard, the outboard checked against the id; undefined when the coordinator lacks it. */
  private async head(id: Digest): Promise<{ size: number; outboard: Uint8Array } | undefined> {
    try {
      return await this.client.call(
        { op: 'blob.get', id, offset: 0, length: 0, outboard: true },
        {
          consume: async (reply) => {
            const outboard = new Uint8Array(await reply.body.readExact(reply.header.outboardSize, `outboard of ${id}`));
            await reply.body.expectEnd();
            if (reply.header.id !== id) throw new CastoreError('BLOB_CORRUPT', `the coordinator answered blob ${reply.header.id} for ${id}`, { objectId: id });
            verifyOutboard(digestToBytes(id), reply.header.size, outboard, id);
            return { size: reply.header.size, outboard };
          },
        },
      );
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async stat(id: Digest): Promise<BlobStat | undefined> {
    const head = await this.head(id);
    return head && { size: head.size };
  }

  async missing(ids: readonly Digest[]): Promise<Digest[]> {
    const lacking = new Set<Digest>();
    const unique = [...new Set(ids)];
    for (let start = 0; start < unique.length; start += MAX_QUERY_ITEMS) {
      const reply = await this.client.call({ op: 'missing', storePaths: [], blobs: unique.slice(start, start + MAX_QUERY_ITEMS), directories: [] });
      await reply.body.expectEnd();
      for (const id of reply.header.blobs) lacking.add(id);
    }
    return ids.filter((id) => lacking.has(id));
  }

  async readOutboard(id: Digest): Promise<Uint8Array> {
    const head = await this.head(id);
    if (!head) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not on the coordinator`, { objectId: id });
    return head.outboard;
  }

  /** Reads the whole groups around the range, verifies each against the outboard, and yields the range's bytes. */
  async *read(id: Digest, range: ByteRange = {}): AsyncIterable<Uint8Array> {
    const head = await this.head(id);
    if (!head) throw new CastoreError('BLOB_NOT_FOUND', `blob ${id} is not on the coordinator`, { objectId: id });
    const offset = range.offset ?? 0;
    const length = range.length ?? head.size - offset;
    if (offset < 0 || length < 0 || offset + length > head.size) {
      throw new CastoreError('BLAKE3_BAD_SIZE', `range ${offset}+${length} is outside blob ${id} of ${head.size} bytes`, { objectId: id });
    }
    if (length === 0) return;
    const start = Math.floor(offset / GROUP_SIZE) * GROUP_SIZE;
    const end = Math.min(head.size, Math.ceil((offset + length) / GROUP_SIZE) * GROUP_SIZE);
    const verifier = new BlobVerifier(digestToBytes(id), head.size, head.outboard, { startGroup: start / GROUP_SIZE, objectId: id });
    let position = start;
    for (let at = start; at < end; at += SEGMENT_BYTES) {
      const want = Math.min(SEGMENT_BYTES, end - at);
      const verified: Uint8Array[] = [];
      await this.client.call(
        { op: 'blob.get', id, offset: at, length: want, outboard: false },
        {
          consume: async (reply) => {
            if (reply.header.offset !== at || reply.header.length !== want || reply.header.encoding !== 'identity') {
              throw new CastoreError('BLOB_CORRUPT', `the coordinator sent blob ${id} from ${reply.header.offset}, ${reply.header.length} bytes (${reply.header.encoding}) for ${want} from ${at}`, { objectId: id });
            }
            for await (const chunk of reply.body.readChunks(want, `blob ${id}`)) verified.push(...verifier.push(chunk));
            await reply.body.expectEnd();
          },
        },
      );
      for (const chunk of verified) {
        const from = Math.max(offset - position, 0);
        const to = Math.min(offset + length - position, chunk.length);
        if (to > from) yield chunk.subarray(from, to);
        position += chunk.length;
      }
    }
    if (end === head.size) verifier.finish();
  }
}

class RemoteDirectoryReader implements DirectoryReader {
  constructor(private readonly client: DataClient) {}

  async getEncoded(id: Digest): Promise<Uint8Array | undefined> {
    try {
      return await this.client.call(
        { op: 'directories.get', ids: [id] },
        {
          consume: async (reply) => {
            const meta = reply.header.directories[0];
            if (reply.header.directories.length !== 1 || meta?.id !== id) throw new CastoreError('DIRECTORY_NOT_CANONICAL', `the coordinator answered other directories for ${id}`, { objectId: id });
            const bytes = new Uint8Array(await reply.body.readExact(meta.size, `directory ${id}`));
            await reply.body.expectEnd();
            if (directoryId(bytes) !== id) throw new CastoreError('DIRECTORY_NOT_CANONICAL', `directory ${id} from the coordinator hashes to ${directoryId(bytes)}`, { objectId: id });
            decodeDirectory(bytes, id); // strictly: refuses what is not canonical
            return bytes;
          },
        },
      );
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async get(id: Digest): Promise<readonly Entry[] | undefined> {
    const bytes = await this.getEncoded(id);
    return bytes && decodeDirectory(bytes, id);
  }

  async has(id: Digest): Promise<boolean> {
    const reply = await this.client.call({ op: 'missing', storePaths: [], blobs: [], directories: [id] });
    await reply.body.expectEnd();
    return !reply.header.directories.includes(id);
  }
}

/** Store path records vouched for by signed closure manifests (validated again here). */
class VouchedPathInfo implements PathInfoReader {
  private readonly paths = new Map<string, StorePathInfo>();

  learn(infos: readonly StorePathInfo[]): void {
    for (const info of infos) this.paths.set(info.storePath, StorePathInfoSchema.parse(info));
  }

  async get(storePath: string): Promise<StorePathInfo | undefined> {
    return this.paths.get(storePath);
  }

  async getByHashPart(hashPart: string, storeDir = '/nix/store'): Promise<StorePathInfo | undefined> {
    if (!/^[0-9a-df-np-sv-z]{32}$/.test(hashPart)) return undefined;
    for (const [storePath, info] of this.paths) if (storePath.startsWith(`${storeDir}/${hashPart}-`)) return info;
    return undefined;
  }
}

/**
 * A read-only castore over a connected DataClient. The client stays the
 * caller's (`close` does not close it). `vouched`: store path records the
 * caller verified (a closure manifest signed by the pinned coordinator key).
 */
export class RemoteCastore implements CastoreReader, BulkCopyReader {
  readonly blobs: BlobReader;
  readonly directories: DirectoryReader;
  readonly pathInfo: VouchedPathInfo;
  readonly bulk: DataPlaneBulkCopy;

  /**
   * `options.groupVerifiedStreams`: large blobs of a stream are verified
   * group by group against their outboards, asked first (a source that
   * only passes bytes on, a site relay: a corrupt byte costs 16 KiB).
   * `options.streamTap` sees each stream reply's wire bytes (a relay's copy).
   */
  constructor(client: DataClient, vouched: readonly StorePathInfo[] = [], options: { groupVerifiedStreams?: boolean; streamTap?: StreamTap } = {}) {
    const blobs = new RemoteBlobReader(client);
    this.blobs = blobs;
    this.directories = new RemoteDirectoryReader(client);
    this.pathInfo = new VouchedPathInfo();
    this.pathInfo.learn(vouched);
    this.bulk = new DataPlaneBulkCopy(client, {
      ...(options.groupVerifiedStreams ? { streamOutboards: (id: Digest) => blobs.readOutboard(id) } : {}),
      ...(options.streamTap ? { streamTap: options.streamTap } : {}),
    });
  }

  close(): void {}
}

/** A config's closure as the coordinator vouched for it. */
export interface VouchedClosure {
  /** Reads the closure; its path info answers for the manifest's store paths only. */
  source: RemoteCastore;
  /** The config's store path for the system (a member of `storePaths`). */
  target: string;
  /** The closure's store paths, as copyClosure takes its roots. */
  storePaths: string[];
}

/**
 * Asks the coordinator for the closure manifest of `configId` for
 * `system` and checks its signature against `coordinatorKey` (the key
 * pinned at enrollment) before anything else is read. Refuses (DataError
 * from the coordinator) unknown configs and systems, and (DataError
 * BAD_PROOF) a manifest that is not signed by `coordinatorKey` or is for
 * another config or system.
 */
export async function openVouchedClosure(client: DataClient, configId: string, system: string, coordinatorKey: KeyId, options: { groupVerifiedStreams?: boolean } = {}): Promise<VouchedClosure> {
  const manifest = (await client.call({ op: 'closure.manifest', configId, system })).header;
  if (manifest.configId !== configId || manifest.system !== system || !verifyProof(coordinatorKey, manifestProofMessage(manifest), manifest.proof)) {
    throw new DataError('BAD_PROOF', `the closure manifest of config ${configId} is not signed by the coordinator key ${coordinatorKey}: refusing it`);
  }
  return { source: new RemoteCastore(client, manifest.storePaths, options), target: manifest.target, storePaths: manifest.storePaths.map((info) => info.storePath) };
}
