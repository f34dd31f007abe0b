/**
 * `ferry push`: ship store paths from a build machine's Nix store to the
 * coordinator. The closure is read from the local store, converted to
 * castore form in a local cache (kept between pushes: store paths never
 * change), and only what the coordinator lacks is uploaded.
 */
import { homedir } from 'node:os';
import path from 'node:path';
import type { LocalCastore, TransferProgress, UploadReport } from '../castore/index.js';
import { parseStorePath } from '../nix/index.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { openInput } from './io.js';
import { connectionOptions, dataClientFrom } from './contexts.js';
import { createProgress, formatBytes } from './progress.js';
import { term } from './terminal-text.js';

function pushCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'ferry', 'push-castore');
}

/** Converts the store paths the cache lacks (NAR from the local Nix store, NarHash checked on the way in). */
async function ingestClosure(cache: LocalCastore, roots: string[], progress: ReturnType<typeof createProgress>): Promise<{ closure: string[]; ingested: number }> {
  const [{ ingestStorePath }, { dumpStorePath, queryClosure, queryPathInfos }] = await Promise.all([import('../castore/index.js'), import('../nix/local-store.js')]);
  const closure = await queryClosure(roots);
  const lacking = closure.filter((storePath) => !cache.getStorePath(storePath));
  const infos = await queryPathInfos(lacking);
  const total = infos.reduce((sum, info) => sum + info.narSize, 0);
  let done = 0;
  for (const info of infos) {
    const before = done;
    await ingestStorePath(
      cache,
      dumpStorePath(info.path),
      {
        storePath: info.path,
        narHash: info.narHash,
        narSize: info.narSize,
        references: info.references,
        ...(info.deriver ? { deriver: info.deriver } : {}),
        ...(info.ca ? { ca: info.ca } : {}),
        signatures: info.signatures ?? [],
      },
      { onProgress: (bytes) => progress.update(before + bytes, total, `reading ${path.basename(info.path)}`) },
    );
    done += info.narSize;
  }
  progress.done();
  return { closure, ingested: infos.length };
}

export const pushCommand: Command = {
  path: ['push'],
  summary: 'upload store paths and their closure to the coordinator (only what it lacks)',
  description:
    'Arguments are store paths or anything resolving into the store (./result). Needs Nix on this machine to read ' +
    'its store. The closure is converted to castore form in a local cache ($XDG_CACHE_HOME/ferry/push-castore), then ' +
    'only missing blobs, directories and store paths are sent over QUIC (HTTP if UDP is blocked). The coordinator ' +
    'verifies everything before it becomes visible; each push is one audit event. Pushing again is a no-op.',
  args: '<store-path|./result>...',
  minArgs: 1,
  options: {
    nar: { type: 'string', valueName: 'FILE', description: 'push this NAR as the one store path given (no Nix needed; - for stdin)' },
    reference: { type: 'string', multiple: true, valueName: 'STORE-PATH', description: 'with --nar: a store path it references (already pushed)' },
    'cache-dir': { type: 'string', valueName: 'DIR', description: 'local castore cache (default: $XDG_CACHE_HOME/ferry/push-castore)' },
    http: { type: 'boolean', description: 'use the HTTP data plane, not QUIC' },
    quiet: { type: 'boolean', short: 'q', description: 'no progress output' },
    ...connectionOptions,
    ...jsonOption,
  },
  async run({ args, options, stdout, stderr }) {
    const [{ LocalCastore, ingestStorePath, uploadStorePaths }, { resolveToStorePath }] = await Promise.all([import('../castore/index.js'), import('../nix/local-store.js')]);
    const quiet = booleanOption(options, 'quiet') || booleanOption(options, 'json');
    const nar = stringOption(options, 'nar');
    if (nar !== undefined && args.length !== 1) throw new UsageError('--nar pushes exactly one store path: ferry push --nar FILE /nix/store/…-name');
    const roots = nar !== undefined ? [parseStorePath(args[0]!).path] : await Promise.all(args.map((arg) => resolveToStorePath(arg)));
    const cache = LocalCastore.open(path.resolve(stringOption(options, 'cache-dir') ?? pushCacheDir()));
    let report: UploadReport;
    try {
      if (nar !== undefined) {
        if (!cache.getStorePath(roots[0]!)) await ingestStorePath(cache, openInput(nar), { storePath: roots[0]!, references: stringListOption(options, 'reference') });
      } else {
        const { closure, ingested } = await ingestClosure(cache, roots, createProgress(stderr, 'reading store', 'bytes', quiet));
        if (!quiet && ingested > 0) stderr.write(term`read ${ingested} of ${closure.length} store paths from the local store\n`);
      }
      const client = await dataClientFrom(options, quiet ? undefined : (message) => stderr.write(term`note: ${message}\n`));
      try {
        const bar = createProgress(stderr, 'uploading', 'bytes', quiet);
        const files = (p: TransferProgress) => `${p.objectsDone}/${p.objectsTotal} objects`;
        report = await uploadStorePaths(client, cache, roots, { onProgress: (p) => p.phase === 'blobs' && bar.update(p.bytesDone, p.bytesTotal, files(p)) });
        bar.done();
        if (booleanOption(options, 'json')) return writeJson(stdout, { ...report, transport: client.transportKind });
        stdout.write(
          term`${[
            term`pushed ${roots.join(' ')} (${report.closureSize} store path${report.closureSize === 1 ? '' : 's'}, ${formatBytes(report.closureNarBytes)} as NARs) over ${client.transportKind?.toUpperCase()}\n`,
            term`  new store paths: ${report.registered.length}, already present: ${report.closureSize - report.registered.length}\n`,
            term`  sent ${report.blobsSent} blobs, ${report.templatesSent} templates and ${report.directoriesSent} directories, ${formatBytes(report.bytesSent)}; ${report.blobsPresent} blobs were already there\n`,
            term`  audit event ${report.seq}\n`,
          ]}`,
        );
      } finally {
        await client.close();
      }
    } finally {
      cache.close();
    }
  },
};
