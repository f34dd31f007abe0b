/**
 * Bundles: a config and exactly the castore objects its closure needs, in
 * one tar file, for machines that never reach the coordinator. Layout:
 *
 *   ferry-bundle.json   manifest (BundleManifestSchema): who it is for, when
 *                       it was made and until when it may be applied, the
 *                       config, its store paths (StorePathInfo), and the
 *                       ciphertexts of the secrets the config references
 *   ferry-bundle.sig    coordinator's ed25519 signature (base64) over
 *                       "ferry-bundle-v2\n" + BLAKE3 hex of the manifest bytes
 *   directories/<id>    directory encodings
 *   normalized/<N>      (v3) how to derive normalized blob N from a blob X
 *                       of the base's closure: X's id (32 bytes), then X's
 *                       template record (references/template-record.ts)
 *   blobs/<id>          blob bytes
 *   deltas/<N>          (v4) normalized blob N as the 16 KiB groups that
 *                       differ from a normalized blob of the base (the
 *                       encoding is at encodeGroupDelta)
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
 * A rebuilt file that also changed a little travels as its template over
 * its own normalized blob, and that normalized blob as the groups that
 * differ from the normalized blob of the same file in the base (v4).
 *
 * Format history: `ferry-bundle-v1` named no agent and never expired (any
 * agent of the coordinator applied any old bundle); v2 adds `audience`
 * and `expiresAt`; v3 adds `base` and the normalized/ and templates/
 * entries; v4 adds deltas/ entries, and is written only by a bundle that
 * has one (a v3 reader then refuses it by its format, naming it; every
 * other bundle stays v3). Readers refuse v1 with BUNDLE_FORMAT_UNSUPPORTED
 * and still apply v2 and v3 (a bundle made before stays valid until it
 * expires).
 */
import { blake3, groupCount, GROUP_SIZE, verifyOutboard } from './blake3/index.js';
import tar from 'tar-stream';
import { z } from 'zod';
import { refineActivationEnvironment } from '../protocol/activation-environment.js';
import { AgentConfigSchema, ConfigIdSchema } from '../protocol/config.js';
import { jsonBoundsViolation, MAX_JSON_DEPTH } from '../protocol/json-bounds.js';
import { canonicalJsonBytes } from '../protocol/canonical-json.js';
import { ed25519Verify } from '../protocol/ed25519.js';
import { KeyIdSchema, publicKeyOf, type Identity, type KeyId } from '../protocol/identity.js';
import { StorePathInfoSchema, type StorePathInfo } from '../protocol/store-path-info.js';
import { CiphertextSchema, MAX_CONFIG_SECRETS, MAX_SECRET_RECIPIENTS, SecretNameSchema } from '../protocol/secret-refs.js';
import { decodeDirectory, directoryId } from './directory.js';
import { CastoreError } from './errors.js';
import { decodeTemplateRecord, placeholdersAt } from './references/index.js';
import { MAX_TEMPLATE_RECORD_BYTES } from '../protocol/data-protocol.js';
import { digestToBytes, isDigest, type Digest, type FileNode, type Node } from './node.js';
import { basisChainingValues, checkRuns, cvsToBytes, differingRuns, findDeltaBases, type DeltaBasisStore } from './transfer/group-delta.js';
import type { LocalCastore } from './local/local-castore.js';

/** The newest format this Ferry writes: a bundle with deltas/ entries; others are written as BUNDLE_FORMAT_V3. */
export const BUNDLE_FORMAT = 'ferry-bundle-v4';
/** v4 without deltas/ entries: what a bundle without them is written as, so Ferry from before v4 applies it. */
export const BUNDLE_FORMAT_V3 = 'ferry-bundle-v3';
/** The formats this Ferry reads: v4, v3 (without deltas/), and v2 (without `base`, normalized/ and templates/ too). */
const READABLE_FORMATS = ['ferry-bundle-v2', BUNDLE_FORMAT_V3, BUNDLE_FORMAT] as const;
const READABLE_LIST = `${READABLE_FORMATS.slice(0, -1).join(', ')} and ${READABLE_FORMATS.at(-1)}`;
/** How an entry's name may start, by format. */
const ENTRY_KINDS: Record<(typeof READABLE_FORMATS)[number], readonly string[]> = {
  'ferry-bundle-v2': ['directories', 'blobs'],
  'ferry-bundle-v3': ['directories', 'blobs', 'normalized', 'templates'],
  'ferry-bundle-v4': ['directories', 'blobs', 'normalized', 'deltas', 'templates'],
};
/** Most bytes of groups one deltas/ entry carries (a file that changed more travels whole). */
export const MAX_BUNDLE_DELTA_BYTES = 64 * 1024 * 1024;
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

/**
 * A secret the bundle's config references, as `ferry bundle create` found
 * it on the coordinator: its latest version's ciphertext (already
 * encrypted to its recipients; docs/secrets.md) and who those are, so an
 * agent that is not one fails naming the secret, as it would online.
 * Signed with the rest of the manifest.
 */
export const BundledSecretSchema = z.strictObject({
  name: SecretNameSchema,
  version: z.number().int().min(1),
  recipients: z.array(KeyIdSchema).max(MAX_SECRET_RECIPIENTS),
  ciphertext: CiphertextSchema.min(1),
});
export type BundledSecret = z.infer<typeof BundledSecretSchema>;

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
    /** The ciphertexts of the secrets the config references (absent: it references none, or a bundle from before secrets travelled). */
    secrets: z.array(BundledSecretSchema).max(MAX_CONFIG_SECRETS).optional(),
  })
  .superRefine((manifest, context) => {
    // Only the config's own secrets, each once: a bundle carries nothing else encrypted.
    const referenced = new Set((manifest.config.secrets ?? []).map((ref) => ref.name));
    const carried = new Set<string>();
    for (const secret of manifest.secrets ?? []) {
      if (!referenced.has(secret.name)) context.addIssue({ code: 'custom', path: ['secrets'], message: `secret '${secret.name}' is not referenced by the config` });
      if (carried.has(secret.name)) context.addIssue({ code: 'custom', path: ['secrets'], message: `secret '${secret.name}' is carried twice` });
      carried.add(secret.name);
    }
    if (manifest.base !== undefined && manifest.format === 'ferry-bundle-v2') context.addIssue({ code: 'custom', path: ['base'], message: `a base needs format ${BUNDLE_FORMAT_V3} or later` });
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
  /** Blobs carried as templates over the base's normalized blobs, or over ones carried as deltas (a base only). */
  templates: number;
  /** Normalized blobs carried as the groups that differ from the base's (deltas/ entries), */
  deltas: number;
  /** and the bytes of those groups. */
  deltaGroupBytes: number;
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
  /** The ciphertexts of the secrets the config references (BundledSecretSchema). */
  secrets?: readonly BundledSecret[];
}

/** What a bundle based on another config's closure leaves out, and what it can restore from. */
interface BaseClosure {
  storePaths: StorePathInfo[];
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
  return { storePaths: infos, directories: new Set(directories), blobs: new Set(blobs.map((blob) => blob.id)), derivable };
}

/** A deltas/ entry to write: normalized blob `target` as the groups of `runs` over normalized blob `basis` of the base. */
interface BundleDelta {
  target: { id: Digest; size: number };
  basis: Digest;
  runs: [number, number][];
  /** Bytes of the groups of `runs`. */
  groupBytes: number;
}

/**
 * For rebuilt files kept as templates over a normalized blob the base
 * neither holds nor can derive: the group deltas of those normalized blobs
 * against the normalized blob of the same file in the base (the basis
 * group-delta.ts picks: the same path in a store path of the same name),
 * where the base keeps that file as a template, keyed by the rebuilt
 * file's id. Only deltas that leave out at least one group, and carry at
 * most MAX_BUNDLE_DELTA_BYTES of groups: the others travel whole.
 */
function normalizedDeltas(store: LocalCastore, base: BaseClosure, lacking: readonly StorePathInfo[], candidates: ReadonlyMap<Digest, FileNode>): Map<Digest, BundleDelta> {
  const deltas = new Map<Digest, BundleDelta>();
  if (candidates.size === 0) return deltas;
  // Bases are searched in the base's closure only: what the reader holds.
  const view: DeltaBasisStore = {
    listStorePaths: () => base.storePaths,
    hasBlob: (id) => base.blobs.has(id),
    hasDirectory: (id) => base.directories.has(id),
    readDirectory: (id) => store.readDirectory(id),
    readBlob: (id, range) => store.readBlob(id, range),
    readOutboard: (id) => store.readOutboard(id),
    readBlobRangeSync: (id, offset, length) => store.readBlobRangeSync(id, offset, length),
  };
  for (const { target, basis } of findDeltaBases(view, lacking, (id) => store.readDirectory(id), candidates)) {
    const template = store.templateOf(target.digest)!;
    const basisTemplate = store.templateOf(basis.digest);
    if (!basisTemplate || basisTemplate.normalized === template.normalized) continue;
    const over = basisTemplate.normalized;
    if (!(base.blobs.has(over) || base.derivable.has(over)) || !store.hasBlob(over) || !store.hasBlob(template.normalized)) continue;
    const wanted = { type: 'file', digest: template.normalized, size: target.size, executable: false } as const;
    const cvs = basisChainingValues(store, { target: wanted, basis: { type: 'file', digest: over, size: basis.size, executable: false } });
    const tree = verifyOutboard(digestToBytes(wanted.digest), wanted.size, store.readOutboard(wanted.digest), wanted.digest);
    const runs = differingRuns(groupCount(wanted.size), cvsToBytes(cvs), (index) => tree.groupCv(index));
    const groupBytes = runs.reduce((sum, [first, count]) => sum + Math.min(wanted.size, (first + count) * GROUP_SIZE) - first * GROUP_SIZE, 0);
    if (runs.length === 0 || groupBytes >= wanted.size || groupBytes > MAX_BUNDLE_DELTA_BYTES) continue;
    deltas.set(target.digest, { target: { id: wanted.digest, size: wanted.size }, basis: over, runs, groupBytes });
  }
  return deltas;
}

/** Bytes of a deltas/ entry before its groups (see encodeGroupDelta). */
const deltaHeaderBytes = (runs: number): number => 1 + 32 + 8 + 4 + 8 * runs;
/** The version byte of a deltas/ entry this Ferry writes and reads. */
const GROUP_DELTA_ENTRY_VERSION = 1;

/**
 * A deltas/<N> entry's header (the groups' bytes follow it, in run order):
 *
 *   u8      version = 1
 *   32      the basis: a normalized blob of the base (held by the reader, or
 *           derived by a normalized/ entry before this one)
 *   u64 LE  N's size
 *   u32 LE  run count r (1 ≤ r)
 *   r × (u32 LE first group, u32 LE group count), ascending, apart, inside N
 *
 * A group not in a run is the basis's bytes at the same offset.
 */
function encodeGroupDelta(delta: BundleDelta): Buffer {
  const header = Buffer.alloc(deltaHeaderBytes(delta.runs.length));
  header.writeUInt8(GROUP_DELTA_ENTRY_VERSION, 0);
  Buffer.from(delta.basis, 'hex').copy(header, 1);
  header.writeBigUInt64LE(BigInt(delta.target.size), 33);
  header.writeUInt32LE(delta.runs.length, 41);
  delta.runs.forEach(([first, count], index) => {
    header.writeUInt32LE(first, 45 + index * 8);
    header.writeUInt32LE(count, 49 + index * 8);
  });
  return header;
}

/** A normalized/ or templates/ entry's bytes: a digest, then a template record. */
const digestThenRecord = (digest: Digest, record: Uint8Array): Buffer => Buffer.concat([Buffer.from(digest, 'hex'), record]);

/** A deltas/ entry's bytes: its header, then its groups read from the store. */
async function* deltaEntryChunks(store: LocalCastore, delta: BundleDelta): AsyncGenerator<Uint8Array> {
  yield encodeGroupDelta(delta);
  for (const [first, count] of delta.runs) {
    const offset = first * GROUP_SIZE;
    yield* store.readBlob(delta.target.id, { offset, length: Math.min(delta.target.size, (first + count) * GROUP_SIZE) - offset });
  }
}

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
    ...(options.secrets && options.secrets.length > 0 ? { secrets: options.secrets } : {}),
  });
  if (!parsed.success) throw manifestError(parsed.error);
  const closure = objectsOf(store, storePaths.map((info) => info.root));
  const base = options.base ? baseClosure(store, options.base, systems) : undefined;
  const directories = base ? closure.directories.filter((id) => !base.directories.has(id)) : closure.directories;
  // Read once: their sizes make the bundle's, and they are small (a few KiB each).
  const directoryBytes = directories.map((id) => [id, store.readDirectoryBytes(id)] as const);
  const blobs: { id: Digest; size: number }[] = [];
  const templates: (readonly [Digest, Buffer])[] = [];
  const derivations = new Map<Digest, Buffer>();
  const derive = (normalized: Digest): void => {
    const over = base?.derivable.get(normalized);
    if (over && !base!.blobs.has(normalized) && !derivations.has(normalized)) derivations.set(normalized, digestThenRecord(over.from, over.record));
  };
  /** Rebuilt files whose normalized blob the base neither holds nor derives: deltas/ entries may carry those. */
  const unmatched = new Map<Digest, FileNode>();
  for (const blob of closure.blobs) {
    if (base?.blobs.has(blob.id)) continue;
    const template = base && store.templateOf(blob.id);
    if (!template) {
      blobs.push(blob);
      continue;
    }
    if (!base.blobs.has(template.normalized) && !base.derivable.has(template.normalized)) {
      unmatched.set(blob.id, { type: 'file', digest: blob.id, size: blob.size, executable: false });
      continue;
    }
    templates.push([blob.id, digestThenRecord(template.normalized, template.record)]);
    derive(template.normalized);
  }
  const basePaths = new Set(base?.storePaths.map((info) => info.storePath));
  const byFile = base ? normalizedDeltas(store, base, storePaths.filter((info) => !basePaths.has(info.storePath)), unmatched) : new Map<Digest, BundleDelta>();
  const deltas = new Map<Digest, BundleDelta>();
  for (const blob of unmatched.values()) {
    const delta = byFile.get(blob.digest);
    if (!delta) {
      blobs.push({ id: blob.digest, size: blob.size });
      continue;
    }
    const template = store.templateOf(blob.digest)!;
    templates.push([blob.digest, digestThenRecord(template.normalized, template.record)]);
    if (!deltas.has(delta.target.id)) deltas.set(delta.target.id, delta);
    derive(delta.basis);
  }
  const format = deltas.size > 0 ? BUNDLE_FORMAT : BUNDLE_FORMAT_V3;
  const manifest = { ...parsed.data, format };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const signature = Buffer.from(Buffer.from(signer.sign(signedMessage(format, manifestBytes))).toString('base64'));
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
      // After normalized/ (a basis may be derived), before templates/ (restored over these).
      for (const delta of deltas.values()) await addEntry(`deltas/${delta.target.id}`, deltaHeaderBytes(delta.runs.length) + delta.groupBytes, deltaEntryChunks(store, delta));
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
    [...deltas.values()].reduce((sum, delta) => sum + tarEntryBytes(deltaHeaderBytes(delta.runs.length) + delta.groupBytes), 0) +
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
    deltas: deltas.size,
    deltaGroupBytes: [...deltas.values()].reduce((sum, delta) => sum + delta.groupBytes, 0),
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
      `this is a ferry-bundle-v1 bundle: v1 bundles name no agent and never expire, and this agent applies only ${READABLE_LIST}; ` +
        'make a new one on the coordinator host with ferry bundle create CONFIG --agents ID… (or --where K=V)',
    );
  }
  if (!READABLE_FORMATS.includes(format as (typeof READABLE_FORMATS)[number])) {
    throw new BundleError('BUNDLE_FORMAT_UNSUPPORTED', `the bundle's format is ${JSON.stringify(format)?.slice(0, 64) ?? 'missing'}; this agent applies ${READABLE_LIST}`);
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
  const writer = session.blobWriter(size, id);
  try {
    for await (const chunk of derivedChunks(store, from, size, record)) writer.write(chunk);
    writer.finish();
  } catch (error) {
    writer.discard();
    throw error;
  }
  return size;
}

/** Blob `from` (of `size` bytes) with the placeholder written at `record`'s sites, as a stream; refuses (CastoreError) a record that does not fit it. */
async function* derivedChunks(store: LocalCastore, from: Digest, size: number, record: Uint8Array): AsyncGenerator<Uint8Array> {
  const { sites } = decodeTemplateRecord(record, size);
  let offset = 0;
  for await (const chunk of store.readBlob(from)) {
    yield placeholdersAt(chunk, sites, offset);
    offset += chunk.length;
  }
}

/** Most runs one deltas/ entry may name (a run is at least one 16 KiB group of MAX_BUNDLE_DELTA_BYTES). */
const MAX_BUNDLE_DELTA_RUNS = MAX_BUNDLE_DELTA_BYTES / GROUP_SIZE;

/** Reads a stream `length` bytes at a time: fewer only at its end. */
class ChunkCursor {
  private pending: Uint8Array = new Uint8Array(0);
  private readonly iterator: AsyncIterator<Uint8Array>;
  private done = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  async read(length: number): Promise<Uint8Array> {
    while (this.pending.length < length && !this.done) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
      else this.pending = this.pending.length === 0 ? next.value : Buffer.concat([this.pending, next.value]);
    }
    const out = this.pending.subarray(0, Math.min(length, this.pending.length));
    this.pending = this.pending.subarray(out.length);
    return out;
  }

  async close(): Promise<void> {
    if (!this.done) await this.iterator.return?.();
  }
}

/**
 * A deltas/<id> entry (encodeGroupDelta): normalized blob `id` built from
 * the groups it carries and, for the others, the bytes at the same offset
 * of its basis — held here, or derived by a normalized/ entry of this
 * bundle (`derivations`: read again from its file) — staged once its
 * BLAKE3 is `id`; returns its size. Nothing is staged when `id` is already
 * here. Refuses (BundleError) an entry that does not parse (an unknown
 * version, runs out of order or outside the blob, a length other than its
 * runs say), a basis that is not here, one that ends before a group it
 * should give, and (CastoreError BLOB_CORRUPT) bytes that are not `id`.
 */
async function applyGroupDelta(
  store: LocalCastore,
  session: BundleIngest,
  id: Digest,
  entry: Buffer,
  derivations: ReadonlyMap<Digest, { from: Digest; record: Uint8Array }>,
  base: string | undefined,
): Promise<number> {
  const bad = (why: string) => new BundleError('BAD_BUNDLE', `entry deltas/${id} ${why}`);
  if (entry.length < deltaHeaderBytes(0)) throw bad('is too short for its header');
  if (entry.readUInt8(0) !== GROUP_DELTA_ENTRY_VERSION) throw bad(`is of version ${entry.readUInt8(0)}; this Ferry reads version ${GROUP_DELTA_ENTRY_VERSION}`);
  const basis = entry.subarray(1, 33).toString('hex') as Digest;
  const declared = entry.readBigUInt64LE(33);
  if (declared > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`declares ${declared} bytes`);
  const size = Number(declared);
  const count = entry.readUInt32LE(41);
  if (count < 1 || count > MAX_BUNDLE_DELTA_RUNS || entry.length < deltaHeaderBytes(count)) throw bad(`names ${count} runs`);
  const runs: [number, number][] = [];
  for (let index = 0; index < count; index++) runs.push([entry.readUInt32LE(45 + index * 8), entry.readUInt32LE(49 + index * 8)]);
  let groupBytes: number;
  try {
    groupBytes = checkRuns(runs, { type: 'file', digest: id, size, executable: false });
  } catch (error) {
    throw bad((error as Error).message);
  }
  if (runs.some(([, groups]) => groups === 0) || entry.length !== deltaHeaderBytes(count) + groupBytes) throw bad(`is ${entry.length} bytes, its runs say ${deltaHeaderBytes(count) + groupBytes}`);
  if (store.statBlob(id)) return size;
  const held = store.statBlob(basis)?.size;
  const derivation = held === undefined ? derivations.get(basis) : undefined;
  const derivedSize = derivation && store.statBlob(derivation.from)?.size;
  if (held === undefined && derivedSize === undefined) throw bad(`is over normalized blob ${basis}, which is not here: ${lacksBase(base)}`);
  const cursor = new ChunkCursor(held !== undefined ? store.readBlob(basis) : derivedChunks(store, derivation!.from, derivedSize!, derivation!.record));
  const writer = session.blobWriter(size, id);
  try {
    let sentAt = deltaHeaderBytes(count);
    let run = 0;
    for (let group = 0; group < groupCount(size); group++) {
      const length = Math.min(GROUP_SIZE, size - group * GROUP_SIZE);
      const fromBasis = await cursor.read(length);
      while (run < runs.length && runs[run]![0] + runs[run]![1] <= group) run++;
      if (run < runs.length && runs[run]![0] <= group) {
        writer.write(entry.subarray(sentAt, sentAt + length));
        sentAt += length;
      } else {
        if (fromBasis.length < length) throw bad(`takes group ${group} from normalized blob ${basis}, which ends before it`);
        writer.write(fromBasis);
      }
    }
    writer.finish();
  } catch (error) {
    writer.discard();
    throw error;
  } finally {
    await cursor.close();
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
    /** Normalized blobs derived from the base by normalized/ entries or built by deltas/ entries, and their sizes. */
    const derived = new Map<Digest, number>();
    /** How the normalized/ entries derive theirs (a deltas/ entry over one reads it again). */
    const derivations = new Map<Digest, { from: Digest; record: Uint8Array }>();
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
      const match = /^([a-z]+)\/([0-9a-f]{64})$/.exec(name);
      if (!match || !ENTRY_KINDS[manifest.format].includes(match[1]!) || !isDigest(match[2]!)) throw new BundleError('BAD_BUNDLE', `unexpected entry '${name}' in the bundle`);
      const id = match[2] as Digest;
      if (match[1] === 'deltas') {
        const bytes = await readAll(entry, deltaHeaderBytes(MAX_BUNDLE_DELTA_RUNS) + MAX_BUNDLE_DELTA_BYTES, `entry ${name}`);
        derived.set(id, await applyGroupDelta(store, session, id, bytes, derivations, manifest.base));
        continue;
      }
      if (match[1] === 'normalized' || match[1] === 'templates') {
        const bytes = await readAll(entry, 32 + MAX_TEMPLATE_RECORD_BYTES, `entry ${name}`);
        if (bytes.length <= 32) throw new BundleError('BAD_BUNDLE', `entry ${name} is too short for a digest and a template record`);
        const digest = bytes.subarray(0, 32).toString('hex') as Digest;
        const record = new Uint8Array(bytes.subarray(32));
        if (match[1] === 'normalized') {
          derived.set(id, await deriveNormalized(store, session, id, digest, record, manifest.base));
          derivations.set(id, { from: digest, record });
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
