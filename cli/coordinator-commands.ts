/** `ferry coordinator init|serve` and `ferry context …`. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createIdentityFile, loadIdentity } from '../protocol/identity.js';
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { configDir, fingerprintOption, pinnedFingerprintOf, readContexts, saveContext, writeContexts } from './contexts.js';
import { dataDirFrom, dataDirOption } from './data-dir.js';
import { table } from './format.js';
import { untilInterrupted } from './io.js';
import { block, term } from './terminal-text.js';

const DEFAULT_LISTEN = '127.0.0.1:7070';

/** `HOST:PORT` (an IPv6 host in brackets) of option `--<option>`; refuses (UsageError naming the option) anything else. */
export function parseListen(text: string, option = 'listen'): { host: string; port: number } {
  const match = /^(.*):(\d+)$/.exec(text);
  if (!match || Number(match[2]) > 65535) throw new UsageError(`--${option} '${text}' is not HOST:PORT`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

const init: Command = {
  path: ['coordinator', 'init'],
  summary: 'create a coordinator: its key, database and first admin key',
  description:
    'Creates the data directory with the coordinator key (ed25519, 0600) and its database, records the ' +
    'first admin key in the audit log, and saves a CLI context pointing at it. The admin key is ' +
    '--admin-key (a Ferry key file or an unencrypted OpenSSH ed25519 private key, e.g. ~/.ssh/id_ed25519) ' +
    'or a new key generated under the Ferry config directory.',
  maxArgs: 0,
  options: {
    ...dataDirOption,
    name: { type: 'string', valueName: 'NAME', description: 'name of this coordinator and of its CLI context (default: ferry)' },
    'admin-key': { type: 'string', valueName: 'FILE', description: 'existing private key to make the first admin' },
    url: { type: 'string', valueName: 'URL', description: `where the CLI will reach it (default: http://${DEFAULT_LISTEN})` },
    ...jsonOption,
  },
  async run({ options, stdout }) {
    const [{ Coordinator }, { addKey }] = await Promise.all([import('../coordinator/coordinator.js'), import('../coordinator/domain/commands.js')]);
    const dataDir = dataDirFrom(options);
    const name = stringOption(options, 'name') ?? 'ferry';
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new UsageError(`--name '${name}' may only use letters, digits, '.', '_' and '-'`);
    if (Coordinator.exists(dataDir)) throw new UsageError(`${dataDir} already holds a coordinator (start it with: ferry coordinator serve --data-dir ${dataDir})`);
    const adminKeyFile = path.resolve(stringOption(options, 'admin-key') ?? path.join(configDir(), 'keys', `${name}-admin.key`));
    const admin = existsSync(adminKeyFile) ? loadIdentity(adminKeyFile) : createIdentityFile(adminKeyFile);
    const coordinator = Coordinator.open(dataDir);
    try {
      const self = { keyId: coordinator.identity.keyId, role: 'coordinator' as const };
      coordinator.record(self, () => ({ action: 'coordinator.init', subject: coordinator.identity.keyId, payload: { name, coordinatorKey: coordinator.identity.keyId } }));
      coordinator.record(self, (context) => addKey(context, { keyId: admin.keyId, role: 'admin', label: 'first admin (coordinator init)' }));
      const url = stringOption(options, 'url') ?? `http://${DEFAULT_LISTEN}`;
      const tlsFingerprint = coordinator.tls.fingerprint;
      saveContext(name, { url, keyFile: adminKeyFile, coordinatorKey: coordinator.identity.keyId, tlsFingerprint }, true);
      const result = { dataDir, name, coordinatorKey: coordinator.identity.keyId, tlsFingerprint, adminKey: admin.keyId, adminKeyFile, context: name, url };
      if (booleanOption(options, 'json')) return writeJson(stdout, result);
      stdout.write(
        term`${[
          term`Created coordinator '${name}' in ${dataDir}\n`,
          term`  coordinator key: ${coordinator.identity.keyId}\n`,
          term`  first admin key: ${admin.keyId} (${adminKeyFile})\n`,
          term`  TLS fingerprint: ${tlsFingerprint}\n`,
          term`  CLI context '${name}' -> ${url} (now current)\n\n`,
          term`Start it with:   ferry coordinator serve --data-dir ${dataDir}\n`,
        ]}`,
      );
    } finally {
      coordinator.close();
    }
  },
};

const serve: Command = {
  path: ['coordinator', 'serve'],
  summary: 'run the coordinator (HTTP API) until interrupted',
  maxArgs: 0,
  options: {
    ...dataDirOption,
    listen: { type: 'string', valueName: 'HOST:PORT', description: `HTTP address (default: ${DEFAULT_LISTEN}; port 0 picks one)` },
    'quic-listen': { type: 'string', valueName: 'HOST:PORT', description: 'QUIC (UDP) address of the data plane (default: the HTTP host and port; port 0 picks one)' },
    'no-quic': { type: 'boolean', description: 'serve the data plane over HTTP only' },
    'no-wire-compression': { type: 'boolean', description: 'never send or cache zstd on the data plane, whatever clients accept (default: compress for clients that ask, as agents and pushes do off loopback)' },
    init: { type: 'boolean', description: 'initialise the data directory first if it holds no coordinator' },
    'nix-cache-public': { type: 'boolean', description: 'let anyone read the Nix binary cache at /nix-cache (default: a reading key is required; see ferry cache netrc)' },
    'nix-cache-compression': { type: 'string', valueName: 'none|zstd', description: 'compression of the NARs the Nix cache serves (default: none)' },
    'metrics-listen': {
      type: 'string',
      valueName: 'HOST:PORT',
      description: 'serve Prometheus metrics at http://HOST:PORT/metrics to anyone who can reach that address (bind it where only your monitoring can; default: not served)',
    },
    'presence-stale': { type: 'string', valueName: 'SECONDS', description: 'an agent holding no watch and unheard of this long is stale (default 300)' },
    'presence-offline': { type: 'string', valueName: 'SECONDS', description: '… and this long, offline (default 900)' },
    'keep-configs': { type: 'string', valueName: 'N', description: 'newest configs per graph that ferry gc keeps when it does not say (default 10)' },
    'gc-grace': { type: 'string', valueName: 'SECONDS', description: 'ferry gc keeps what was pushed this recently, though no config names it yet (default 3600)' },
    'max-connections': {
      type: 'string',
      valueName: 'N',
      description: 'HTTP and HTTPS connections open at once; more are closed as they arrive (default: 32768; each open one costs ~20 KiB over HTTP, ~75 KiB over HTTPS)',
    },
  },
  async run({ options, stdout, stderr, stdin }) {
    // The server's modules load only here: every other command starts without them.
    const [{ Coordinator }, { FERRY_VERSION }, { startCoordinator }, { DEFAULT_PRESENCE_THRESHOLDS }] = await Promise.all([
      import('../coordinator/coordinator.js'),
      import('../protocol/version.js'),
      import('../coordinator/start.js'),
      import('../coordinator/db/agent-presence.js'),
    ]);
    const dataDir = dataDirFrom(options);
    if (!Coordinator.exists(dataDir)) {
      if (!booleanOption(options, 'init')) throw new UsageError(`no coordinator in ${dataDir}: create one with ferry coordinator init --data-dir ${dataDir}`);
      await init.run({ args: [], options: { 'data-dir': dataDir }, stdout, stderr, stdin });
    }
    const listen = parseListen(stringOption(options, 'listen') ?? DEFAULT_LISTEN);
    const compression = stringOption(options, 'nix-cache-compression') ?? 'none';
    if (compression !== 'none' && compression !== 'zstd') throw new UsageError(`--nix-cache-compression '${compression}' is not none or zstd`);
    const nixCachePublic = booleanOption(options, 'nix-cache-public');
    const maxConnectionsText = stringOption(options, 'max-connections');
    const maxConnections = maxConnectionsText === undefined ? undefined : Number(maxConnectionsText);
    if (maxConnections !== undefined && !(Number.isSafeInteger(maxConnections) && maxConnections >= 1)) {
      throw new UsageError(`--max-connections '${maxConnectionsText}' is not a whole number of at least 1`);
    }
    const seconds = (name: string): number | undefined => {
      const text = stringOption(options, name);
      if (text === undefined) return undefined;
      const value = Number(text);
      if (!(Number.isSafeInteger(value) && value >= 1)) throw new UsageError(`--${name} '${text}' is not a whole number of seconds of at least 1`);
      return value * 1000;
    };
    const staleAfterMs = seconds('presence-stale');
    const offlineAfterMs = seconds('presence-offline');
    const presence = { staleAfterMs: staleAfterMs ?? DEFAULT_PRESENCE_THRESHOLDS.staleAfterMs, offlineAfterMs: offlineAfterMs ?? Math.max(DEFAULT_PRESENCE_THRESHOLDS.offlineAfterMs, staleAfterMs ?? 0) };
    if (presence.offlineAfterMs < presence.staleAfterMs) throw new UsageError('--presence-offline must be at least --presence-stale');
    const keepConfigsText = stringOption(options, 'keep-configs');
    const keepConfigs = keepConfigsText === undefined ? undefined : Number(keepConfigsText);
    if (keepConfigs !== undefined && !(Number.isSafeInteger(keepConfigs) && keepConfigs >= 1 && keepConfigs <= 10_000)) throw new UsageError(`--keep-configs '${keepConfigsText}' is not a whole number from 1 to 10000`);
    const graceMs = seconds('gc-grace');
    const retention = { ...(keepConfigs !== undefined ? { keepConfigs } : {}), ...(graceMs !== undefined ? { graceSeconds: graceMs / 1000 } : {}) };
    const quicListen = stringOption(options, 'quic-listen');
    const metricsListen = stringOption(options, 'metrics-listen');
    // Refusal lines quote what clients sent (paths, messages): escaped like everything else on the
    // terminal, an entry's further lines (a stack) indented.
    const log = (line: string): void => stderr.write(term`${block(line).indented('  ')}\n`);
    const running = await startCoordinator({
      dataDir,
      listen,
      quic: booleanOption(options, 'no-quic') ? false : quicListen ? parseListen(quicListen) : undefined,
      log,
      http: { nixCache: { publicRead: nixCachePublic, compression }, ...(maxConnections === undefined ? {} : { maxConnections }) },
      coordinator: { wireCompression: !booleanOption(options, 'no-wire-compression'), presence, retention },
      ...(metricsListen ? { metricsListen: parseListen(metricsListen) } : {}),
    });
    const { coordinator, url, quic } = running;
    stdout.write(
      term`${[
        term`ferry coordinator '${coordinator.name}' ${FERRY_VERSION}\n`,
        term`  data:            ${dataDir}\n`,
        term`  HTTP API:        ${url} (and HTTPS with the pinned certificate, for agents)\n`,
        term`  QUIC data plane: ${quic ? `${quic.address} (ALPN ferry/1)` : 'off (HTTP only)'}\n`,
        term`  Nix cache:       ${url}/nix-cache (reads: ${nixCachePublic ? 'public' : 'credentials'}, NARs: ${compression}; see ferry cache key)\n`,
        term`  Metrics:         ${running.metrics ? running.metrics.url : 'not served (--metrics-listen HOST:PORT)'}\n`,
        term`  TLS fingerprint: ${coordinator.tls.fingerprint}\n`,
        term`  coordinator key: ${coordinator.identity.keyId}\n`,
        term`  audit log:       ${coordinator.lastSeq} events\n\n`,
        term`Enroll a machine: ferry tokens create --uses 1   (prints a join string for ferry agent enroll)\n`,
      ]}`,
    );
    await untilInterrupted();
    await running.close();
    stdout.write(term`coordinator stopped\n`);
  },
};

const contextAdd: Command = {
  path: ['context', 'add'],
  summary: 'remember a coordinator: its URL and the key to sign with',
  args: '<name>',
  minArgs: 1,
  maxArgs: 1,
  options: {
    url: { type: 'string', valueName: 'URL', description: 'coordinator URL, e.g. http://10.0.0.5:7070' },
    key: { type: 'string', valueName: 'FILE', description: 'private key file (Ferry or OpenSSH ed25519)' },
    fingerprint: {
      type: 'string',
      valueName: 'SHA256',
      description: "the coordinator's TLS fingerprint (ferry coordinator serve prints it): pinned for QUIC, and the CLI then talks TLS to an http:// URL's port",
    },
    use: { type: 'boolean', description: 'make it the current context' },
  },
  async run({ args, options, stdout }) {
    const url = stringOption(options, 'url');
    const keyFile = stringOption(options, 'key');
    if (!url || !keyFile) throw new UsageError('--url and --key are required');
    const tlsFingerprint = fingerprintOption(stringOption(options, 'fingerprint'));
    loadIdentity(keyFile);
    saveContext(args[0]!, { url, keyFile: path.resolve(keyFile), ...(tlsFingerprint ? { tlsFingerprint } : {}) }, booleanOption(options, 'use'));
    stdout.write(term`saved context '${args[0]}'\n`);
  },
};

const contextUse: Command = {
  path: ['context', 'use'],
  summary: 'make a context the current one',
  args: '<name>',
  minArgs: 1,
  maxArgs: 1,
  async run({ args, stdout }) {
    const contexts = readContexts();
    if (!contexts.contexts[args[0]!]) throw new UsageError(`no context named '${args[0]}' (see ferry context ls)`);
    contexts.current = args[0]!;
    writeContexts(contexts);
    stdout.write(term`now using '${args[0]}'\n`);
  },
};

const contextLs: Command = {
  path: ['context', 'ls'],
  summary: 'list the coordinators this CLI knows',
  maxArgs: 0,
  options: jsonOption,
  async run({ options, stdout }) {
    const contexts = readContexts();
    if (booleanOption(options, 'json')) return writeJson(stdout, contexts);
    const rows = Object.entries(contexts.contexts).map(([name, context]) => [
      name === contexts.current ? `* ${name}` : `  ${name}`,
      context.url,
      // How the CLI's HTTP requests are protected: its own pinned certificate, a CA's, or not at all.
      pinnedFingerprintOf(context) ? 'pinned' : context.url.startsWith('https:') ? 'CA' : 'none',
      context.keyFile,
    ]);
    stdout.write(rows.length === 0 ? term`no contexts (ferry coordinator init, or ferry context add)\n` : table(['  NAME', 'URL', 'TLS', 'KEY'], rows));
  },
};

export const coordinatorCommands: Command[] = [init, serve, contextAdd, contextUse, contextLs];
