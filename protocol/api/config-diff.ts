/**
 * A closure diff between two configs (`configs.diff`, and the viewer's
 * `viewer.configDiff`, one handler: coordinator/api/config-diff.ts): per
 * system, the packages whose versions or sizes changed, as `nix store
 * diff-closures` lists them (nix/closure-diff.ts), and what an agent
 * running the first config fetches for the second
 * (castore/transfer/fetch-estimate.ts).
 *
 * Example: `GET /v1/configs/<B>/diff?from=<A>` →
 * `{"configId":"<B>","from":"<A>","systems":[{"system":"x86_64-linux",
 * "packages":[{"name":"zlib","removedVersions":["1.3"],"addedVersions":["1.3.1"],…}],
 * "fetch":{"newBlobs":12,"newBytes":345678,…},…}],"omittedSystems":0}`.
 */
import { z } from 'zod';
import { ConfigIdSchema, SystemSchema } from '../config.js';
import { StorePathSchema } from '../store-path-info.js';

/** Packages listed per system, by default and at most (`limit`); the rest are counted (`truncated`). */
export const DEFAULT_DIFF_PACKAGES = 200;
export const MAX_DIFF_PACKAGES = 2000;
/** Store paths listed per package and side; the rest are counted. */
export const MAX_DIFF_PATHS_PER_PACKAGE = 16;
/** Systems diffed in one answer (configs name few; the others are counted, `omittedSystems`: ask with `system`). */
export const MAX_DIFF_SYSTEMS = 8;

/**
 * The input: `configId` (the config moved to), `from` (the config moved
 * from; default its first parent, and none for a config without one: then
 * everything is added), `system` (one system only), `limit` (packages per
 * system, digits only, 1..MAX_DIFF_PACKAGES).
 */
export const ConfigDiffInput = z.strictObject({
  configId: ConfigIdSchema,
  from: ConfigIdSchema.optional(),
  system: SystemSchema.optional(),
  limit: z
    .string()
    .regex(/^\d{1,5}$/, 'expected a decimal integer')
    .transform(Number)
    .pipe(z.number().int().min(1).max(MAX_DIFF_PACKAGES))
    .optional(),
});

const bytes = z.number().int().nonnegative();
const count = z.number().int().nonnegative();

/** One package, as nix/closure-diff.ts PackageDiff, its paths capped. */
export const PackageDiffSchema = z.strictObject({
  name: z.string(),
  /** The line `nix store diff-closures` prints for it, without colours: `zlib: 1.3 → 1.3.1, +0.1 KiB`. */
  line: z.string(),
  /** Versions only before / only after, sorted; '' is the empty version (printed ε). */
  removedVersions: z.array(z.string()),
  addedVersions: z.array(z.string()),
  sizeBefore: bytes,
  sizeAfter: bytes,
  sizeDelta: z.number().int(),
  /** Whether Nix prints the delta (|delta| ≥ 8 KiB). */
  sizeShown: z.boolean(),
  /** Its store paths only before / only after: the first MAX_DIFF_PATHS_PER_PACKAGE of each, and how many there are. */
  removedPaths: z.array(StorePathSchema).max(MAX_DIFF_PATHS_PER_PACKAGE),
  addedPaths: z.array(StorePathSchema).max(MAX_DIFF_PATHS_PER_PACKAGE),
  removedPathCount: count,
  addedPathCount: count,
});
export type PackageDiffView = z.infer<typeof PackageDiffSchema>;

const ClosureTotalsSchema = z.strictObject({ paths: count, narSize: bytes });

/** What an agent running `from` fetches for `configId` on this system (castore/transfer/fetch-estimate.ts: file bytes, uncompressed, before group deltas). */
export const FetchEstimateSchema = z.strictObject({
  newBlobs: count,
  newBytes: bytes,
  newDirectories: count,
  withTemplates: z.strictObject({ restoredBlobs: count, normalizedBlobs: count, bytes }),
});

export const SystemDiffSchema = z.strictObject({
  system: SystemSchema,
  /** The targets compared; null where that config has none for this system (an empty closure). */
  fromTarget: StorePathSchema.nullable(),
  toTarget: StorePathSchema.nullable(),
  /** The packages Nix lists, by name, at most `limit`; */
  packages: z.array(PackageDiffSchema).max(MAX_DIFF_PACKAGES),
  /** how many it lists in all (more than `packages.length` when truncated), */
  packageCount: count,
  truncated: z.boolean(),
  /** and packages rebuilt without a listed change (same versions, size within 8 KiB). */
  unlistedChanged: count,
  before: ClosureTotalsSchema,
  after: ClosureTotalsSchema,
  addedPaths: count,
  removedPaths: count,
  fetch: FetchEstimateSchema,
});
export type SystemDiff = z.infer<typeof SystemDiffSchema>;

export const ConfigDiffSchema = z.strictObject({
  configId: ConfigIdSchema,
  /** The config compared with: `from`, or the first parent; null when there is none. */
  from: ConfigIdSchema.nullable(),
  /** Systems in byte order, at most MAX_DIFF_SYSTEMS. */
  systems: z.array(SystemDiffSchema).max(MAX_DIFF_SYSTEMS),
  /** Systems of either config left out (ask for them with `system`). */
  omittedSystems: count,
});
export type ConfigDiff = z.infer<typeof ConfigDiffSchema>;
