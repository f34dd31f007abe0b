/**
 * `ferry gc`: the coordinator's garbage collection, driven by the graphs
 * (coordinator/retention.ts; docs/coordinator.md, "Retention"). Admins only;
 * recorded in the audit log unless a dry run.
 */
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { formatBytes } from './progress.js';
import { term } from './terminal-text.js';
import { MAX_KEEP_CONFIGS } from '../protocol/api/inputs.js';

export const gcCommand: Command = {
  path: ['gc'],
  summary: "collect the coordinator's garbage: keep what the graphs and agents need, delete the rest",
  description:
    'Keeps, with their closures: the newest configs of each graph (--keep-configs, default the coordinator’s: 10), each graph’s head, every pinned config, ' +
    'and every config an agent runs or should run; and whatever was pushed within the grace period (coordinator serve --gc-grace, default 1 h), so a push not yet submitted as a config survives. ' +
    'Everything else is deleted from the coordinator’s castore. Recorded as a store.gc audit event (counts, and the digest of the kept configs). Admin keys only.',
  maxArgs: 0,
  options: {
    'dry-run': { type: 'boolean', short: 'n', description: 'only report what would be deleted (nothing is recorded)' },
    'keep-configs': { type: 'string', valueName: 'N', description: 'newest configs kept per graph (default: the coordinator’s --keep-configs)' },
    ...connectionOptions,
    ...jsonOption,
  },
  async run({ options, stdout }) {
    const keepText = stringOption(options, 'keep-configs');
    const keepConfigs = keepText === undefined ? undefined : Number(keepText);
    if (keepConfigs !== undefined && !(Number.isSafeInteger(keepConfigs) && keepConfigs >= 1 && keepConfigs <= MAX_KEEP_CONFIGS)) {
      throw new UsageError(`--keep-configs '${keepText}' is not a whole number from 1 to ${MAX_KEEP_CONFIGS}`);
    }
    const report = await clientFrom(options).call('gc', { dryRun: booleanOption(options, 'dry-run'), ...(keepConfigs !== undefined ? { keepConfigs } : {}) });
    if (booleanOption(options, 'json')) return writeJson(stdout, report);
    const verb = report.dryRun ? 'would remove' : 'removed';
    stdout.write(term`${verb} ${report.removedStorePaths.length} store paths, ${report.removedBlobs} blobs (${formatBytes(report.removedBlobBytes)}), ${report.removedDirectories} directories\n`);
    stdout.write(
      term`kept ${report.keptConfigs.length} configs (${report.keepConfigs} newest per graph, heads, pinned, running, desired; digest ${report.keptConfigsDigest}) and ${report.keptStorePaths} store paths (${report.recentStorePaths} pushed within the last ${report.graceSeconds} s)\n`,
    );
    if (report.seq !== null) stdout.write(term`recorded as audit event #${report.seq}\n`);
  },
};
