/**
 * The data plane's operations, independent of transport: the QUIC server
 * and the HTTP fallback both parse a request header, resolve the actor and
 * call `runDataOperation`, then frame its reply the same way.
 *
 * Authorization: admins, operators and pushers read everything and upload;
 * an agent reads only the manifest and objects of its desired config, never
 * one it merely reports running (see ClosureAccess). Uploads are verified on arrival — blobs by
 * their BLAKE3 id, directories by id, canonical form and the presence and
 * sizes of their children, store paths by re-hashing their NAR from the
 * castore — and become visible only when the whole batch verified.
 */
import { createHash } from 'node:crypto';
import {
  CastoreError,
  decodeDirectory,
  directoryId,
  directorySize,
  exportNar,
  splitBlobs,
  withIngest,
  type LocalCastore,
  type Digest,
  type Entry,
  type StorePathInfo,
} from '../../castore/index.js';
import { sha256NarHash } from '../../nix/index.js';
import { MAX_BATCH_BYTES, MAX_BATCHED_BLOB_BYTES, MAX_STREAM_BYTES, REQUESTS_WITH_BODY, type DataOperationName, type DataResponseInput, type ParsedDataRequest } from '../../protocol/data-protocol.js';
import { unzstdExact, unzstdWhole } from '../../protocol/compression/wire.js';
import type { FrameReader } from '../../protocol/framing.js';
import type { Access } from './actors.js';
import type { Coordinator } from '../coordinator.js';
import { FerryError } from '../../protocol/errors.js';
import type { Actor } from '../domain/commands.js';
import type { AuditEvent, ConfigBody } from '../domain/events.js';
import { desiredConfigOf } from './queries.js';
import { acceptsZstd, acceptsZstdBatch, compressedSegment, wireCompressionOf } from './wire-compression.js';
import { answerGroupDelta } from './group-delta.js';
import { blobStreamCacheOf, blobStreamKey, prepareClosureStream, readBlobs } from './blob-stream-cache.js';
import { closureManifest } from './signed-answers.js';
import { relayConfigs } from './relay-access.js';

export interface DataReply<N extends DataOperationName = DataOperationName> {
  header: DataResponseInput<N>;
  /** Bytes after the header, as the protocol lays them out for this operation. */
  body?: AsyncIterable<Uint8Array>;
}

/** Relays read through the same operations, limited like agents to what they serve (ClosureAccess.configsOf). */
const READ: Access = ['admin', 'operator', 'pusher', 'agent', 'relay'];
const WRITE: Access = ['admin', 'operator', 'pusher'];

export const DATA_ACCESS: Record<Exclude<DataOperationName, 'hello' | 'auth'>, Access> = {
  'closure.manifest': READ,
  'directories.get': READ,
  'blob.get': READ,
  'blobs.get': READ,
  'blobs.delta': READ,
  'blobs.stream': READ,
  'blobs.templates': READ,
  missing: WRITE,
  'upload.blobs': WRITE,
  'upload.templates': WRITE,
  'upload.directories': WRITE,
  'upload.storePaths': WRITE,
};

/** A closure's objects (directories and files), its files in walk order, and their normalized blobs once looked up. */
interface ClosureObjects {
  set: Set<string>;
  files: Digest[];
  normalized?: Set<string>;
}

/**
 * Which configs, and which castore objects, each config's closure covers:
 * what an agent may read. Computed once per config (walking its
 * directories) and cached; configs are immutable.
 */
export class ClosureAccess {
  private readonly objects = new Map<string, ClosureObjects>();

  constructor(private readonly coordinator: Coordinator) {}

  /**
   * The configs an agent may read — the one place that decides it, for the
   * data plane (both transports) and the Nix cache (NixCacheGate.mayRead):
   * only its desired config, i.e. its pin, else the head of the graph it
   * follows. Both are the coordinator's decisions (`agents pin|assign`,
   * `config submit`, `graph rollback`), audited, and replay rebuilds them.
   *
   * Never the agent's `currentConfig`: that is what the agent reports
   * (`POST /v1/agent/status`), and a report naming another graph's config
   * must not open that config's closure (issue 16, defect 3). Nor "the
   * config it last ran": the agent fetches nothing but the config
   * `/v1/agent/desired` hands it (agent/agent.ts runOnce → deploy →
   * openVouchedClosure, copyClosure); rolling back, locally or after a failed health check,
   * switches to a generation already on its disk, and a bundle brings its
   * own closure. A grant for the running config would have no reader.
   */
  configsOf(agentId: string, role: 'agent' | 'relay' = 'agent'): string[] {
    // A site relay reads what the agents it serves may read: their desired configs (relay-access.ts).
    if (role === 'relay') return relayConfigs(this.coordinator, agentId);
    const agent = this.coordinator.state.get('agents', agentId);
    if (!agent) return [];
    const desired = desiredConfigOf(this.coordinator.state, agent);
    return desired === null ? [] : [desired];
  }

  private objectsOf(configId: string): ClosureObjects {
    let objects = this.objects.get(configId);
    if (objects) return objects;
    const set = new Set<string>();
    const files: Digest[] = [];
    const config = this.coordinator.state.get('configs', configId);
    if (config) {
      const store = this.coordinator.castore;
      const visit = (node: StorePathInfo['root']): void => {
        if (node.type === 'file') {
          if (!set.has(node.digest)) files.push(node.digest);
          set.add(node.digest);
        }
        if (node.type !== 'directory' || set.has(node.digest)) return;
        set.add(node.digest);
        for (const entry of store.readDirectory(node.digest)) visit(entry);
      };
      for (const storePath of store.closure(Object.values((config.body as ConfigBody).targets))) visit(store.getStorePath(storePath)!.root);
    }
    objects = { set, files };
    if (this.objects.size > 64) this.objects.delete(this.objects.keys().next().value!);
    this.objects.set(configId, objects);
    return objects;
  }

  /**
   * The normalized blobs of a closure's templated files, for an agent that
   * restores them rather than fetching them (blobs.templates): looked up
   * only when an agent asks for an object outside the closure itself: one
   * lookup per file, which every deployment's first request paid before.
   */
  private normalizedOf(objects: ClosureObjects): Set<string> {
    if (!objects.normalized) {
      objects.normalized = new Set();
      for (const id of objects.files) {
        const template = this.coordinator.castore.templateOf(id);
        if (template) objects.normalized.add(template.normalized);
      }
    }
    return objects.normalized;
  }

  /** Refuses (FORBIDDEN) an agent (or relay) reading a config that is not its own (one of its agents'). */
  checkConfig(actor: Actor, configId: string): void {
    if (actor.role !== 'agent' && actor.role !== 'relay') return;
    if (!this.configsOf(actor.keyId, actor.role).includes(configId)) throw new FerryError('FORBIDDEN', `config ${configId} is not assigned to this ${actor.role}`);
  }

  /** Refuses (FORBIDDEN) an agent (or relay) reading objects outside its configs' closures. */
  checkObjects(actor: Actor, ids: readonly string[]): void {
    if (actor.role !== 'agent' && actor.role !== 'relay') return;
    const closures = this.configsOf(actor.keyId, actor.role).map((id) => this.objectsOf(id));
    for (const id of ids) {
      if (closures.some(({ set }) => set.has(id))) continue;
      if (!closures.some((objects) => this.normalizedOf(objects).has(id))) throw new FerryError('FORBIDDEN', `object ${id} is not part of a config assigned to this agent`);
    }
  }
}

function notFound(what: string): FerryError {
  return new FerryError('NOT_FOUND', what);
}

function corrupt(message: string): CastoreError {
  return new CastoreError('BLOB_CORRUPT', message);
}

/** Checks that every child of a directory is present with the size its entry claims. */
function checkChildren(store: LocalCastore, entries: readonly Entry[], batch: Map<Digest, Entry[]>, id: Digest): void {
  for (const entry of entries) {
    if (entry.type === 'file') {
      const stat = store.statBlob(entry.digest);
      if (!stat) throw notFound(`directory ${id}: blob ${entry.digest} of '${entry.name}' was not uploaded`);
      if (stat.size !== entry.size) throw corrupt(`directory ${id}: '${entry.name}' claims ${entry.size} bytes, its blob has ${stat.size}`);
    } else if (entry.type === 'directory') {
      const child = batch.get(entry.digest) ?? (store.hasDirectory(entry.digest) ? store.readDirectory(entry.digest) : undefined);
      if (!child) throw notFound(`directory ${id}: subdirectory ${entry.digest} of '${entry.name}' was not uploaded`);
      if (directorySize(child) !== entry.size) throw corrupt(`directory ${id}: '${entry.name}' claims ${entry.size} nodes below it, it has ${directorySize(child)}`);
    }
  }
}

async function narHashOf(store: LocalCastore, root: StorePathInfo['root']): Promise<{ narHash: string; narSize: number }> {
  const sha256 = createHash('sha256');
  let narSize = 0;
  for await (const chunk of exportNar(store, root)) {
    sha256.update(chunk);
    narSize += chunk.length;
  }
  return { narHash: sha256NarHash(sha256.digest()), narSize };
}

/** Pieces joined into chunks of at least COALESCE_BYTES (larger pieces pass as they are). */
const COALESCE_BYTES = 128 * 1024;
async function* coalesce(pieces: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  for (const piece of pieces) {
    if (piece.length >= COALESCE_BYTES) {
      if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      yield piece;
      continue;
    }
    pending.push(piece);
    pendingBytes += piece.length;
    if (pendingBytes >= COALESCE_BYTES) {
      yield Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

async function* flatten(parts: Iterable<Iterable<Uint8Array> | AsyncIterable<Uint8Array>>): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield* part;
}

/**
 * Runs one data operation for an authenticated actor (whose role the
 * caller checked against DATA_ACCESS). `body` is positioned after the
 * request header. Throws FerryError/CastoreError/FrameError; an upload
 * that throws leaves nothing of itself visible.
 */
export async function runDataOperation(coordinator: Coordinator, access: ClosureAccess, actor: Actor, request: ParsedDataRequest, body: FrameReader): Promise<DataReply> {
  const store = coordinator.castore;
  // A request without a body ends with its header: bytes after it are a lie, not something to leave queued.
  if (!REQUESTS_WITH_BODY.has(request.op)) await body.expectEnd();
  switch (request.op) {
    case 'hello':
    case 'auth':
      throw new FerryError('INVALID', `${request.op} is only meaningful at the start of a QUIC session`);

    case 'closure.manifest': {
      access.checkConfig(actor, request.configId);
      const config = coordinator.state.get('configs', request.configId);
      if (!config) throw notFound(`no config ${request.configId}`);
      const targets = (config.body as ConfigBody).targets;
      const target = targets[request.system];
      if (!target) throw notFound(`config ${request.configId} has no target for ${request.system} (it has: ${Object.keys(targets).join(', ')})`);
      const manifest = closureManifest(coordinator, request.configId, target, request.system);
      // A cold agent asks for the whole closure as one stream next: start compressing it now (once).
      prepareClosureStream(coordinator, target);
      return { header: manifest };
    }

    case 'directories.get': {
      access.checkObjects(actor, request.ids);
      const encodings = request.ids.map((id) => {
        if (!store.hasDirectory(id)) throw notFound(`directory ${id} is not in the store`);
        return store.readDirectoryBytes(id);
      });
      return { header: { directories: request.ids.map((id, index) => ({ id, size: encodings[index]!.length })) }, body: flatten([encodings]) };
    }

    case 'blob.get': {
      access.checkObjects(actor, [request.id]);
      const stat = store.statBlob(request.id);
      if (!stat) throw notFound(`blob ${request.id} is not in the store`);
      if (request.offset > stat.size) throw new FerryError('INVALID', `offset ${request.offset} is beyond the end of blob ${request.id} (${stat.size} bytes)`);
      const length = Math.min(request.length ?? stat.size - request.offset, stat.size - request.offset);
      const outboard = request.outboard ? store.readOutboard(request.id) : new Uint8Array(0);
      const cache = acceptsZstd(request.accept) ? wireCompressionOf(coordinator) : null;
      const compressed = cache && length > 0 ? await compressedSegment(cache, store, request.id, stat.size, request.offset, length) : undefined;
      if (compressed) {
        return {
          header: { id: request.id, size: stat.size, offset: request.offset, length, outboardSize: outboard.length, encoding: 'zstd', wireLength: compressed.wireLength },
          body: flatten([[outboard], compressed.frames]),
        };
      }
      return {
        header: { id: request.id, size: stat.size, offset: request.offset, length, outboardSize: outboard.length },
        body: flatten([[outboard], store.readBlob(request.id, { offset: request.offset, length })]),
      };
    }

    case 'blobs.get': {
      access.checkObjects(actor, request.ids);
      let blobs: ReturnType<typeof store.readBlobBatch>;
      try {
        blobs = store.readBlobBatch(request.ids, MAX_BATCH_BYTES);
      } catch (error) {
        if (error instanceof CastoreError && error.code === 'BLOB_NOT_FOUND') throw notFound(error.message);
        if (error instanceof CastoreError && error.code === 'BATCH_TOO_LARGE') throw new FerryError('INVALID', `${error.message}; fetch large blobs one by one`);
        throw error;
      }
      const large = blobs.sizes.findIndex((size) => size > MAX_BATCHED_BLOB_BYTES);
      if (large >= 0) {
        throw new FerryError('INVALID', `blob ${request.ids[large]} has ${blobs.sizes[large]} bytes: blobs over ${MAX_BATCHED_BLOB_BYTES} bytes are fetched one by one (blob.get, verified per group)`);
      }
      const cache = acceptsZstd(request.accept) ? wireCompressionOf(coordinator) : null;
      if (cache && acceptsZstdBatch(request.accept)) {
        // The batch as one frame (its files share their context), once for every agent fetching the same batch.
        const runs = [...blobs.bytes];
        const key = `batch:${createHash('sha256').update(request.ids.join(',')).digest('base64url')}`;
        const frame = cache.frameOf(key, () => (runs.length === 1 ? runs[0]! : Buffer.concat(runs)));
        const header = { blobs: request.ids.map((id, index) => ({ id, size: blobs.sizes[index]!, outboardSize: 0 })) };
        return frame ? { header: { ...header, batch: { encoding: 'zstd' as const, wireSize: frame.length } }, body: flatten([[frame]]) } : { header, body: flatten([runs]) };
      }
      if (cache) {
        // Each blob compressed on its own (once: cached by id), or raw when that does not save 10%.
        const runs = [...blobs.bytes];
        const raw = splitBlobs(runs, blobs.sizes);
        const frames = request.ids.map((id, index) => cache.frameOf(id, () => raw[index]!));
        return {
          header: {
            blobs: request.ids.map((id, index) => {
              const frame = frames[index];
              return frame ? { id, size: blobs.sizes[index]!, outboardSize: 0, encoding: 'zstd' as const, wireSize: frame.length } : { id, size: blobs.sizes[index]!, outboardSize: 0 };
            }),
          },
          // Nothing compressed: the read runs as they are; else per-blob pieces, small ones joined (a write per tiny blob is slow).
          body: frames.every((frame) => frame === undefined) ? flatten([runs]) : coalesce(frames.map((frame, index) => frame ?? raw[index]!)),
        };
      }
      return {
        // Batched blobs are verified whole by the receiver: no outboards.
        header: { blobs: request.ids.map((id, index) => ({ id, size: blobs.sizes[index]!, outboardSize: 0 })) },
        body: flatten([blobs.bytes]),
      };
    }

    case 'blobs.delta': {
      access.checkObjects(actor, request.blobs.map((blob) => blob.id));
      const { header, pieces } = await answerGroupDelta(store, request, body, acceptsZstd(request.accept) ? wireCompressionOf(coordinator) : null);
      return { header, body: coalesce(pieces) };
    }

    case 'blobs.stream': {
      access.checkObjects(actor, request.ids);
      if (new Set(request.ids).size !== request.ids.length) throw new FerryError('INVALID', 'ids: a blob is named twice');
      let size = 0;
      for (const id of request.ids) {
        const stat = store.statBlob(id);
        if (!stat) throw notFound(`blob ${id} is not in the store`);
        size += stat.size;
      }
      if (size > MAX_STREAM_BYTES) throw new FerryError('INVALID', `the blobs add up to ${size} bytes, more than a stream carries (${MAX_STREAM_BYTES}): ask for fewer`);
      const cache = acceptsZstd(request.accept) ? blobStreamCacheOf(coordinator) : null;
      if (!cache) return { header: { size }, body: readBlobs(store, request.ids) };
      return { header: { size, encoding: 'zstd' }, body: cache.open(blobStreamKey(request.ids), () => readBlobs(store, request.ids)) };
    }

    case 'blobs.templates': {
      access.checkObjects(actor, request.ids);
      const templates: DataResponseInput<'blobs.templates'>['templates'] = [];
      const records: Uint8Array[] = [];
      for (const id of request.ids) {
        const template = store.templateOf(id);
        if (!template) continue;
        templates.push({ id, normalized: template.normalized, recordSize: template.record.length });
        records.push(template.record);
      }
      return { header: { templates }, body: coalesce(records) };
    }

    case 'missing':
      return {
        header: {
          storePaths: request.storePaths.filter((storePath) => !store.getStorePath(storePath)),
          blobs: store.missingBlobs(request.blobs),
          directories: request.directories.filter((id) => !store.hasDirectory(id)),
        },
      };

    case 'upload.blobs': {
      const total = request.blobs.reduce((sum, blob) => sum + blob.size, 0);
      if (total > MAX_BATCH_BYTES && request.blobs.length > 1) throw new FerryError('INVALID', `batch of ${total} bytes exceeds ${MAX_BATCH_BYTES}; upload large blobs one by one`);
      return withIngest(store, async (session) => {
        let alreadyPresent = 0;
        for (const claimed of request.blobs) {
          if (store.hasBlob(claimed.id)) alreadyPresent++;
          const zstd = claimed.encoding === 'zstd';
          if (zstd ? claimed.wireSize === undefined || claimed.wireSize > claimed.size : claimed.wireSize !== undefined) {
            throw new FerryError('INVALID', `blob ${claimed.id}: wireSize ${claimed.wireSize} does not fit encoding ${claimed.encoding ?? 'identity'} of ${claimed.size} bytes`);
          }
          const writer = session.blobWriter(claimed.size, claimed.id);
          try {
            // Decompressed at most to the declared size (DECOMPRESS_* refusals); the id is then checked on those bytes as on raw ones.
            if (zstd && claimed.size <= MAX_BATCHED_BLOB_BYTES) writer.write(await unzstdWhole(await body.readExact(claimed.wireSize!, `blob ${claimed.id}`), claimed.size, `blob ${claimed.id}`));
            else if (zstd) for await (const chunk of unzstdExact(body.readChunks(claimed.wireSize!, `blob ${claimed.id}`), claimed.size, `blob ${claimed.id}`)) writer.write(chunk);
            // Batched blobs in one piece (no generator per file: a closure has thousands); large ones as they arrive.
            else if (claimed.size <= MAX_BATCHED_BLOB_BYTES) writer.write(await body.readExact(claimed.size, `blob ${claimed.id}`));
            else for await (const chunk of body.readChunks(claimed.size, `blob ${claimed.id}`)) writer.write(chunk);
          } catch (error) {
            writer.discard();
            throw error;
          }
          const actual = writer.finish();
          if (actual !== claimed.id) throw corrupt(`uploaded bytes of blob ${claimed.id} hash to ${actual}; nothing of this batch was stored`);
        }
        await body.expectEnd();
        return { header: { stored: request.blobs.length - alreadyPresent, alreadyPresent } };
      });
    }

    case 'upload.templates': {
      const records: Uint8Array[] = [];
      for (const claimed of request.templates) records.push(new Uint8Array(await body.readExact(claimed.recordSize, `template record of ${claimed.id}`)));
      await body.expectEnd();
      return withIngest(store, async (session) => {
        let alreadyPresent = 0;
        for (const [index, claimed] of request.templates.entries()) {
          if (store.hasBlob(claimed.id)) alreadyPresent++;
          // Restored from the normalized blob and hashed: a template that is not its blob is refused (BLOB_CORRUPT), and so is the batch.
          await session.putTemplate(claimed.id, claimed.size, claimed.normalized, records[index]!);
        }
        return { header: { stored: request.templates.length - alreadyPresent, alreadyPresent } };
      });
    }

    case 'upload.directories': {
      const total = request.directories.reduce((sum, directory) => sum + directory.size, 0);
      if (total > MAX_BATCH_BYTES && request.directories.length > 1) throw new FerryError('INVALID', `batch of ${total} bytes exceeds ${MAX_BATCH_BYTES}; upload large directories one by one`);
      const batch = new Map<Digest, Entry[]>();
      for (const claimed of request.directories) {
        const bytes = await body.readExact(claimed.size, `directory ${claimed.id}`);
        if (directoryId(bytes) !== claimed.id) throw corrupt(`uploaded directory ${claimed.id} hashes to ${directoryId(bytes)}`);
        const entries = decodeDirectory(bytes, claimed.id);
        checkChildren(store, entries, batch, claimed.id);
        batch.set(claimed.id, entries);
      }
      await body.expectEnd();
      await withIngest(store, (session) => {
        for (const entries of batch.values()) session.putDirectory(entries);
      });
      return { header: { stored: batch.size } };
    }

    case 'upload.storePaths': {
      const incoming = new Map(request.storePaths.map((info) => [info.storePath, info]));
      if (incoming.size !== request.storePaths.length) throw new FerryError('INVALID', 'storePaths lists a store path more than once');
      const fresh = request.storePaths.filter((info) => !store.getStorePath(info.storePath));
      for (const info of fresh) {
        for (const reference of info.references) {
          if (!incoming.has(reference) && !store.getStorePath(reference)) throw new FerryError('MISSING_STORE_PATH', `${info.storePath} references ${reference}, which is neither registered nor in this push`);
        }
        const root = info.root;
        if (root.type === 'file' && store.statBlob(root.digest)?.size !== root.size) throw notFound(`${info.storePath}: its file blob ${root.digest} was not uploaded`);
        if (root.type === 'directory' && !store.hasDirectory(root.digest)) throw notFound(`${info.storePath}: its root directory ${root.digest} was not uploaded`);
        const actual = await narHashOf(store, root);
        if (actual.narHash !== info.narHash || actual.narSize !== info.narSize) {
          throw corrupt(`${info.storePath}: its objects make a NAR of ${actual.narSize} bytes with hash ${actual.narHash}, not the claimed ${info.narSize} bytes, ${info.narHash}`);
        }
      }
      for (const root of request.roots) {
        if (!incoming.has(root) && !store.getStorePath(root)) throw notFound(`root ${root} is neither registered nor in this push`);
      }
      const registered = fresh.map((info) => info.storePath).sort();
      // The paths become visible in the transaction of the push's audit event, or not at all.
      let recorded: AuditEvent | undefined;
      await withIngest(
        store,
        (session) => {
          for (const info of fresh) session.registerStorePath(info);
        },
        (commit) => {
          recorded = coordinator.execute(actor, () => ({
            draft: {
              action: 'store.push',
              subject: request.roots[0]!,
              payload: {
                roots: request.roots,
                registered,
                registeredCount: registered.length,
                alreadyPresent: request.storePaths.length - fresh.length,
                ...request.stats,
              },
            },
            result: undefined,
            publish: commit,
          }))!.event;
        },
      );
      // Deploys of what was pushed follow: compress their streams now, off the event loop, not when the first agent asks.
      for (const root of request.roots) prepareClosureStream(coordinator, root);
      return { header: { registered, alreadyPresent: request.storePaths.length - fresh.length, seq: recorded!.seq } };
    }
  }
}
