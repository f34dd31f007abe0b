/**
 * Closure diffs between configs: the one handler of `configs.diff` (the
 * HTTP API, `ferry config diff`) and `viewer.configDiff` (the viewer's
 * page), protocol/api/config-diff.ts. Reads only: the configs from the
 * state, their closures from the castore's registry and directories.
 *
 * Cost: a target's closure is walked once (its registry records and every
 * directory below them, synchronously: ~the work of a first closure
 * manifest) and kept for the next diffs of it (CLOSURES_KEPT targets,
 * store paths' closures never change); the package diff and the fetch
 * estimate (one template lookup per file of the first closure and per new
 * file of the second) are computed per request, so they follow the
 * castore's templates as they are.
 */
import type { z } from 'zod';
import { CastoreError, closureObjects, estimateFetch, type ClosureObjects, type Digest } from '../../castore/index.js';
import { diffClosures, formatPackageDiff, type ClosurePath, type PackageDiff } from '../../nix/index.js';
import type { ConfigId } from '../../protocol/config.js';
import { FerryError } from '../../protocol/errors.js';
import {
  DEFAULT_DIFF_PACKAGES,
  MAX_DIFF_PATHS_PER_PACKAGE,
  MAX_DIFF_SYSTEMS,
  type ConfigDiff,
  type ConfigDiffInput,
  type PackageDiffView,
  type SystemDiff,
} from '../../protocol/api/config-diff.js';
import type { StorePath } from '../../nix/store-path.js';
import type { Coordinator } from '../coordinator.js';
import type { ConfigRow } from '../domain/state.js';

/** Targets whose walked closures are kept (a viewer page diffs each config against its parent: two per config). */
const CLOSURES_KEPT = 16;

/** A target's closure as a diff reads it: its paths with NAR sizes, and its files and directories. */
interface WalkedClosure {
  paths: ClosurePath[];
  objects: ClosureObjects;
}

const EMPTY: WalkedClosure = { paths: [], objects: { files: new Map(), directories: new Set() } };
const walked = new WeakMap<Coordinator, Map<string, WalkedClosure>>();

function configOf(coordinator: Coordinator, id: ConfigId, role: string): ConfigRow {
  const config = coordinator.state.get('configs', id);
  if (!config) throw new FerryError('NOT_FOUND', `no config ${id} (${role})`);
  return config;
}

/** The closure of `target` (config `configId`'s for `system`), walked once and kept; STORE_PATH_NOT_FOUND, naming them, when the castore no longer holds all of it. */
function closureOf(coordinator: Coordinator, configId: string, system: string, target: StorePath | undefined): WalkedClosure {
  if (target === undefined) return EMPTY;
  let kept = walked.get(coordinator);
  if (!kept) walked.set(coordinator, (kept = new Map()));
  const found = kept.get(target);
  if (found) {
    // Most recently used last.
    kept.delete(target);
    kept.set(target, found);
    return found;
  }
  const store = coordinator.castore;
  let closure: WalkedClosure;
  try {
    const infos = store.closure([target]).map((storePath) => store.getStorePath(storePath)!);
    closure = {
      paths: infos.map((info) => ({ storePath: info.storePath, narSize: info.narSize })),
      objects: closureObjects(
        infos.map((info) => info.root),
        (id) => store.readDirectory(id),
      ),
    };
  } catch (error) {
    if (error instanceof CastoreError && (error.code === 'STORE_PATH_NOT_FOUND' || error.code === 'DIRECTORY_NOT_FOUND')) {
      throw new CastoreError('STORE_PATH_NOT_FOUND', `the castore no longer holds the whole closure of config ${configId} for ${system} (${target}): ${error.message}`, { objectId: target });
    }
    throw error;
  }
  kept.set(target, closure);
  if (kept.size > CLOSURES_KEPT) kept.delete(kept.keys().next().value!);
  return closure;
}

/** A package as the API shows it: its store paths capped at MAX_DIFF_PATHS_PER_PACKAGE a side, with their counts. */
function packageView(entry: PackageDiff): PackageDiffView {
  return {
    ...entry,
    line: formatPackageDiff(entry),
    removedPaths: entry.removedPaths.slice(0, MAX_DIFF_PATHS_PER_PACKAGE) as StorePath[],
    addedPaths: entry.addedPaths.slice(0, MAX_DIFF_PATHS_PER_PACKAGE) as StorePath[],
    removedPathCount: entry.removedPaths.length,
    addedPathCount: entry.addedPaths.length,
  };
}

/**
 * The closure diff from config `from` (default: `configId`'s first parent;
 * none: an empty closure) to `configId`, per system of either (or only
 * `system`), as protocol/api/config-diff.ts describes it. Refuses
 * (NOT_FOUND) an unknown config or a system neither config targets, and
 * (STORE_PATH_NOT_FOUND) a closure the castore no longer holds whole.
 * Bounded: MAX_DIFF_SYSTEMS systems, `limit` packages a system,
 * MAX_DIFF_PATHS_PER_PACKAGE paths a package and side; what is left out is
 * counted.
 */
export function configDiff(coordinator: Coordinator, input: z.output<typeof ConfigDiffInput>): ConfigDiff {
  const to = configOf(coordinator, input.configId, 'the config to compare');
  const fromId = input.from ?? to.body.parents[0] ?? null;
  const from = fromId === null ? undefined : configOf(coordinator, fromId, 'the config to compare with');
  const fromTargets: Record<string, StorePath> = from?.body.targets ?? {};
  const toTargets: Record<string, StorePath> = to.body.targets;
  let systems = [...new Set([...Object.keys(fromTargets), ...Object.keys(toTargets)])].sort();
  if (input.system !== undefined) {
    if (!systems.includes(input.system)) throw new FerryError('NOT_FOUND', `neither config targets system '${input.system}' (they target ${systems.join(', ')})`);
    systems = [input.system];
  }
  const limit = input.limit ?? DEFAULT_DIFF_PACKAGES;
  const diffs: SystemDiff[] = systems.slice(0, MAX_DIFF_SYSTEMS).map((system) => {
    const before = closureOf(coordinator, fromId ?? '(none)', system, fromTargets[system]);
    const after = closureOf(coordinator, to.id, system, toTargets[system]);
    const diff = diffClosures(before.paths, after.paths);
    const store = coordinator.castore;
    const fetch = estimateFetch(before.objects, after.objects, (id: Digest) => store.templateOf(id)?.normalized);
    return {
      system,
      fromTarget: fromTargets[system] ?? null,
      toTarget: toTargets[system] ?? null,
      packages: diff.packages.slice(0, limit).map(packageView),
      packageCount: diff.packages.length,
      truncated: diff.packages.length > limit,
      unlistedChanged: diff.unlistedChanged,
      before: diff.before,
      after: diff.after,
      addedPaths: diff.addedPaths,
      removedPaths: diff.removedPaths,
      fetch,
    };
  });
  return { configId: to.id, from: fromId, systems: diffs, omittedSystems: Math.max(0, systems.length - MAX_DIFF_SYSTEMS) };
}
