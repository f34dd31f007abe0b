/**
 * Reference-aware blobs on the realistic corpus (issue 20): what a rebuild
 * moves and stores, measured through Ferry's real code paths on 127.0.0.1.
 * For the base closure, then each variant of bench/fixtures/real-corpus.ts
 * (built in the real /nix/store), against the variant's closure NAR bytes:
 *  - push: a pusher's castore ingests the closure from the Nix store (with
 *    its references, as `ferry push` does) and uploads it to a real
 *    coordinator over the data plane: bytes sent (`ferry push`'s report);
 *  - coordinator storage: blob bytes its castore holds, growth per variant;
 *  - fetch: an agent's verified copy (copyClosure from the data plane, QUIC)
 *    into a castore that holds the previous closure: bytes copied, blobs
 *    restored from templates, and the data plane's wire bytes;
 *  - bundle: the size of `ferry bundle create VARIANT --base BASE` (what an
 *    air-gapped machine running the base closure is carried), and of the
 *    full bundle.
 * No link shaping here: bench/shaped-link.bench.ts times the agent daemon
 * on shaped links.
 *
 *   npx tsx bench/rebuild-dedup.bench.ts            # base, then every variant
 *   BENCH_VARIANTS=mass-rebuild npx tsx bench/rebuild-dedup.bench.ts
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { copyClosure, ingestStorePath, LocalCastore, openVouchedClosure, uploadStorePaths, writeBundle, type BundleConfig } from '../castore/index.js';
import type { ConfigBody } from '../protocol/config.js';
import { dumpPath } from '../nix/nar/index.js';
import { openDataClient } from '../protocol/connect.js';
import { enrollAgent, signedConfig, startTestCoordinator } from '../test/data-plane-fixture.js';
import { nixUnavailableReason } from '../test/nix-fixtures/index.js';
import { buildRealCorpus, REAL_CORPUS_VARIANTS, type RealCorpus } from './fixtures/real-corpus.js';

const skip = nixUnavailableReason();
if (skip) {
  process.stderr.write(`rebuild-dedup: skipped: ${skip}\n`);
  process.exit(0);
}

const variants = (process.env.BENCH_VARIANTS ?? REAL_CORPUS_VARIANTS.filter((variant) => variant !== 'base').join(',')).split(',') as RealCorpus['variant'][];
const MB = 1e6;
const log = (line: string) => process.stderr.write(`rebuild-dedup: ${line}\n`);

/** Ingests the closure's paths the castore lacks from the Nix store, with their references. */
async function ingestFromNixStore(store: LocalCastore, corpus: RealCorpus): Promise<void> {
  for (const info of corpus.paths) {
    if (store.getStorePath(info.path)) continue;
    await ingestStorePath(store, dumpPath(info.path), { storePath: info.path, references: info.references });
  }
}

const work = mkdtempSync(path.join(tmpdir(), 'ferry-rebuild-dedup-'));
const coordinatorTest = await startTestCoordinator();
const pusherStore = LocalCastore.open(path.join(work, 'pusher'));
const agentStore = LocalCastore.open(path.join(work, 'agent'));
const rows: string[] = [];
try {
  const { client: pusher } = await openDataClient(coordinatorTest.http.url, coordinatorTest.pusher);
  let fetcher: Awaited<ReturnType<typeof openDataClient>>['client'] | undefined;
  let head: string | undefined;
  let baseConfig: BundleConfig | undefined;
  const configOf = (id: string): BundleConfig => ({ ...(coordinatorTest.coordinator.state.get('configs', id)!.body as ConfigBody), id: id as BundleConfig['id'] });
  try {
    for (const variant of ['base' as const, ...variants]) {
      const corpus = await buildRealCorpus(variant);
      await ingestFromNixStore(pusherStore, corpus);
      const storedBefore = coordinatorTest.coordinator.castore.stats().blobBytes;
      const pushed = await uploadStorePaths(pusher, pusherStore, [corpus.root]);
      const storedAfter = coordinatorTest.coordinator.castore.stats().blobBytes;
      const submitted = await coordinatorTest.adminClient.call('graphs.submit', { graph: 'corpus', ...signedConfig(coordinatorTest.admin, 'corpus', head ? [head] : [], { 'x86_64-linux': corpus.root }) });
      head = submitted.configId;
      if (!fetcher) fetcher = (await openDataClient(coordinatorTest.http.url, await enrollAgent(coordinatorTest, 'corpus'))).client;
      const wireBefore = fetcher.wireBytes.received;
      const closure = await openVouchedClosure(fetcher, head, 'x86_64-linux', coordinatorTest.coordinator.identity.keyId);
      const fetched = await copyClosure(closure.source, agentStore, closure.storePaths);
      const wire = (fetcher.wireBytes.received) - wireBefore;
      const nar = corpus.narBytes;
      const pct = (bytes: number) => `${((100 * bytes) / nar).toFixed(2)}%`;
      const bundleOptions = { audience: { agents: [coordinatorTest.admin.keyId], where: [] } };
      const fullBundle = writeBundle(coordinatorTest.coordinator.castore, coordinatorTest.coordinator.identity, configOf(head), bundleOptions);
      const basedBundle = baseConfig && writeBundle(coordinatorTest.coordinator.castore, coordinatorTest.coordinator.identity, configOf(head), { ...bundleOptions, base: baseConfig });
      baseConfig ??= configOf(head);
      const bundleCell = basedBundle ? `${(basedBundle.size / MB).toFixed(2)} (${pct(basedBundle.size)}; ${basedBundle.blobs} blobs, ${basedBundle.templates} templates, ${basedBundle.deltas} deltas)` : '–';
      log(`${variant}: NAR ${(nar / MB).toFixed(1)} MB; push sent ${(pushed.bytesSent / MB).toFixed(2)} MB (${pct(pushed.bytesSent)}), ${pushed.templatesSent} templates; coordinator stored +${((storedAfter - storedBefore) / MB).toFixed(2)} MB; fetch copied ${(fetched.copiedBytes / MB).toFixed(2)} MB (${pct(fetched.copiedBytes)}), restored ${fetched.restoredBlobs} blobs, ${fetched.deltaBlobs} group deltas (${(fetched.deltaGroupBytes / MB).toFixed(2)} MB of groups), ${fetched.normalizedDeltaBlobs} normalized blobs as group deltas (${(fetched.normalizedDeltaGroupBytes / MB).toFixed(2)} MB of groups), wire ${(wire / MB).toFixed(2)} MB; bundle --base base ${bundleCell} MB, full ${(fullBundle.size / MB).toFixed(2)} MB`);
      rows.push(
        `| ${variant} | ${(nar / MB).toFixed(1)} | ${(pushed.bytesSent / MB).toFixed(2)} (${pct(pushed.bytesSent)}) | ${pushed.templatesSent} | ${((storedAfter - storedBefore) / MB).toFixed(2)} ${storedBefore > 0 ? ` (${((100 * (storedAfter - storedBefore)) / storedBefore).toFixed(2)}% of before)` : ''} | ${(fetched.copiedBytes / MB).toFixed(2)} (${pct(fetched.copiedBytes)}) | ${fetched.restoredBlobs} | ${wire > 0 ? (wire / MB).toFixed(2) : 'n/a'} | ${bundleCell} | ${(fullBundle.size / MB).toFixed(2)} |`,
      );
    }
  } finally {
    await pusher.close();
    await fetcher?.close();
  }
} finally {
  pusherStore.close();
  agentStore.close();
  await coordinatorTest.close();
  rmSync(work, { recursive: true, force: true });
}
process.stdout.write(
  [
    '| variant | closure NAR MB | push sent MB (of NAR) | templates pushed | coordinator storage growth MB | fetch copied MB (of NAR) | blobs restored | fetch wire MB | bundle --base base MB | full bundle MB |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
  ].join('\n'),
);
