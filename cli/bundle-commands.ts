/** `ferry bundle create`: a signed, self-contained deployment for air-gapped machines, bound to the agents it is for. */
import { createWriteStream } from 'node:fs';
import type { Coordinator } from '../coordinator/coordinator.js';
import type { ConfigBody } from '../coordinator/domain/events.js';
import { KeyIdSchema, type KeyId } from '../protocol/identity.js';
import type { BundledSecret } from '../castore/bundle.js';
import { parseDuration } from './format.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { dataDirFrom, dataDirOption } from './data-dir.js';
import { counted, writeAll } from './io.js';
import { createProgress, formatBytes } from './progress.js';
import { term, type TerminalOutput } from './terminal-text.js';

const create: Command = {
  path: ['bundle', 'create'],
  summary: 'write a config and exactly its closure to a tar file signed by the coordinator key (run on the coordinator host)',
  description:
    'Reads the coordinator data directory directly (its castore and key; a running coordinator is fine). ' +
    'Name who it is for with --agents (ids or names) and/or --where (as in ferry agents ls; resolved now to the enrolled agents that match): ' +
    'the signed manifest lists their ids, and any other agent refuses it. It expires after --ttl. ' +
    'The agent verifies the signature against the coordinator key it enrolled with, and every object by its BLAKE3 id: ' +
    'ferry agent apply-bundle FILE.',
  args: '<config-id>',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...dataDirOption,
    output: { type: 'string', short: 'o', valueName: 'FILE', description: 'where to write the bundle (- for stdout)' },
    system: { type: 'string', multiple: true, valueName: 'SYSTEM', description: 'only the closure for this system (default: every target)' },
    agents: { type: 'string', multiple: true, valueName: 'AGENT', description: 'an agent it is for (id or name; repeat for more)' },
    where: { type: 'string', multiple: true, valueName: 'K=V', description: 'the enrolled agents it is for: status=…, system=…, labels.site=…, facts.cpus=… (all must match)' },
    ttl: { type: 'string', valueName: 'DURATION', description: 'how long agents may apply it, e.g. 12h, 7d (default 30d, at most 366d)' },
    base: {
      type: 'string',
      valueName: 'CONFIG',
      description: 'a config the agents run: carry only what its closure lacks, and rebuilt files as templates over its files (agents lacking it refuse the bundle, naming it)',
    },
    ...jsonOption,
  },
  async run({ args, options, stdout, stderr }) {
    const output = stringOption(options, 'output');
    if (!output) throw new UsageError('-o FILE is required (- for stdout)');
    const named = stringListOption(options, 'agents');
    const where = stringListOption(options, 'where');
    if (named.length === 0 && where.length === 0) throw new UsageError('name who the bundle is for: --agents ID… and/or --where K=V');
    const ttlText = stringOption(options, 'ttl') ?? '30d';
    const ttlSeconds = parseDuration(ttlText);
    if (ttlSeconds === undefined || ttlSeconds <= 0) throw new UsageError(`--ttl '${ttlText}' is not a duration like 12h, 7d or 30d`);
    const [{ writeBundle, MAX_BUNDLE_TTL_MS }, { Coordinator }] = await Promise.all([import('../castore/index.js'), import('../coordinator/coordinator.js')]);
    if (ttlSeconds * 1000 > MAX_BUNDLE_TTL_MS) throw new UsageError(`--ttl '${ttlText}' is longer than ${MAX_BUNDLE_TTL_MS / 86_400_000} days`);
    const dataDir = dataDirFrom(options);
    if (!Coordinator.exists(dataDir)) throw new UsageError(`no coordinator in ${dataDir}`);
    const coordinator = Coordinator.open(dataDir);
    try {
      const row = coordinator.state.get('configs', args[0]!);
      if (!row) throw new UsageError(`no config ${args[0]} (see ferry graph log GRAPH)`);
      const systems = stringListOption(options, 'system');
      const baseId = stringOption(options, 'base');
      const baseRow = baseId === undefined ? undefined : coordinator.state.get('configs', baseId);
      if (baseId !== undefined && !baseRow) throw new UsageError(`--base: no config ${baseId} (see ferry graph log GRAPH)`);
      const audience = { agents: await resolveAudience(coordinator, named, where), where };
      const secrets = await bundledSecrets(coordinator, (row.body as ConfigBody).secrets ?? [], audience.agents, stderr);
      const bundle = writeBundle(coordinator.castore, coordinator.identity, { ...(row.body as ConfigBody), id: row.id }, {
        audience,
        ttlMs: ttlSeconds * 1000,
        ...(systems.length > 0 ? { systems } : {}),
        ...(baseRow ? { base: { ...(baseRow.body as ConfigBody), id: baseRow.id } } : {}),
        secrets,
      });
      const json = booleanOption(options, 'json');
      const progress = createProgress(stderr, 'writing bundle', 'bytes', json);
      // `-o -`: the bundle's exact bytes on standard output (a tar file, not text for a terminal).
      const out = output === '-' ? stdout.raw : createWriteStream(output);
      await writeAll(
        counted(bundle.bytes, (written) => progress.update(written, bundle.size)),
        out,
      );
      if (output === '-') return progress.done();
      await new Promise<void>((resolve, reject) => (out as ReturnType<typeof createWriteStream>).end((error?: Error | null) => (error ? reject(error) : resolve())));
      const summary = {
        configId: row.id,
        file: output,
        bytes: bundle.size,
        storePaths: bundle.storePaths,
        directories: bundle.directories,
        blobs: bundle.blobs,
        templates: bundle.templates,
        deltas: bundle.deltas,
        base: baseRow?.id ?? null,
        agents: bundle.agents,
        expiresAt: bundle.expiresAt,
      };
      progress.done();
      if (json) return writeJson(stdout, summary);
      const carried = baseRow ? `, only what config ${baseRow.id}'s closure lacks: ${bundle.blobs} blobs, ${bundle.templates} templates${bundle.deltas > 0 ? `, ${bundle.deltas} normalized blobs as ${formatBytes(bundle.deltaGroupBytes)} of changed groups` : ''}` : `: ${bundle.blobs} blobs`;
      stderr.write(term`wrote bundle of config ${row.id} to ${output}: ${formatBytes(bundle.size)}, ${bundle.storePaths} store paths (${bundle.directories} directories${carried})\n`);
      stderr.write(term`for ${bundle.agents.length} agent(s), until ${new Date(bundle.expiresAt).toISOString()}\n`);
    } finally {
      coordinator.close();
    }
  },
};

export const bundleCommands: Command[] = [create];

/**
 * The ids of the agents a bundle is for: each of `named` (an id or a
 * unique name) and every agent `where` selects, once each, sorted.
 * Refuses (UsageError) a name or id that is unknown or ambiguous, an agent
 * that is not enrolled (waiting for approval, rejected or revoked: the
 * coordinator would not deploy to it either), and a --where that selects
 * no enrolled agent. Agents enrolled later are not included: the list is
 * fixed in the signed manifest.
 */
/**
 * The latest ciphertext of each secret `refs` names, with its recipients,
 * for the manifest (docs/secrets.md, "Bundles"): already encrypted to the
 * agents, so the bundle holds nothing the coordinator could read either.
 * Refuses (UsageError) a secret that is not set or whose ciphertext this
 * database lacks; warns on `stderr` of audience agents that are not
 * recipients (they will fail naming it, as online).
 */
async function bundledSecrets(coordinator: Coordinator, refs: readonly { name: string }[], audience: readonly KeyId[], stderr: TerminalOutput): Promise<BundledSecret[]> {
  if (refs.length === 0) return [];
  const { secretCiphertexts } = await import('../coordinator/db/secret-ciphertexts.js');
  const store = secretCiphertexts(coordinator);
  return refs.map(({ name }) => {
    const row = coordinator.state.get('secrets', name);
    if (!row || row.removed) throw new UsageError(`the config references secret '${name}', which is not set (ferry secrets set ${name} …)`);
    const ciphertext = store.latest(name, row.version, row.ciphertextSha256);
    if (!ciphertext) throw new UsageError(`this coordinator lacks secret '${name}''s ciphertext (a database rebuilt from an export?): set it again`);
    const missing = audience.filter((agentId) => !row.recipients.includes(agentId));
    if (missing.length > 0) stderr.write(term`warning: secret ${name} is not encrypted to ${missing.length} agent(s) of the bundle (they will fail naming it): ferry secrets rekey ${name}\n`);
    return { name, version: row.version, recipients: row.recipients as KeyId[], ciphertext: ciphertext.toString('base64') };
  });
}

async function resolveAudience(coordinator: Coordinator, named: readonly string[], where: readonly string[]): Promise<KeyId[]> {
  const { listAgents, parseWhere } = await import('../coordinator/api/queries.js');
  const all = coordinator.state.all('agents');
  const ids = new Set<string>();
  for (const reference of named) {
    const matches = all.filter((agent) => agent.id === reference || agent.name === reference);
    if (matches.length === 0) throw new UsageError(`no agent '${reference}' (see ferry agents ls)`);
    if (matches.length > 1) throw new UsageError(`'${reference}' names ${matches.length} agents: use the id`);
    const agent = matches[0]!;
    if (agent.status !== 'enrolled') throw new UsageError(`agent ${agent.name} (${agent.id}) is ${agent.status}, not enrolled: it cannot be sent a bundle`);
    ids.add(agent.id);
  }
  if (where.length > 0) {
    const selected = listAgents(coordinator.state, parseWhere(where), (id) => coordinator.presence.presenceOf(id)).filter((agent) => agent.status === 'enrolled');
    if (selected.length === 0) throw new UsageError(`--where ${where.join(' --where ')} selects no enrolled agent (see ferry agents ls --where …)`);
    for (const agent of selected) ids.add(agent.id);
  }
  // Ids from the coordinator's state, validated on the way in; parsed again for their type.
  return [...ids].sort().map((id) => KeyIdSchema.parse(id));
}
