/** `ferry castore …`: operate a castore directly (ingest, export, stat, fsck, gc). */
import { statSync } from 'node:fs';
import type { LocalCastore, Node } from '../castore/index.js';
import { parseStorePath } from '../nix/index.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { castoreDirFrom, dataDirOption } from './data-dir.js';
import { openInput, writeAll } from './io.js';
import { createProgress, formatBytes } from './progress.js';
import { term } from './terminal-text.js';

type CastoreModule = typeof import('../castore/index.js');

/**
 * Runs `body` with the castore open, and its module (loaded only by these
 * commands). `keepStaleFiles`: open without removing what crashed ingests
 * left (LocalCastore.open), for a dry run that must change nothing.
 */
async function withCastore<T>(
  options: Parameters<typeof castoreDirFrom>[0],
  body: (store: LocalCastore, castore: CastoreModule) => Promise<T>,
  open: { keepStaleFiles?: boolean } = {},
): Promise<T> {
  const castore = await import('../castore/index.js');
  const store = castore.LocalCastore.open(castoreDirFrom(options), open);
  try {
    return await body(store, castore);
  } finally {
    store.close();
  }
}

const ingest: Command = {
  path: ['castore', 'ingest'],
  summary: 'ingest a NAR into the castore (optionally registering it as a store path)',
  args: '<file.nar|->',
  description:
    'The NAR is decoded strictly while its files become blobs and directories. With --store-path, ' +
    'it is registered under that path (with --reference for each path it references, and ' +
    '--nar-hash to refuse a NAR that does not hash as claimed). Nothing is visible unless the whole NAR is accepted.',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...dataDirOption,
    'store-path': { type: 'string', valueName: 'PATH', description: 'register the NAR as this store path' },
    reference: { type: 'string', multiple: true, valueName: 'PATH', description: 'a store path it references' },
    'nar-hash': { type: 'string', valueName: 'HASH', description: 'expected NarHash (sha256:<nix32>)' },
    ...jsonOption,
  },
  async run({ args, options, stdout, stderr, stdin }) {
    const json = booleanOption(options, 'json');
    const storePath = stringOption(options, 'store-path');
    if (storePath) parseStorePath(storePath);
    const references = stringListOption(options, 'reference');
    for (const reference of references) parseStorePath(reference);
    const source = openInput(args[0]!, stdin);
    const total = args[0] === '-' ? undefined : statSync(args[0]!).size;
    const progress = createProgress(stderr, 'ingest', 'bytes', json);
    const onProgress = (bytes: number): void => progress.update(bytes, total);
    const result = await withCastore(options, async (store, { ingestNar, ingestStorePath, withIngest }) => {
      if (storePath) {
        const narHash = stringOption(options, 'nar-hash');
        const info = await ingestStorePath(store, source, { storePath, references, ...(narHash ? { narHash } : {}) }, { onProgress });
        return { storePath, root: info.root, narHash: info.narHash, narSize: info.narSize };
      }
      return withIngest(store, (session) => ingestNar(session, source, { onProgress }));
    });
    progress.done();
    if (json) writeJson(stdout, result);
    else {
      stdout.write(term`${'storePath' in result ? term`StorePath: ${result.storePath}\n` : ''}NarHash: ${result.narHash}\nNarSize: ${result.narSize}\n`);
      stdout.write(term`Root: ${result.root.type}${'digest' in result.root ? ` ${result.root.digest}` : ` -> ${result.root.target}`}\n`);
    }
  },
};

const exportCommand: Command = {
  path: ['castore', 'export'],
  summary: 'write the NAR of a registered store path, or of a directory id, to stdout',
  args: '<store-path|directory-id>',
  minArgs: 1,
  maxArgs: 1,
  options: { ...dataDirOption },
  async run({ args, options, stdout }) {
    await withCastore(options, async (store, { exportNar, isDigest }) => {
      const target = args[0]!;
      let root: Node;
      if (isDigest(target)) {
        store.readDirectory(target);
        root = { type: 'directory', digest: target, size: 0 };
      } else {
        const info = store.getStorePath(target);
        if (!info) throw new UsageError(`'${target}' is neither a registered store path nor a directory id`);
        root = info.root;
      }
      await writeAll(exportNar(store, root), stdout.raw);
    });
  },
};

const stat: Command = {
  path: ['castore', 'stat'],
  summary: 'show what the castore holds',
  maxArgs: 0,
  options: { ...dataDirOption, ...jsonOption },
  async run({ options, stdout }) {
    const stats = await withCastore(options, async (store) => {
      const stats = store.stats();
      return {
        dataDir: store.dataDir,
        blobs: stats.blobs,
        packedBlobs: stats.packedBlobs,
        blobBytes: stats.blobBytes,
        packedBlobBytes: stats.packedBlobBytes,
        templatedBlobs: stats.templatedBlobs,
        templatedBlobBytes: stats.templatedBlobBytes,
        directories: stats.directories,
        storePaths: stats.storePaths,
        registeredNarBytes: stats.registeredNarBytes,
      };
    });
    if (booleanOption(options, 'json')) return writeJson(stdout, stats);
    stdout.write(
      term`${[
        term`castore:     ${stats.dataDir}\n`,
        term`store paths: ${stats.storePaths} (NARs total ${formatBytes(stats.registeredNarBytes)})\n`,
        term`blobs:       ${stats.blobs} (${formatBytes(stats.blobBytes)}; ${stats.packedBlobs} small ones in pack files, ${formatBytes(stats.packedBlobBytes)})\n`,
        stats.templatedBlobs > 0 ? term`templates:   ${stats.templatedBlobs} blobs that embed store paths (${formatBytes(stats.templatedBlobBytes)} restored) kept as a normalized blob + record\n` : [],
        term`directories: ${stats.directories}\n`,
        stats.registeredNarBytes > 0 ? term`dedup:       blobs are ${((100 * stats.blobBytes) / stats.registeredNarBytes).toFixed(1)}% of NAR bytes\n` : [],
      ]}`,
    );
  },
};

const fsckCommand: Command = {
  path: ['castore', 'fsck'],
  summary: 're-verify every blob, directory and store path; report what is wrong and where',
  maxArgs: 0,
  options: {
    ...dataDirOption,
    nars: { type: 'boolean', description: 'also re-export every store path and check its NarHash (slow)' },
    ...jsonOption,
  },
  async run({ options, stdout, stderr }) {
    const json = booleanOption(options, 'json');
    const progress = createProgress(stderr, 'fsck', 'objects', json);
    const report = await withCastore(options, (store, { fsck }) =>
      fsck(store, { checkNars: booleanOption(options, 'nars'), onProgress: (done, total) => progress.update(done, total) }),
    );
    progress.done();
    if (json) writeJson(stdout, report);
    else {
      stdout.write(term`checked ${report.blobs} blobs, ${report.directories} directories, ${report.storePaths} store paths\n`);
      for (const problem of report.problems) stdout.write(term`${problem.kind} ${problem.id}: ${problem.problem}\n`);
      stdout.write(report.problems.length === 0 ? term`no problems found\n` : term`${report.problems.length} problem(s) found\n`);
    }
    return report.problems.length === 0 ? 0 : 1;
  },
};

const gc: Command = {
  path: ['castore', 'gc'],
  summary: 'delete blobs and directories no kept store path reaches, and what crashed ingests left',
  description:
    'By default every registered store path is kept; with --keep, only those paths and their closure. ' +
    'Also removes the temp files and unpublished packs of ingests whose process is gone (opening the castore removes most of them too); ' +
    '--dry-run counts them.',
  maxArgs: 0,
  options: {
    ...dataDirOption,
    'dry-run': { type: 'boolean', short: 'n', description: 'only report what would be deleted' },
    keep: { type: 'string', multiple: true, valueName: 'PATH', description: 'keep only this store path (and its closure)' },
    ...jsonOption,
  },
  async run({ options, stdout }) {
    const keep = stringListOption(options, 'keep');
    const dryRun = booleanOption(options, 'dry-run');
    const report = await withCastore(
      options,
      async (store, { collectGarbage }) => collectGarbage(store, { dryRun, ...(keep.length > 0 ? { keepStorePaths: keep } : {}) }),
      { keepStaleFiles: dryRun },
    );
    if (booleanOption(options, 'json')) return writeJson(stdout, report);
    const verb = report.dryRun ? 'would remove' : 'removed';
    stdout.write(
      term`${verb} ${report.removedBlobs} blobs (${formatBytes(report.removedBlobBytes)}), ${report.removedDirectories} directories, ${report.removedStorePaths.length} store paths; kept ${report.keptStorePaths} store paths\n`,
    );
    if (report.staleIngestsCleaned + report.staleTempFiles + report.stalePackFiles > 0) {
      stdout.write(
        term`${verb} what crashed ingests left: ${report.staleTempFiles} temp file(s) and ${report.stalePackFiles} unpublished pack(s) (${formatBytes(report.staleFileBytes)}), ${report.staleIngestsCleaned} ingest record(s)\n`,
      );
    }
  },
};

export const castoreCommands: Command[] = [ingest, exportCommand, stat, fsckCommand, gc];
