/**
 * `ferry secrets set|ls|rekey|rm` (docs/secrets.md): values are read from a
 * file or standard input (never the command line, which other users of the
 * machine can read in /proc), encrypted here to the selected agents' keys
 * and to the admin's own, and only the ciphertext is sent. `rekey`
 * decrypts here with the admin's key and encrypts again to the agents the
 * selector matches now.
 */
import { createReadStream } from 'node:fs';
import type { CoordinatorHttpClient } from '../protocol/http-client.js';
import type { Identity, KeyId } from '../protocol/identity.js';
import { KeyIdSchema } from '../protocol/identity.js';
import { MAX_SECRET_BYTES, SecretNameSchema } from '../protocol/secret-refs.js';
import type { SecretSelector } from '../protocol/api/secrets.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { table } from './format.js';
import { term } from './terminal-text.js';

const common = { ...connectionOptions, ...jsonOption };

function secretName(text: string): string {
  const parsed = SecretNameSchema.safeParse(text);
  if (!parsed.success) throw new UsageError(`secret name '${text.slice(0, 140)}': ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

/** `source` read whole; refuses (UsageError naming `what`) more than MAX_SECRET_BYTES or nothing. */
async function readValue(source: NodeJS.ReadableStream, what: string): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of source) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array);
    length += bytes.length;
    if (length > MAX_SECRET_BYTES) throw new UsageError(`${what}: a secret is at most ${MAX_SECRET_BYTES} bytes`);
    chunks.push(bytes);
  }
  if (length === 0) throw new UsageError(`${what} is empty: nothing to set`);
  return new Uint8Array(Buffer.concat(chunks));
}

/** Every agent the coordinator lists for `where` (all pages). */
async function allAgents(client: CoordinatorHttpClient, where: readonly string[]) {
  const agents = [];
  let after: string | undefined;
  for (;;) {
    const page = await client.call('agents.list', { limit: 1000, ...(where.length > 0 ? { where: [...where] } : {}), ...(after ? { after } : {}) });
    agents.push(...page.agents);
    if (page.next === null) return agents;
    after = page.next;
  }
}

/**
 * The agents `selector` names now: the enrolled agents its clauses match,
 * or those of its list still enrolled. Sorted ids.
 */
export async function selectedAgents(client: CoordinatorHttpClient, selector: SecretSelector): Promise<KeyId[]> {
  if ('where' in selector) {
    const agents = await allAgents(client, selector.where);
    return agents.filter((agent) => agent.status === 'enrolled').map((agent) => KeyIdSchema.parse(agent.id)).sort();
  }
  const all = await allAgents(client, []);
  const enrolled = new Set(all.filter((agent) => agent.status === 'enrolled').map((agent) => agent.id));
  return selector.agents.filter((id) => enrolled.has(id)).sort();
}

/** `--agents` (ids or unique names) as ids; refuses an unknown, ambiguous or not enrolled one. */
async function namedAgents(client: CoordinatorHttpClient, named: readonly string[]): Promise<KeyId[]> {
  const all = await allAgents(client, []);
  const ids = new Set<KeyId>();
  for (const reference of named.flatMap((value) => value.split(',')).filter((value) => value !== '')) {
    const matches = all.filter((agent) => agent.id === reference || agent.name === reference);
    if (matches.length === 0) throw new UsageError(`--agents: no agent '${reference}' (see ferry agents ls)`);
    if (matches.length > 1) throw new UsageError(`--agents: '${reference}' names ${matches.length} agents: use the id`);
    const agent = matches[0]!;
    if (agent.status !== 'enrolled') throw new UsageError(`--agents: agent ${agent.name} (${agent.id}) is ${agent.status}, not enrolled`);
    ids.add(KeyIdSchema.parse(agent.id));
  }
  return [...ids].sort();
}

/** Encrypts `value` to `agents` and the admin's own key, and records it as the secret's next version. */
export async function encryptAndSet(client: CoordinatorHttpClient, identity: Identity, name: string, value: Uint8Array, agents: readonly KeyId[], selector: SecretSelector) {
  const { encryptSecret, recipientOfKey } = await import('../protocol/secrets.js');
  // Recipients from the agent ids alone: the coordinator cannot slip in a key of its own (docs/secrets.md).
  const recipients = [...agents, identity.keyId].map((keyId) => recipientOfKey(keyId));
  const ciphertext = await encryptSecret(value, recipients);
  value.fill(0);
  return client.call('secrets.set', { name, ciphertext: Buffer.from(ciphertext).toString('base64'), recipients: [...agents], selector });
}

const set: Command = {
  path: ['secrets', 'set'],
  summary: 'encrypt a value (from --file or standard input) to the selected agents and your key, and store the ciphertext (admins)',
  args: '<name>',
  description:
    'The value is encrypted here, in age format, to each selected agent (a key derived from its enrolled ed25519 key) and to ' +
    'your own key; the coordinator stores and serves only the ciphertext. Each set is a new version: agents whose config ' +
    'references the secret (config submit --secret) re-activate. --where is kept, so ferry secrets rekey adds agents that ' +
    `match it later. Never give a value on the command line. At most ${MAX_SECRET_BYTES} bytes.`,
  minArgs: 1,
  maxArgs: 1,
  options: {
    where: { type: 'string', multiple: true, valueName: 'K=V', description: 'the enrolled agents matching (labels.site=…, system=…; all must match)' },
    agents: { type: 'string', multiple: true, valueName: 'AGENT', description: 'agents by id or name (repeat, or comma-separated)' },
    file: { type: 'string', valueName: 'FILE', description: 'read the value from FILE (default: standard input)' },
    ...common,
  },
  async run({ args, options, stdout, stdin }) {
    const name = secretName(args[0]!);
    const where = stringListOption(options, 'where');
    const named = stringListOption(options, 'agents');
    if ((where.length > 0) === (named.length > 0)) throw new UsageError('name who may read it: --where K=V… or --agents ID…, one of the two');
    const client = clientFrom(options);
    if (!client.identity) throw new UsageError('a key is needed: the value is encrypted to it too (for rekey)');
    const file = stringOption(options, 'file');
    const value = await readValue(file === undefined || file === '-' ? stdin : createReadStream(file), file === undefined || file === '-' ? 'standard input' : `--file ${file}`);
    let agents: KeyId[];
    let selector: SecretSelector;
    if (where.length > 0) {
      selector = { where };
      agents = await selectedAgents(client, selector);
      if (agents.length === 0) throw new UsageError(`--where ${where.join(' --where ')} selects no enrolled agent (see ferry agents ls --where …)`);
    } else {
      agents = await namedAgents(client, named);
      selector = { agents };
    }
    const result = await encryptAndSet(client, client.identity, name, value, agents, selector);
    if (booleanOption(options, 'json')) return writeJson(stdout, { ...result, recipients: agents });
    stdout.write(term`secret ${name} version ${result.version}: encrypted to ${agents.length} agent(s) and your key (audit event ${result.seq})\n`);
  },
};

const ls: Command = {
  path: ['secrets', 'ls'],
  summary: 'secrets: version, recipients, and agents the selector matches that need a rekey (admins)',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const { secrets } = await clientFrom(options).call('secrets.list');
    if (booleanOption(options, 'json')) return writeJson(stdout, secrets);
    stdout.write(
      table(
        ['SECRET', 'VERSION', 'RECIPIENTS', 'SELECTOR', 'NEEDS REKEY'],
        secrets.map((secret) => {
          const needs = [
            secret.needsRekey.length > 0 ? `${secret.needsRekey.length} new agent(s)` : '',
            secret.revokedRecipients.length > 0 ? `${secret.revokedRecipients.length} revoked recipient(s)` : '',
          ].filter((part) => part !== '');
          return [
            secret.name,
            String(secret.version),
            String(secret.recipients.length),
            'where' in secret.selector ? secret.selector.where.join(' ') : `${secret.selector.agents.length} named agent(s)`,
            needs.length > 0 ? `yes: ${needs.join(', ')}` : '-',
          ];
        }),
      ),
    );
  },
};

const rekey: Command = {
  path: ['secrets', 'rekey'],
  summary: "re-encrypt a secret to the agents its selector matches now (a new version; needs your key among its recipients)",
  args: '<name>',
  description:
    'Decrypts the latest version here with your key, then encrypts it again to the enrolled agents the selector matches ' +
    'now (revoked ones are dropped: they may still hold what they already had) and records a new version.',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const name = secretName(args[0]!);
    const client = clientFrom(options);
    if (!client.identity) throw new UsageError('a key is needed to decrypt the secret');
    const secret = await client.call('secrets.show', { name });
    if (secret.ciphertext === null) throw new UsageError(`the coordinator does not hold secret ${name}'s ciphertext (a database rebuilt from an export?): set it again`);
    const { decryptSecret, SecretError } = await import('../protocol/secrets.js');
    const seed = client.identity.seedForDecryption();
    let value: Uint8Array;
    try {
      value = await decryptSecret(new Uint8Array(Buffer.from(secret.ciphertext, 'base64')), seed);
    } catch (error) {
      if (error instanceof SecretError && error.code === 'SECRET_NOT_FOR_THIS_KEY') {
        throw new UsageError(`secret ${name} is not encrypted to your key ${client.identity.keyId}: its setter ${secret.setter} can rekey it, or set it again`);
      }
      throw error;
    } finally {
      seed.fill(0);
    }
    const agents = await selectedAgents(client, secret.selector);
    if (agents.length === 0) throw new UsageError(`the selector of secret ${name} matches no enrolled agent now`);
    const result = await encryptAndSet(client, client.identity, name, value, agents, secret.selector);
    const added = agents.filter((id) => !secret.recipients.includes(id)).length;
    const dropped = secret.recipients.filter((id) => !agents.includes(id)).length;
    if (booleanOption(options, 'json')) return writeJson(stdout, { ...result, recipients: agents, added, dropped });
    stdout.write(term`secret ${name} version ${result.version}: ${agents.length} agent(s), ${added} added, ${dropped} dropped (audit event ${result.seq})\n`);
  },
};

const rm: Command = {
  path: ['secrets', 'rm'],
  summary: 'remove a secret (refused while a graph head or pin uses it) (admins)',
  args: '<name>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const name = secretName(args[0]!);
    const result = await clientFrom(options).call('secrets.remove', { name });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`secret ${name} removed (audit event ${result.seq})\n`);
  },
};

export const secretCommands: Command[] = [set, ls, rekey, rm];
