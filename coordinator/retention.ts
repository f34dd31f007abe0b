/**
 * Retention: which configs the coordinator keeps the closures of, and its
 * garbage collection (`ferry gc`, POST /v1/gc), driven by the graphs.
 *
 * Kept: per graph, its newest `keepConfigs` configs (by the seq that
 * recorded them) and its head; every pinned config; every config an
 * enrolled or enrolling agent should run (its desired config) or runs (its
 * current config, as it last reported). With their closures. Kept too,
 * whatever names them: store paths registered within the grace period
 * (a push not yet submitted as a config) and objects written or
 * deduplicated within it (an upload under way: castore/gc.ts also keeps
 * what any open ingest may still use).
 *
 * While a GC decides and sweeps, the commands that would make another
 * config needed (a submission, a pin, a graph rollback) are refused with
 * GC_CONFLICT (commands.ts CommandContext.collectingGarbage): the kept set
 * cannot change under it. A config whose closure was collected stays in
 * the log and the graph; pinning it or rolling a graph back to it is
 * refused (MISSING_STORE_PATH).
 *
 * Recorded as a `store.gc` audit event (unless a dry run): the counts, and
 * the SHA-256 of the kept config ids (sorted, one per line).
 */
import { createHash } from 'node:crypto';
import { collectGarbage } from '../castore/index.js';
import { FerryError } from '../protocol/errors.js';
import type { ConfigId } from '../protocol/config.js';
import type { GcReportView } from '../protocol/api/views.js';
import type { Coordinator } from './coordinator.js';
import type { Actor } from './domain/commands.js';
import { recordGarbageCollection } from './domain/commands.js';
import type { SqliteStateStore } from './domain/sqlite-state.js';
import { desiredConfigOf } from './api/queries.js';

/** Configs kept per graph when neither `ferry gc --keep-configs` nor `coordinator serve --keep-configs` says. */
export const DEFAULT_KEEP_CONFIGS = 10;
/** How long a store path or object just pushed or used is kept though no config names it (`--gc-grace`). */
export const DEFAULT_GC_GRACE_SECONDS = 3600;

export interface RetentionOptions {
  /** Newest configs kept per graph (default DEFAULT_KEEP_CONFIGS). */
  keepConfigs?: number;
  /** The grace period for recent pushes, in seconds (default DEFAULT_GC_GRACE_SECONDS). */
  graceSeconds?: number;
}

/** The configs a GC keeps (see the module comment), as a set of ids. Reads the state, changes nothing. */
export function keptConfigs(state: SqliteStateStore, keepConfigs: number): Set<ConfigId> {
  const kept = new Set<ConfigId>();
  const byGraph = new Map<string, { id: ConfigId; seq: number }[]>();
  for (const config of state.all('configs')) {
    const list = byGraph.get(config.graph) ?? [];
    list.push({ id: config.id, seq: config.seq });
    byGraph.set(config.graph, list);
  }
  for (const list of byGraph.values()) {
    for (const config of list.sort((a, b) => b.seq - a.seq).slice(0, keepConfigs)) kept.add(config.id);
  }
  for (const graph of state.all('graphs')) kept.add(graph.head);
  for (const agent of state.all('agents')) {
    if (agent.status === 'revoked' || agent.status === 'rejected') continue;
    for (const id of [agent.pinnedConfig, desiredConfigOf(state, agent), agent.currentConfig]) if (id) kept.add(id as ConfigId);
  }
  return kept;
}

/** SHA-256 (hex) of the config ids, sorted, one per line: what a store.gc event says was kept. */
export function keptConfigsDigest(ids: Iterable<string>): string {
  return createHash('sha256').update([...ids].sort().join('\n')).digest('hex');
}

/**
 * Runs the coordinator's GC for `actor` (admins only: FORBIDDEN for any
 * other role, before anything is read). Refuses (GC_CONFLICT) while another
 * GC runs. `dryRun` removes nothing and records nothing. A sweep that
 * fails midway leaves every store path still registered complete
 * (castore/gc.ts) and records nothing.
 */
export async function collectCoordinatorGarbage(
  coordinator: Coordinator,
  actor: Actor,
  request: { dryRun: boolean; keepConfigs?: number },
  options: RetentionOptions = {},
): Promise<GcReportView> {
  if (actor.role !== 'admin') throw new FerryError('FORBIDDEN', `role '${actor.role}' may not do this (needs admin)`);
  if (coordinator.collectingGarbage) throw new FerryError('GC_CONFLICT', 'another garbage collection is running');
  const keepConfigs = request.keepConfigs ?? options.keepConfigs ?? DEFAULT_KEEP_CONFIGS;
  const graceSeconds = options.graceSeconds ?? DEFAULT_GC_GRACE_SECONDS;
  coordinator.collectingGarbage = true;
  try {
    const castore = coordinator.castore;
    const kept = keptConfigs(coordinator.state, keepConfigs);
    const targets = new Set<string>();
    for (const id of kept) {
      for (const target of Object.values(coordinator.state.get('configs', id)!.body.targets)) {
        // A config whose closure is gone already (an earlier GC, with a smaller --keep-configs) keeps nothing.
        if (castore.getStorePath(target)) targets.add(target);
      }
    }
    const graceStart = castore.clock() - graceSeconds * 1000;
    const recent = castore.storePathsRegisteredSince(graceStart).filter((storePath) => !targets.has(storePath));
    const report = await collectGarbage(castore, { keepStorePaths: [...targets, ...recent], dryRun: request.dryRun, clock: () => graceStart });
    const ids = [...kept].sort();
    const digest = keptConfigsDigest(ids);
    const counts = {
      keepConfigs,
      graceSeconds,
      keptConfigs: ids.length,
      keptConfigsDigest: digest,
      keptStorePaths: report.keptStorePaths,
      removedStorePaths: report.removedStorePaths.length,
      removedBlobs: report.removedBlobs,
      removedBlobBytes: report.removedBlobBytes,
      removedDirectories: report.removedDirectories,
    };
    const event = request.dryRun ? undefined : coordinator.record(actor, (context) => recordGarbageCollection(context, counts));
    return {
      dryRun: request.dryRun,
      keepConfigs,
      graceSeconds,
      keptConfigs: ids as ConfigId[],
      keptConfigsDigest: digest,
      keptStorePaths: report.keptStorePaths,
      recentStorePaths: recent.length,
      removedStorePaths: report.removedStorePaths,
      removedBlobs: report.removedBlobs,
      removedBlobBytes: report.removedBlobBytes,
      removedDirectories: report.removedDirectories,
      seq: event?.seq ?? null,
    };
  } finally {
    coordinator.collectingGarbage = false;
  }
}
