/**
 * The difference between two closures by package, as `nix store
 * diff-closures` computes and prints it (src/nix/diff-closures.cc, the same
 * in Nix 2.8 and since):
 *
 * - each store path of a closure is grouped by package name: its name with
 *   an output suffix stripped (`-bin`, `-dev`, any `-[a-z]+`, `-lib32`,
 *   `-lib64`: stripOutputName) and then split into name and version by
 *   DrvName (parseDrvName); paths of one package may have several versions;
 * - a package's size is the sum of the NAR sizes of its paths in the closure;
 * - a package is listed when its set of versions changed (versions only
 *   before → versions only after) or when its size changed by at least
 *   8 KiB (8,192 bytes), in byte order of names;
 * - printed `name: 1.0 → 2.0, +12.3 KiB`: `∅` for no version, `ε` for the
 *   empty one, versions in byte order joined with `, `, the delta in KiB
 *   with one decimal and its sign, rounded as printf's `%+.1f` rounds.
 *
 * Pure: it takes the two closures' store paths and NAR sizes (a closure is
 * all of its paths: the caller walks references) and reads nothing else.
 */
import { parseDrvName, stripOutputName } from './drv-name.js';
import { STORE_PATH_HASH_LENGTH, storePathBaseName } from './store-path.js';

/** A store path of a closure and its NAR size. */
export interface ClosurePath {
  storePath: string;
  narSize: number;
}

/** Nix's threshold: a size change smaller than this is not shown (nor listed, when the versions are the same). */
export const CLOSURE_DIFF_SIZE_THRESHOLD = 8 * 1024;

/** One package whose versions or size changed. */
export interface PackageDiff {
  /** The package name (no output suffix, no version). */
  name: string;
  /** Versions only the first closure has, sorted; '' is the empty version (printed `ε`). */
  removedVersions: string[];
  /** Versions only the second closure has, sorted. */
  addedVersions: string[];
  /** Sum of the NAR sizes of the package's paths in each closure. */
  sizeBefore: number;
  sizeAfter: number;
  sizeDelta: number;
  /** Whether Nix prints the delta (|delta| ≥ 8 KiB). */
  sizeShown: boolean;
  /** The package's store paths only the first closure has, sorted, */
  removedPaths: string[];
  /** and only the second. */
  addedPaths: string[];
}

export interface ClosureDiff {
  /** The packages Nix lists, by name in byte order. */
  packages: PackageDiff[];
  /** Packages whose store paths differ (rebuilt) but that Nix does not list: same versions, size within 8 KiB. */
  unlistedChanged: number;
  /** Store path counts and NAR size totals of each closure. */
  before: { paths: number; narSize: number };
  after: { paths: number; narSize: number };
  /** Store paths in one closure only. */
  addedPaths: number;
  removedPaths: number;
}

/** The package name and version Nix's diff-closures reads from `storePath`'s name. */
export function closurePackageOf(storePath: string): { name: string; version: string } {
  const base = storePathBaseName(storePath);
  return parseDrvName(stripOutputName(base.slice(STORE_PATH_HASH_LENGTH + 1)).name);
}

/** package name -> version -> paths (with NAR sizes). */
type Grouped = Map<string, Map<string, Map<string, number>>>;

function group(closure: readonly ClosurePath[]): Grouped {
  const grouped: Grouped = new Map();
  for (const { storePath, narSize } of closure) {
    const { name, version } = closurePackageOf(storePath);
    let versions = grouped.get(name);
    if (!versions) grouped.set(name, (versions = new Map()));
    let paths = versions.get(version);
    if (!paths) versions.set(version, (paths = new Map()));
    paths.set(storePath, narSize);
  }
  return grouped;
}

/** Byte order, as std::set<std::string> sorts (store path names are ASCII, so code units order alike). */
const byteOrder = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function total(versions: Map<string, Map<string, number>> | undefined): number {
  let sum = 0;
  for (const paths of versions?.values() ?? []) for (const size of paths.values()) sum += size;
  return sum;
}

function pathsOf(versions: Map<string, Map<string, number>> | undefined): Set<string> {
  const paths = new Set<string>();
  for (const byPath of versions?.values() ?? []) for (const storePath of byPath.keys()) paths.add(storePath);
  return paths;
}

/**
 * The per-package difference from closure `before` to closure `after`, by
 * Nix's rules (see the module comment). A path listed twice in one closure
 * counts once.
 */
export function diffClosures(before: readonly ClosurePath[], after: readonly ClosurePath[]): ClosureDiff {
  const groupedBefore = group(before);
  const groupedAfter = group(after);
  const names = [...new Set([...groupedBefore.keys(), ...groupedAfter.keys()])].sort(byteOrder);
  const packages: PackageDiff[] = [];
  let unlistedChanged = 0;
  let addedPaths = 0;
  let removedPaths = 0;
  for (const name of names) {
    const versionsBefore = groupedBefore.get(name);
    const versionsAfter = groupedAfter.get(name);
    const sizeBefore = total(versionsBefore);
    const sizeAfter = total(versionsAfter);
    const sizeDelta = sizeAfter - sizeBefore;
    const sizeShown = Math.abs(sizeDelta) >= CLOSURE_DIFF_SIZE_THRESHOLD;
    const removedVersions = [...(versionsBefore?.keys() ?? [])].filter((version) => !versionsAfter?.has(version)).sort(byteOrder);
    const addedVersions = [...(versionsAfter?.keys() ?? [])].filter((version) => !versionsBefore?.has(version)).sort(byteOrder);
    const pathsBefore = pathsOf(versionsBefore);
    const pathsAfter = pathsOf(versionsAfter);
    const removed = [...pathsBefore].filter((storePath) => !pathsAfter.has(storePath)).sort(byteOrder);
    const added = [...pathsAfter].filter((storePath) => !pathsBefore.has(storePath)).sort(byteOrder);
    removedPaths += removed.length;
    addedPaths += added.length;
    if (sizeShown || removedVersions.length > 0 || addedVersions.length > 0) {
      packages.push({ name, removedVersions, addedVersions, sizeBefore, sizeAfter, sizeDelta, sizeShown, removedPaths: removed, addedPaths: added });
    } else if (removed.length > 0 || added.length > 0) {
      unlistedChanged++;
    }
  }
  const totals = (grouped: Grouped) => {
    let paths = 0;
    let narSize = 0;
    for (const versions of grouped.values()) {
      paths += pathsOf(versions).size;
      narSize += total(versions);
    }
    return { paths, narSize };
  };
  return { packages, unlistedChanged, before: totals(groupedBefore), after: totals(groupedAfter), addedPaths, removedPaths };
}

/** Versions as Nix shows them: `∅` for none, `ε` for the empty version, sorted, `, `-joined. */
export function showVersions(versions: readonly string[]): string {
  if (versions.length === 0) return '∅';
  return [...new Set(versions.map((version) => (version === '' ? 'ε' : version)))].sort(byteOrder).join(', ');
}

/**
 * `bytes` in KiB as printf's `%+.1f` prints `bytes / 1024.0`: a sign always,
 * one decimal, an exact tie (a multiple of 256 bytes ending in .x5) rounded
 * to even as glibc rounds the exact binary value, where toFixed would round up.
 */
export function formatKibDelta(bytes: number): string {
  const magnitude = BigInt(Math.abs(Math.trunc(bytes)));
  // Tenths of a KiB: |bytes| * 10 / 1024 = |bytes| * 5 / 512, rounded half to even.
  const scaled = magnitude * 5n;
  let tenths = scaled / 512n;
  const rest = scaled - tenths * 512n;
  if (rest * 2n > 512n || (rest * 2n === 512n && tenths % 2n === 1n)) tenths++;
  return `${bytes < 0 ? '-' : '+'}${tenths / 10n}.${tenths % 10n} KiB`;
}

/** One package's line, exactly as `nix store diff-closures` prints it (without its colours): `name: 1.0 → 2.0, +12.3 KiB`. */
export function formatPackageDiff(entry: Pick<PackageDiff, 'name' | 'removedVersions' | 'addedVersions' | 'sizeShown' | 'sizeDelta'>): string {
  const items: string[] = [];
  if (entry.removedVersions.length > 0 || entry.addedVersions.length > 0) items.push(`${showVersions(entry.removedVersions)} → ${showVersions(entry.addedVersions)}`);
  if (entry.sizeShown) items.push(formatKibDelta(entry.sizeDelta));
  return `${entry.name}: ${items.join(', ')}`;
}
