/** `ferry bundle create`: a signed, self-contained deployment for air-gapped machines. */
import { createWriteStream } from 'node:fs';
import type { ConfigBody } from '../coordinator/domain/events.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { dataDirFrom, dataDirOption } from './data-dir.js';
import { counted, writeAll } from './io.js';
import { createProgress, formatBytes } from './progress.js';

const create: Command = {
  path: ['bundle', 'create'],
  summary: 'write a config and exactly its closure to a tar file signed by the coordinator key (run on the coordinator host)',
  description:
    'Reads the coordinator data directory directly (its castore and key; a running coordinator is fine). ' +
    'The agent verifies the signature against the coordinator key it enrolled with, and every object by its BLAKE3 id: ' +
    'ferry agent apply-bundle FILE.',
  args: '<config-id>',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...dataDirOption,
    output: { type: 'string', short: 'o', valueName: 'FILE', description: 'where to write the bundle (- for stdout)' },
    system: { type: 'string', multiple: true, valueName: 'SYSTEM', description: 'only the closure for this system (default: every target)' },
    ...jsonOption,
  },
  async run({ args, options, stdout, stderr }) {
    const output = stringOption(options, 'output');
    if (!output) throw new UsageError('-o FILE is required (- for stdout)');
    const [{ writeBundle }, { Coordinator }] = await Promise.all([import('../castore/index.js'), import('../coordinator/coordinator.js')]);
    const dataDir = dataDirFrom(options);
    if (!Coordinator.exists(dataDir)) throw new UsageError(`no coordinator in ${dataDir}`);
    const coordinator = Coordinator.open(dataDir);
    try {
      const row = coordinator.state.get('configs', args[0]!);
      if (!row) throw new UsageError(`no config ${args[0]} (see ferry graph log GRAPH)`);
      const systems = stringListOption(options, 'system');
      const bundle = writeBundle(coordinator.castore, coordinator.identity, { ...(row.body as ConfigBody), id: row.id }, systems.length > 0 ? systems : undefined);
      const json = booleanOption(options, 'json');
      const progress = createProgress(stderr, 'writing bundle', 'bytes', json);
      const out = output === '-' ? stdout : createWriteStream(output);
      await writeAll(
        counted(bundle.bytes, (written) => progress.update(written, bundle.size)),
        out,
      );
      if (output === '-') return progress.done();
      await new Promise<void>((resolve, reject) => (out as ReturnType<typeof createWriteStream>).end((error?: Error | null) => (error ? reject(error) : resolve())));
      const summary = { configId: row.id, file: output, bytes: bundle.size, storePaths: bundle.storePaths, directories: bundle.directories, blobs: bundle.blobs };
      progress.done();
      if (json) return writeJson(stdout, summary);
      stderr.write(`wrote bundle of config ${row.id} to ${output}: ${formatBytes(bundle.size)}, ${bundle.storePaths} store paths (${bundle.blobs} blobs, ${bundle.directories} directories)\n`);
    } finally {
      coordinator.close();
    }
  },
};

export const bundleCommands: Command[] = [create];
