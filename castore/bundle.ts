/**
 * Bundles: a config and exactly the castore objects its closure needs, in
 * one tar file, for machines that never reach the coordinator. Layout:
 *
 *   ferry-bundle.json   manifest: the config, its store paths (StorePathInfo)
 *   ferry-bundle.sig    coordinator's ed25519 signature (base64) over
 *                       "ferry-bundle-v1\n" + BLAKE3 hex of the manifest bytes
 *   directories/<id>    directory encodings
 *   blobs/<id>          blob bytes
 *
 * The manifest is trusted only through the signature; every object only
 * through its BLAKE3 id. Reading ingests into one castore session that is
 * committed only when the signature, every object and the completeness of
 * every store path verified: a bad bundle leaves nothing behind.
 */
import { nativeBlake3 } from './blake3/index.js';
import tar from 'tar-stream';
import { z } from 'zod';
import { ed25519Verify } from '../protocol/ed25519.js';
import { publicKeyOf, type Identity, type KeyId } from '../protocol/identity.js';
import { StorePathInfoSchema, type StorePathInfo } from '../protocol/store-path-info.js';
import { decodeDirectory, directoryId } from './directory.js';
import { CastoreError } from './errors.js';
import { isDigest, type Digest, type Node } from './node.js';
import type { Castore } from './store/castore.js';

export const BundleManifestSchema = z.strictObject({
  format: z.literal('ferry-bundle-v1'),
  coordinatorKey: z.string(),
  createdAt: z.number().int(),
  /** The config as agents receive it (id, graph, targets, activation, health, …). */
  config: z.object({ id: z.string().regex(/^[0-9a-f]{64}$/), targets: z.record(z.string(), z.string()) }).passthrough(),
  storePaths: z.array(StorePathInfoSchema).max(100_000),
});
export type BundleManifest = z.infer<typeof BundleManifestSchema>;

export class BundleError extends Error {
  override readonly name = 'BundleError';
  readonly code = 'BAD_BUNDLE';
}

function signedMessage(manifest: Uint8Array): Uint8Array {
  return new TextEncoder().encode(`ferry-bundle-v1\n${Buffer.from(nativeBlake3(manifest)).toString('hex')}`);
}

/** Every object below `roots`, each once: directories children-first, then blobs. */
function objectsOf(store: Castore, roots: readonly Node[]): { directories: Digest[]; blobs: { id: Digest; size: number }[] } {
  const directories: Digest[] = [];
  const blobs = new Map<Digest, number>();
  const seen = new Set<string>();
  const visit = (node: Node): void => {
    if (node.type === 'file') blobs.set(node.digest, node.size);
    if (node.type !== 'directory' || seen.has(node.digest)) return;
    seen.add(node.digest);
    for (const entry of store.readDirectory(node.digest)) visit(entry);
    directories.push(node.digest);
  };
  for (const root of roots) visit(root);
  return { directories, blobs: [...blobs].map(([id, size]) => ({ id, size })) };
}

/** A bundle being written: its bytes, and what it holds (known before the first byte). */
export interface BundleStream {
  bytes: AsyncIterable<Uint8Array>;
  /** The exact length of `bytes` (for progress). */
  size: number;
  storePaths: number;
  directories: number;
  blobs: number;
}

/** Bytes a tar entry of `size` bytes takes: a 512-byte header, the data padded to 512. */
const tarEntryBytes = (size: number): number => 512 + Math.ceil(size / 512) * 512;
/** The two zero blocks that end a tar archive. */
const TAR_END_BYTES = 1024;

/**
 * Streams a signed bundle of `config` and the closure of its targets (all
 * systems, or the given ones). Refuses (STORE_PATH_NOT_FOUND) a closure the
 * store does not hold completely.
 */
export function writeBundle(store: Castore, signer: Identity, config: BundleManifest['config'], systems?: readonly string[]): BundleStream {
  const targets = Object.entries(config.targets).filter(([system]) => !systems || systems.includes(system));
  if (targets.length === 0) throw new BundleError(`config ${config.id} has no target for ${systems?.join(', ')}`);
  const storePaths = store.closure(targets.map(([, target]) => target)).map((storePath) => store.getStorePath(storePath)!);
  const manifest: BundleManifest = { format: 'ferry-bundle-v1', coordinatorKey: signer.keyId, createdAt: Date.now(), config, storePaths };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const signature = Buffer.from(Buffer.from(signer.sign(signedMessage(manifestBytes))).toString('base64'));
  const { directories, blobs } = objectsOf(store, storePaths.map((info) => info.root));
  // Read once: their sizes make the bundle's, and they are small (a few KiB each).
  const directoryBytes = directories.map((id) => [id, store.readDirectoryBytes(id)] as const);
  const pack = tar.pack();
  const addEntry = (name: string, size: number, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>) =>
    new Promise<void>((resolve, reject) => {
      const entry = pack.entry({ name, size, mtime: new Date(0), mode: 0o644 }, (error) => (error ? reject(error) : resolve()));
      void (async () => {
        try {
          for await (const chunk of chunks) if (!entry.write(chunk)) await new Promise<void>((drained) => entry.once('drain', () => drained()));
          entry.end(undefined); // streamx types require an argument
        } catch (error) {
          entry.destroy(error as Error);
          reject(error);
        }
      })();
    });
  void (async () => {
    try {
      await addEntry('ferry-bundle.json', manifestBytes.length, [manifestBytes]);
      await addEntry('ferry-bundle.sig', signature.length, [signature]);
      for (const [id, bytes] of directoryBytes) await addEntry(`directories/${id}`, bytes.length, [bytes]);
      for (const blob of blobs) await addEntry(`blobs/${blob.id}`, blob.size, blob.size === 0 ? [] : store.readBlob(blob.id));
      pack.finalize();
    } catch (error) {
      pack.destroy(error as Error);
    }
  })();
  const size =
    tarEntryBytes(manifestBytes.length) +
    tarEntryBytes(signature.length) +
    directoryBytes.reduce((sum, [, bytes]) => sum + tarEntryBytes(bytes.length), 0) +
    blobs.reduce((sum, blob) => sum + tarEntryBytes(blob.size), 0) +
    TAR_END_BYTES;
  // A streamx Readable: async-iterable bytes.
  return { bytes: pack as unknown as AsyncIterable<Uint8Array>, size, storePaths: storePaths.length, directories: directories.length, blobs: blobs.length };
}

async function readAll(entry: AsyncIterable<unknown>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const item of entry) {
    const chunk = item as Buffer;
    size += chunk.length;
    if (size > limit) throw new BundleError(`${what} is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Verifies a bundle against `coordinatorKey` and ingests its objects and
 * store paths into `store`, all or nothing. Refuses (BundleError,
 * CastoreError) a bad signature, a manifest of another coordinator, an
 * object that does not match its id, an unknown entry, or a store path
 * whose objects are incomplete.
 */
export async function readBundle(source: AsyncIterable<Uint8Array>, store: Castore, coordinatorKey: KeyId | string): Promise<BundleManifest> {
  const extract = tar.extract();
  void (async () => {
    try {
      for await (const chunk of source) if (!extract.write(chunk)) await new Promise<void>((drained) => extract.once('drain', () => drained()));
      extract.end(undefined);
    } catch (error) {
      extract.destroy(error as Error);
    }
  })();
  const session = store.beginIngest();
  try {
    let manifest: BundleManifest | undefined;
    let manifestBytes: Buffer | undefined;
    const directories = new Map<Digest, ReturnType<typeof decodeDirectory>>();
    const blobs = new Set<Digest>();
    for await (const entry of extract) {
      const name = entry.header.name;
      if (name === 'ferry-bundle.json') {
        manifestBytes = await readAll(entry, 64 * 1024 * 1024, 'the manifest');
        continue;
      }
      if (name === 'ferry-bundle.sig') {
        if (!manifestBytes) throw new BundleError('the signature comes before the manifest');
        const signature = Buffer.from((await readAll(entry, 256, 'the signature')).toString('utf8'), 'base64');
        if (!ed25519Verify(publicKeyOf(coordinatorKey as KeyId), signedMessage(manifestBytes), signature)) {
          throw new BundleError(`the bundle is not signed by coordinator ${coordinatorKey}`);
        }
        const parsed = BundleManifestSchema.safeParse(JSON.parse(manifestBytes.toString('utf8')));
        if (!parsed.success) throw new BundleError(`the manifest is malformed: ${parsed.error.issues[0]!.message}`);
        manifest = parsed.data;
        continue;
      }
      if (!manifest) throw new BundleError(`entry '${name}' comes before the signed manifest`);
      const match = /^(directories|blobs)\/([0-9a-f]{64})$/.exec(name);
      if (!match || !isDigest(match[2]!)) throw new BundleError(`unexpected entry '${name}' in the bundle`);
      const id = match[2] as Digest;
      if (match[1] === 'directories') {
        const bytes = await readAll(entry, 16 * 1024 * 1024, `directory ${id}`);
        if (directoryId(bytes) !== id) throw new CastoreError('DIRECTORY_NOT_CANONICAL', `bundle directory ${id} does not match its id`, { objectId: id });
        directories.set(id, decodeDirectory(bytes, id));
      } else {
        const writer = session.blobWriter(entry.header.size ?? 0);
        for await (const chunk of entry) writer.write(chunk as Buffer);
        const actual = writer.finish();
        if (actual !== id) throw new CastoreError('BLOB_CORRUPT', `bundle blob ${id} hashes to ${actual}`, { objectId: id });
        blobs.add(id);
      }
    }
    if (!manifest) throw new BundleError('the bundle has no signed manifest');
    const present = (node: Node): boolean => {
      if (node.type === 'symlink') return true;
      if (node.type === 'file') return blobs.has(node.digest) || store.hasBlob(node.digest);
      const entries = directories.get(node.digest) ?? (store.hasDirectory(node.digest) ? store.readDirectory(node.digest) : undefined);
      return entries !== undefined && entries.every(present);
    };
    for (const info of manifest.storePaths) {
      if (!present(info.root)) throw new BundleError(`the bundle lacks objects of ${info.storePath}`);
    }
    for (const entries of directories.values()) session.putDirectory(entries);
    for (const info of manifest.storePaths) if (!store.getStorePath(info.storePath)) session.registerStorePath(info as StorePathInfo);
    session.commit();
    return manifest;
  } catch (error) {
    session.abort();
    extract.destroy();
    throw error;
  }
}
