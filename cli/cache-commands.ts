/**
 * `ferry cache key|netrc`: what a machine with Nix needs to use the
 * coordinator's Nix binary cache (`<url>/nix-cache`): the public key to
 * trust, and netrc credentials derived from a Ferry key. See docs/nix-cache.md.
 */
import { nixCacheNetrcLine, nixCachePassword } from '../coordinator/nix-cache/credentials.js';
import { formatNixPublicKey, parseNixPublicKey } from '../nix/index.js';
import { keyIdOf } from '../protocol/identity.js';
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, type Command, type OptionValues } from './command.js';
import { clientFrom, connectionOptions, readContexts } from './contexts.js';
import { term } from './terminal-text.js';

/** The coordinator URL and, when the chosen context is for that URL, the coordinator key it pinned. */
function coordinatorOf(options: OptionValues): { url: string; pinnedKey?: string } {
  const contexts = readContexts();
  const name = stringOption(options, 'context') ?? process.env.FERRY_CONTEXT ?? contexts.current ?? undefined;
  const context = name ? contexts.contexts[name] : undefined;
  if (name && !context && stringOption(options, 'context')) throw new UsageError(`no context named '${name}' (see ferry context ls)`);
  const url = stringOption(options, 'url') ?? process.env.FERRY_URL ?? context?.url;
  if (!url) throw new UsageError('no coordinator configured: pass --url URL, or add a context (ferry context add)');
  return { url, ...(context?.coordinatorKey && context.url === url ? { pinnedKey: context.coordinatorKey } : {}) };
}

function cacheUrlOf(url: string): string {
  return `${url.replace(/\/+$/, '')}/nix-cache`;
}

const key: Command = {
  path: ['cache', 'key'],
  summary: "print the coordinator's Nix signing key, for trusted-public-keys",
  description:
    'Fetches the public key the coordinator signs its narinfos with (GET <url>/nix-cache/public-key) and ' +
    "prints it as Nix wants it, `name:base64`. When the CLI context pinned the coordinator's key (ferry " +
    'coordinator init does), the fetched key must be that one. Use it on machines with Nix:\n\n' +
    '  substituters = http://HOST:7070/nix-cache\n' +
    '  trusted-public-keys = <this line>\n' +
    '  netrc-file = /etc/nix/netrc        (see ferry cache netrc)',
  maxArgs: 0,
  options: { context: connectionOptions.context!, url: connectionOptions.url!, ...jsonOption },
  async run({ options, stdout }) {
    const { url, pinnedKey } = coordinatorOf(options);
    const cacheUrl = cacheUrlOf(url);
    let response: Response;
    try {
      response = await fetch(`${cacheUrl}/public-key`);
    } catch (error) {
      throw new Error(`cannot reach the coordinator at ${url}: ${(error as Error).message}`);
    }
    if (!response.ok) throw new Error(`${cacheUrl}/public-key answered HTTP ${response.status}`);
    const text = (await response.text()).slice(0, 1024).trim();
    const publicKey = parseNixPublicKey(text);
    if (pinnedKey !== undefined && keyIdOf(publicKey.publicKey) !== pinnedKey) {
      throw new Error(`the coordinator at ${url} signs with key ${keyIdOf(publicKey.publicKey)}, not the pinned ${pinnedKey}: refusing to print it`);
    }
    const line = formatNixPublicKey(publicKey);
    if (booleanOption(options, 'json')) return writeJson(stdout, { publicKey: line, keyName: publicKey.name, cacheUrl, pinned: pinnedKey !== undefined });
    stdout.write(term`${line}\n`);
  },
};

const netrc: Command = {
  path: ['cache', 'netrc'],
  summary: 'print a netrc line that lets Nix use the cache with your Ferry key',
  description:
    'Derives the credentials of the key of the current context (or --key): login = the key id, password = ' +
    'base64 of its ed25519 signature of "ferry-nix-cache-v1", a newline and the key id. Nothing is sent: the coordinator ' +
    'verifies the signature and checks the key on each request, so revoking the key revokes the line. ' +
    'Pushers, operators and admins may upload (nix copy --to); viewers and agents may read. Append it to ' +
    'the file Nix reads (netrc-file, default /etc/nix/netrc). Treat it like a password.',
  maxArgs: 0,
  options: { ...connectionOptions, ...jsonOption },
  async run({ options, stdout }) {
    const client = clientFrom(options);
    const identity = client.identity!;
    const line = nixCacheNetrcLine(client.baseUrl, identity);
    if (booleanOption(options, 'json')) {
      return writeJson(stdout, { machine: new URL(client.baseUrl).hostname.replace(/^\[|\]$/g, ''), login: identity.keyId, password: nixCachePassword(identity), cacheUrl: cacheUrlOf(client.baseUrl) });
    }
    stdout.write(term`${line}\n`);
  },
};

export const cacheCommands: Command[] = [key, netrc];
