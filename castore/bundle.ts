/**
 * Bundles: a config and exactly the castore objects its closure needs, in
 * one tar file, for machines that never reach the coordinator. Layout:
 *
 *   ferry-bundle.json   manifest (BundleManifestSchema): who it is for, when
 *                       it was made and until when it may be applied, the
 *                       config, its store paths (StorePathInfo)
 *   ferry-bundle.sig    coordinator's ed25519 signature (base64) over
 *                       "ferry-bundle-v2\n" + BLAKE3 hex of the manifest bytes
 *   directories/<id>    directory encodings
 *   normalized/<N>      (v3) how to derive normalized blob N from a blob X
 *                       of the base's closure: X's id (32 bytes), then X's
 *                       template record (references/template-record.ts)
 *   blobs/<id>          blob bytes
 *   templates/<id>      (v3) blob <id> as a template: its normalized blob's
 *                       id N (32 bytes), then its template record
 *
 * The manifest is trusted only through the signature, and only as far as
 * its schema goes: every field is validated when read (a signature proves
 * who made a manifest, not that it is sane), and the config's id must be
 * the BLAKE3 of its body. Every object is trusted only through its BLAKE3
 * id. Reading ingests into one castore session that is committed only when
 * the signature, the reader's own acceptance of the manifest (its audience,
 * its expiry: see readBundle's `accept`), every object and the completeness
 * of every store path verified: a bad or refused bundle leaves nothing
 * behind, and a refused manifest is refused before any object is written.
 *
 * A bundle made with a `base` config (v3) carries only what the base's
 * closure lacks, for machines that run the base: a file of a rebuilt store
 * path that differs from one of the base only in the store paths it embeds
 * travels as its template over the base file's normalized blob (docs/
 * castore.md, "Reference-aware blobs"), a few bytes. The reader restores
 * it and checks its BLAKE3 before it is stored, as every other object.
 *
 * Format history: `ferry-bundle-v1` named no agent and never expired (any
 * agent of the coordinator applied any old bundle); v2 adds `audience`
 * and `expiresAt`; v3 adds `base` and the normalized/ and templates/
 * entries. Readers refuse v1 with BUNDLE_FORMAT_UNSUPPORTED and still apply
 * v2 (a bundle made before v3 stays valid until it expires).
 */
import { blake3 } from './blake3/index.js';
import tar from 'tar-stream';
import { z } from 'zod';
import { refineActivationEnvironment } from '../protocol/activation-environment.js';
import { AgentConfigSchema, ConfigIdSchema } from '../protocol/config.js';
import { jsonBoundsViolation, MAX_JSON_DEPTH } from '../protocol/json-bounds.js';
import { canonicalJsonBytes } from '../protocol/canonical-json.js';
import { ed25519Verify } from '../protocol/ed25519.js';
import { KeyIdSchema, publicKeyOf, type Identity, type KeyId } from '../protocol/identity.js';
import { StorePathInfoSchema, type StorePathInfo } from '../protocol/store-path-info.js';
import { decodeDirectory, directoryId } from './directory.js';
import { CastoreError } from './errors.js';
import { decodeTemplateRecord, placeholdersAt } from './references/index.js';
import { MAX_TEMPLATE_RECORD_BYTES } from '../protocol/data-protocol.js';
import { isDigest, type Digest, type Node } from './node.js';
import type { LocalCastore } from './local/local-castore.js';

/** The format this Ferry writes. */
export const BUNDLE_FORMAT = 'ferry-bundle-v3';
/** The formats this Ferry reads: v3, and v2 (the same without `base`, normalized/ and templates/). */
const READABLE_FORMATS = ['ferry-bundle-v2', BUNDLE_FORMAT] as const;
/** Longest validity of a bundle (its `expiresAt - createdAt`). */
export const MAX_BUNDLE_TTL_MS = 366 * 24 * 3600 * 1000;
/** Validity when the maker names none (`ferry bundle create --ttl`). */
export const DEFAULT_BUNDLE_TTL_MS = 30 * 24 * 3600 * 1000;
/** Most agents one bundle may name. */
export const MAX_BUNDLE_AGENTS = 10_000;
/** Most store paths in one bundle. */
export const MAX_BUNDLE_STORE_PATHS = 100_000;

/**
 * The config as agents receive it (protocol/config.ts AgentConfigSchema:
 * the same bounds as the coordinator's), with refused environment keys refused,
 * whose id must be the BLAKE3 of the canonical JSON of the rest: the config
 * an agent runs is exactly the one the coordinator recorded under that id.
 */
export const BundleConfigSchema = AgentConfigSchema.superRefine((config, context) => {
  refineActivationEnvironment(config.activation.environment, context, ['activation', 'environment']);
  const { id, signature: _signature, ...body } = config;
  const hashed = Buffer.from(blake3(canonicalJsonBytes(body))).toString('hex');
  if (hashed !== id) context.addIssue({ code: 'custom', path: ['id'], message: `the config's body hashes to ${hashed}, not to its id ${id}` });
});
export type BundleConfig = z.infer<typeof BundleConfigSchema>;

/**
 * Who a bundle is for: `agents` is the authoritative list (an agent whose
 * id is not in it refuses the bundle); `where` records the `--where`
 * clauses the list was resolved from when the bundle was made, for the
 * reader's information only (an agent that matches them later is not in
 * the list: make a new bundle).
 */
export const BundleAudienceSchema = z.strictObject({
  agents: z
    .array(KeyIdSchema)
    .min(1, 'a bundle names at least one agent')
    .max(MAX_BUNDLE_AGENTS)
    .refine((agents) => new Set(agents).size === agents.length, 'agents are listed once each'),
  where: z.array(z.string().min(1).max(512)).max(32),
});
export type BundleAudience = z.infer<typeof BundleAudienceSchema>;

export const BundleManifestSchema = z
  .strictObject({
    format: z.enum(READABLE_FORMATS),
    coordinatorKey: KeyIdSchema,
    /** Unix ms. */
    createdAt: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    /** Unix ms: agents refuse the bundle from then on. */
    expiresAt: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    audience: BundleAudienceSchema,
    config: BundleConfigSchema,
    /** (v3) The config whose closure the reader must hold: the bundle carries only what it lacks. */
    base: ConfigIdSchema.optional(),
    storePaths: z.array(StorePathInfoSchema).max(MAX_BUNDLE_STORE_PATHS),
  })
  .superRefine((manifest, context) => {
    if (manifest.base !== undefined && manifest.format !== BUNDLE_FORMAT) context.addIssue({ code: 'custom', path: ['base'], message: `a base needs format ${BUNDLE_FORMAT}` });
    if (manifest.base === manifest.config.id) context.addIssue({ code: 'custom', path: ['base'], message: 'a bundle cannot be based on its own config' });
    if (manifest.expiresAt <= manifest.createdAt) context.addIssue({ code: 'custom', path: ['expiresAt'], message: 'the bundle expires before it was made' });
    if (manifest.expiresAt - manifest.createdAt > MAX_BUNDLE_TTL_MS) {
      context.addIssue({ code: 'custom', path: ['expiresAt'], message: `the bundle is valid for more than ${MAX_BUNDLE_TTL_MS / 86_400_000} days` });
    }
    // Self-contained: the closure of every target it carries, each path once.
    const paths = new Set<string>();
    for (const info of manifest.storePaths) {
      if (paths.has(info.storePath)) context.addIssue({ code: 'custom', path: ['storePaths'], message: `${info.storePath} is listed twice` });
      paths.add(info.storePath);
    }
    for (const info of manifest.storePaths) {
      const missing = info.references.find((reference) => !paths.has(reference));
      if (missing) context.addIssue({ code: 'custom', path: ['storePaths'], message: `${info.storePath} references ${missing}, which the bundle lacks` });
    }
    if (!Object.values(manifest.config.targets).some((target) => paths.has(target))) {
      context.addIssue({ code: 'custom', path: ['storePaths'], message: 'the bundle holds no target of its config' });
    }
  });
export type BundleManifest = z.infer<typeof BundleManifestSchema>;

export type BundleErrorCode =
  /** Malformed, unsigned, signed by another key, incomplete, or with an unexpected entry. */
  | 'BAD_BUNDLE'
  /** A format this Ferry does not apply (ferry-bundle-v1, or a newer one). */
  | 'BUNDLE_FORMAT_UNSUPPORTED'
  /** The reading agent is not in the manifest's audience. */
  | 'BUNDLE_NOT_FOR_THIS_AGENT'
  /** Past the manifest's `expiresAt`. */
  | 'BUNDLE_EXPIRED'
  /** Its config is older (HLC) than the one the agent runs (agents apply it with --force). */
  | 'BUNDLE_CONFIG_OLDER';

export class BundleError extends Error {
  override readonly name = 'BundleError';
  constructor(
    readonly code: BundleErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function signedMessage(format: string, manifest: Uint8Array): Uint8Array {
  return new TextEncoder().encode(`${format}\n${Buffer.from(blake3(manifest)).toString('hex')}`);
}

/** Every object below `roots`, each once: directories children-first, then blobs. */
function objectsOf(store: LocalCastore, roots: readonly Node[]): { directories: Digest[]; blobs: { id: Digest; size: number }[] } {
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
  /** Blobs carried whole. */
  blobs: number;
  /** Blobs carried as templates over the base's normalized blobs (a base only). */
  templates: number;
  /** Unix ms after which agents refuse it. */
  expiresAt: number;
  /** The agents it is for. */
  agents: readonly KeyId[];
}

/** Bytes a tar entry of `size` bytes takes: a 512-byte header, the data padded to 512. */
const tarEntryBytes = (size: number): number => 512 + Math.ceil(size / 512) * 512;
/** The two zero blocks that end a tar archive. */
const TAR_END_BYTES = 1024;

/** Who a bundle is for and how long it may be applied: the maker's part of a manifest. */
export interface BundleOptions {
  audience: BundleAudience;
  /** How long agents may apply it (default DEFAULT_BUNDLE_TTL_MS, at most MAX_BUNDLE_TTL_MS). */
  ttlMs?: number;
  /** Only the targets of these systems (default: every target). */
  systems?: readonly string[];
  /** The creation time (default: now). */
  now?: number;
  /**
   * A config the agents run: the bundle then carries only what its
   * closure (for the same systems) lacks, and rebuilt files as templates
   * over its files' normalized blobs where the store keeps them so.
   */
  base?: BundleConfig;
}

/** What a bundle based on another config's closure leaves out, and what it can restore from. */
interface BaseClosure {
  directories: Set<Digest>;
  blobs: Set<Digest>;
  /** Normalized blob -> a blob of the base kept as a template over it (and that template's record). */
  derivable: Map<Digest, { from: Digest; record: Uint8Array }>;
}

function baseClosure(store: LocalCastore, base: BundleConfig, systems: readonly string[] | undefined): BaseClosure {
  const targets = Object.entries(base.targets).filter(([system]) => !systems || systems.includes(system));
  if (targets.length === 0) throw new BundleError('BAD_BUNDLE', `base config ${base.id} has no target for ${systems?.join(', ')}`);
  const infos = store.closure(targets.map(([, target]) => target)).map((storePath) => store.getStorePath(storePath)!);
  const { directories, blobs } = objectsOf(store, infos.map((info) => info.root));
  const derivable = new Map<Digest, { from: Digest; record: Uint8Array }>();
  for (const { id } of blobs) {
    const template = store.templateOf(id);
    if (template && !derivable.has(template.normalized)) derivable.set(template.normalized, { from: id, record: template.record });
  }
  return { directories: new Set(directories), blobs: new Set(blobs.map((blob) => blob.id)), derivable };
}

/** A normalized/ or templates/ entry's bytes: a digest, then a template record. */
const digestThenRecord = (digest: Digest, record: Uint8Array): Buffer => Buffer.concat([Buffer.from(digest, 'hex'), record]);

/**
 * Streams a signed bundle of `config` and the closure of its targets (all
 * systems, or `options.systems`), for `options.audience`, valid from now
 * for `options.ttlMs`; with `options.base`, only the objects the base's
 * closure lacks (see the header). The manifest is checked against the schema every
 * reader applies before anything is signed: refuses (BAD_BUNDLE, naming
 * the field) a config, audience or validity that readers would refuse, a
 * config without a target for the systems asked for, and
 * (STORE_PATH_NOT_FOUND) a closure the store does not hold completely.
 */
export function writeBundle(store: LocalCastore, signer: Identity, config: BundleConfig, options: BundleOptions): BundleStream {
  const systems = options.systems;
  const targets = Object.entries(config.targets).filter(([system]) => !systems || systems.includes(system));
  if (targets.length === 0) throw new BundleError('BAD_BUNDLE', `config ${config.id} has no target for ${systems?.join(', ')}`);
  const storePaths = store.closure(targets.map(([, target]) => target)).map((storePath) => store.getStorePath(storePath)!);
  const createdAt = options.now ?? Date.now();
  const parsed = BundleManifestSchema.safeParse({
    format: BUNDLE_FORMAT,
    coordinatorKey: signer.keyId,
    createdAt,
    expiresAt: createdAt + (options.ttlMs ?? DEFAULT_BUNDLE_TTL_MS),
    audience: options.audience,
    config,
    ...(options.base ? { base: options.base.id } : {}),
    storePaths,
  });
  if (!parsed.success) throw manifestError(parsed.error);
  const manifestBytes = Buffer.from(JSON.stringify(parsed.data));
  const signature = Buffer.from(Buffer.from(signer.sign(signedMessage(BUNDLE_FORMAT, manifestBytes))).toString('base64'));
  const closure = objectsOf(store, storePaths.map((info) => info.root));
  const base = options.base ? baseClosure(store, options.base, systems) : undefined;
  const directories = base ? closure.directories.filter((id) => !base.directories.has(id)) : closure.directories;
  // Read once: their sizes make the bundle's, and they are small (a few KiB each).
  const directoryBytes = directories.map((id) => [id, store.readDirectoryBytes(id)] as const);
  const blobs: { id: Digest; size: number }[] = [];
  const templates: (readonly [Digest, Buffer])[] = [];
  const derivations = new Map<Digest, Buffer>();
  for (const blob of closure.blobs) {
    if (base?.blobs.has(blob.id)) continue;
    const template = base && store.templateOf(blob.id);
    const over = template && (base.blobs.has(template.normalized) ? 'held' : base.derivable.get(template.normalized));
    if (!template || !over) {
      blobs.push(blob);
      continue;
    }
    templates.push([blob.id, digestThenRecord(template.normalized, template.record)]);
    if (over !== 'held' && !derivations.has(template.normalized)) derivations.set(template.normalized, digestThenRecord(over.from, over.record));
  }
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
      for (const [id, bytes] of derivations) await addEntry(`normalized/${id}`, bytes.length, [bytes]);
      for (const blob of blobs) await addEntry(`blobs/${blob.id}`, blob.size, blob.size === 0 ? [] : store.readBlob(blob.id));
      // Last: a reader restores each over a normalized blob it holds or was just given.
      for (const [id, bytes] of templates) await addEntry(`templates/${id}`, bytes.length, [bytes]);
      pack.finalize();
    } catch (error) {
      pack.destroy(error as Error);
    }
  })();
  const size =
    tarEntryBytes(manifestBytes.length) +
    tarEntryBytes(signature.length) +
    directoryBytes.reduce((sum, [, bytes]) => sum + tarEntryBytes(bytes.length), 0) +
    [...derivations.values(), ...templates.map(([, bytes]) => bytes)].reduce((sum, bytes) => sum + tarEntryBytes(bytes.length), 0) +
    blobs.reduce((sum, blob) => sum + tarEntryBytes(blob.size), 0) +
    TAR_END_BYTES;
  // A streamx Readable: async-iterable bytes.
  return {
    bytes: pack as unknown as AsyncIterable<Uint8Array>,
    size,
    storePaths: storePaths.length,
    directories: directories.length,
    blobs: blobs.length,
    templates: templates.length,
    expiresAt: parsed.data.expiresAt,
    agents: parsed.data.audience.agents,
  };
}

async function readAll(entry: AsyncIterable<unknown>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const item of entry) {
    const chunk = item as Buffer;
    size += chunk.length;
    if (size > limit) throw new BundleError('BAD_BUNDLE', `${what} is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** A manifest's first schema issue as a BundleError naming the field. */
function manifestError(error: z.ZodError): BundleError {
  const issue = error.issues[0]!;
  return new BundleError('BAD_BUNDLE', `the manifest is invalid: ${issue.path.join('.') || 'manifest'}: ${issue.message}`);
}

/**
 * The signed manifest, validated: refuses (BUNDLE_FORMAT_UNSUPPORTED) a
 * manifest of another format, naming it — ferry-bundle-v1 with how to make
 * a new one —, (BAD_BUNDLE) a signature that is not `coordinatorKey`'s, a
 * manifest that is not JSON, fails the schema or names another coordinator.
 */
function verifiedManifest(manifestBytes: Buffer, signatureText: Buffer, coordinatorKey: KeyId | string): BundleManifest {
  let json: unknown;
  try {
    json = JSON.parse(manifestBytes.toString('utf8'));
  } catch {
    throw new BundleError('BAD_BUNDLE', 'the manifest is not JSON');
  }
  // Bounded before anything walks it (the format check below encodes a value of it).
  const tooDeep = jsonBoundsViolation(json, { maxDepth: MAX_JSON_DEPTH });
  if (tooDeep) throw new BundleError('BAD_BUNDLE', `the manifest ${tooDeep.message}`);
  // Read before the signature is checked: an unsigned claim can only make this reader refuse.
  const format = json !== null && typeof json === 'object' && 'format' in json ? (json as { format: unknown }).format : undefined;
  if (format === 'ferry-bundle-v1') {
    throw new BundleError(
      'BUNDLE_FORMAT_UNSUPPORTED',
      `this is a ferry-bundle-v1 bundle: v1 bundles name no agent and never expire, and this agent applies only ${READABLE_FORMATS.join(' and ')}; ` +
        'make a new one on the coordinator host with ferry bundle create CONFIG --agents ID… (or --where K=V)',
    );
  }
  if (!READABLE_FORMATS.includes(format as (typeof READABLE_FORMATS)[number])) {
    throw new BundleError('BUNDLE_FORMAT_UNSUPPORTED', `the bundle's format is ${JSON.stringify(format)?.slice(0, 64) ?? 'missing'}; this agent applies ${READABLE_FORMATS.join(' and ')}`);
  }
  const signature = Buffer.from(signatureText.toString('utf8'), 'base64');
  if (!ed25519Verify(publicKeyOf(coordinatorKey as KeyId), signedMessage(format as string, manifestBytes), signature)) {
    throw new BundleError('BAD_BUNDLE', `the bundle is not signed by coordinator ${coordinatorKey}`);
  }
  const parsed = BundleManifestSchema.safeParse(json);
  if (!parsed.success) throw manifestError(parsed.error);
  if (parsed.data.coordinatorKey !== coordinatorKey) {
    throw new BundleError('BAD_BUNDLE', `the manifest names coordinator ${parsed.data.coordinatorKey}, but it is signed by ${coordinatorKey}`);
  }
  return parsed.data;
}

/** Why a reader that lacks what a based bundle left out cannot apply it, and what to do. */
const lacksBase = (base: string | undefined): string =>
  `the bundle carries only what the closure of config ${base} lacks, and this machine does not hold all of that closure; ` +
  `apply a bundle of ${base} first, or make a full one (ferry bundle create without --base)`;

type BundleIngest = ReturnType<LocalCastore['beginIngest']>;

/**
 * A normalized/<N> entry: N derived from blob `from` (of the base, which
 * the store must hold) with the placeholder written at `record`'s sites,
 * staged once its BLAKE3 is N; returns N's size. `from` is read as a
 * stream, so any size derives in bounded memory. Nothing is staged when N
 * is already here (a machine that fetched the base keeps it derivable
 * itself). Refuses (BundleError) a missing `from`, (CastoreError) a record
 * that does not fit `from` and bytes that are not N (nothing staged).
 */
async function deriveNormalized(store: LocalCastore, session: BundleIngest, id: Digest, from: Digest, record: Uint8Array, base: string | undefined): Promise<number> {
  const held = store.statBlob(id)?.size;
  if (held !== undefined) return held;
  const size = store.statBlob(from)?.size;
  if (size === undefined) throw new BundleError('BAD_BUNDLE', `normalized blob ${id} derives from blob ${from}, which is not here: ${lacksBase(base)}`);
  const { sites } = decodeTemplateRecord(record, size);
  const writer = session.blobWriter(size, id);
  try {
    let offset = 0;
    for await (const chunk of store.readBlob(from)) {
      writer.write(placeholdersAt(chunk, sites, offset));
      offset += chunk.length;
    }
    writer.finish();
  } catch (error) {
    writer.discard();
    throw error;
  }
  return size;
}

export interface ReadBundleOptions {
  /**
   * Called with the verified, validated manifest before any object of the
   * bundle is read or written: throwing refuses the bundle with nothing
   * stored (an agent refuses a bundle not made for it, or expired, here).
   */
  accept?: (manifest: BundleManifest) => void;
}

/**
 * Verifies a bundle against `coordinatorKey` and ingests its objects and
 * store paths into `store`, all or nothing. Refuses (BundleError,
 * CastoreError) another format than ferry-bundle-v2 (v1 included), a bad
 * signature, a manifest of another coordinator, a manifest field that
 * fails BundleManifestSchema, whatever `options.accept` refuses, an object
 * that does not match its id, an unknown entry, or a store path whose
 * objects are incomplete. On a refusal the store is as it was.
 */
export async function readBundle(source: AsyncIterable<Uint8Array>, store: LocalCastore, coordinatorKey: KeyId | string, options: ReadBundleOptions = {}): Promise<BundleManifest> {
  const extract = tar.extract();
  void (async () => {
    try {
      for await (const chunk of source) if (!extract.write(chunk)) await new Promise<void>((drained) => extract.once('drain', () => drained()));
      extract.end(undefined);
    } catch (error) {
      extract.destroy(error as Error);
    }
  })();
  let session: ReturnType<LocalCastore['beginIngest']> | undefined;
  try {
    let manifest: BundleManifest | undefined;
    let manifestBytes: Buffer | undefined;
    const directories = new Map<Digest, ReturnType<typeof decodeDirectory>>();
    const blobs = new Set<Digest>();
    /** Normalized blobs derived from the base by normalized/ entries, and their sizes. */
    const derived = new Map<Digest, number>();
    for await (const entry of extract) {
      const name = entry.header.name;
      if (name === 'ferry-bundle.json') {
        if (manifestBytes) throw new BundleError('BAD_BUNDLE', 'the bundle has two manifests');
        manifestBytes = await readAll(entry, 64 * 1024 * 1024, 'the manifest');
        continue;
      }
      if (name === 'ferry-bundle.sig') {
        if (!manifestBytes) throw new BundleError('BAD_BUNDLE', 'the signature comes before the manifest');
        if (manifest) throw new BundleError('BAD_BUNDLE', 'the bundle has two signatures');
        manifest = verifiedManifest(manifestBytes, await readAll(entry, 256, 'the signature'), coordinatorKey);
        options.accept?.(manifest);
        // Only now is anything written: a refused manifest leaves not even a temp file.
        session = store.beginIngest();
        continue;
      }
      if (!manifest || !session) throw new BundleError('BAD_BUNDLE', `entry '${name}' comes before the signed manifest`);
      const match = (manifest.format === BUNDLE_FORMAT ? /^(directories|blobs|normalized|templates)\/([0-9a-f]{64})$/ : /^(directories|blobs)\/([0-9a-f]{64})$/).exec(name);
      if (!match || !isDigest(match[2]!)) throw new BundleError('BAD_BUNDLE', `unexpected entry '${name}' in the bundle`);
      const id = match[2] as Digest;
      if (match[1] === 'normalized' || match[1] === 'templates') {
        const bytes = await readAll(entry, 32 + MAX_TEMPLATE_RECORD_BYTES, `entry ${name}`);
        if (bytes.length <= 32) throw new BundleError('BAD_BUNDLE', `entry ${name} is too short for a digest and a template record`);
        const digest = bytes.subarray(0, 32).toString('hex') as Digest;
        const record = new Uint8Array(bytes.subarray(32));
        if (match[1] === 'normalized') {
          derived.set(id, await deriveNormalized(store, session, id, digest, record, manifest.base));
        } else {
          // Restored over N (here, or derived above) and checked against its id: putTemplate refuses N's absence.
          const size = derived.get(digest) ?? store.statBlob(digest)?.size;
          if (size === undefined) throw new BundleError('BAD_BUNDLE', `blob ${id} is a template over ${digest}, which is not here: ${lacksBase(manifest.base)}`);
          await session.putTemplate(id, size, digest, record);
        }
        blobs.add(id);
        continue;
      }
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
    if (!manifest || !session) throw new BundleError('BAD_BUNDLE', 'the bundle has no signed manifest');
    const present = (node: Node): boolean => {
      if (node.type === 'symlink') return true;
      if (node.type === 'file') return blobs.has(node.digest) || store.hasBlob(node.digest);
      const entries = directories.get(node.digest) ?? (store.hasDirectory(node.digest) ? store.readDirectory(node.digest) : undefined);
      return entries !== undefined && entries.every(present);
    };
    for (const info of manifest.storePaths) {
      if (present(info.root)) continue;
      if (manifest.base) throw new BundleError('BAD_BUNDLE', `objects of ${info.storePath} are neither in the bundle nor here: ${lacksBase(manifest.base)}`);
      throw new BundleError('BAD_BUNDLE', `the bundle lacks objects of ${info.storePath}`);
    }
    for (const entries of directories.values()) session.putDirectory(entries);
    for (const info of manifest.storePaths) if (!store.getStorePath(info.storePath)) session.registerStorePath(info as StorePathInfo);
    session.commit();
    return manifest;
  } catch (error) {
    session?.abort();
    extract.destroy();
    throw error;
  }
}
