/**
 * Site relays (docs/relays.md): `ferry relay …` on the relay's machine
 * (enroll, run, status) and `ferry relays …` for operators (ls, assign,
 * upstream, revoke).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { RelayStatusSchema, type RelayStatus } from '../protocol/relays.js';
import { booleanOption, jsonOption, stringListOption, stringOption, UsageError, writeJson, type Command, type OptionSpec, type OptionValues } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { parseListen } from './coordinator-commands.js';
import { table } from './format.js';
import { formatBytes } from './progress.js';
import { term, type TerminalText } from './terminal-text.js';

/** The relay's modules (castore, the data plane, node:http2) load only for the command that runs. */
const loadRelay = () => import('../relay/index.js');

const stateDirOption: Record<string, OptionSpec> = {
  'state-dir': { type: 'string', valueName: 'DIR', description: 'relay state directory (default: $FERRY_RELAY_STATE_DIR or /var/lib/ferry-relay)' },
};

function stateDirFrom(options: OptionValues): string {
  return path.resolve(stringOption(options, 'state-dir') ?? process.env.FERRY_RELAY_STATE_DIR ?? '/var/lib/ferry-relay');
}

const common = { ...connectionOptions, ...jsonOption };

const enroll: Command = {
  path: ['relay', 'enroll'],
  summary: 'enroll this machine as a site relay, with a join string from `ferry tokens create --relay`',
  args: '<join-string>',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...stateDirOption,
    url: { type: 'string', valueName: 'URL', description: "where the site's agents reach this relay: https://HOST:PORT (required)" },
    listen: { type: 'string', valueName: 'HOST:PORT', description: "address to listen on (default 0.0.0.0 and the URL's port)" },
    name: { type: 'string', valueName: 'NAME', description: 'relay name (default: the hostname)' },
    'cache-size': { type: 'string', valueName: 'BYTES', description: 'cache size limit in bytes, least recently used closures evicted first (default 10 GiB)' },
    ...jsonOption,
  },
  async run({ args, options, stdout }) {
    const url = stringOption(options, 'url');
    if (!url) throw new UsageError('--url https://HOST:PORT is required: the coordinator tells agents where to reach this relay');
    const cacheSize = stringOption(options, 'cache-size');
    const cacheBytes = cacheSize === undefined ? undefined : Number(cacheSize);
    if (cacheBytes !== undefined && (!Number.isSafeInteger(cacheBytes) || cacheBytes < 1)) throw new UsageError('--cache-size must be a positive number of bytes');
    const { enrollRelay } = await loadRelay();
    const stateDir = stateDirFrom(options);
    const listen = stringOption(options, 'listen');
    const name = stringOption(options, 'name');
    const result = await enrollRelay(args[0]!, { stateDir, url, ...(listen ? { listen } : {}), ...(name ? { name } : {}), ...(cacheBytes ? { cacheBytes } : {}) });
    if (booleanOption(options, 'json')) return writeJson(stdout, { ...result, stateDir });
    stdout.write(term`relay ${result.relayId}: enrolled (certificate ${result.fingerprint})\nstate: ${stateDir}\nassign agents to it: ferry relays assign ${result.relayId} --where labels.site=…\nstart it with: ferry relay run --state-dir ${stateDir}\n`);
    return 0;
  },
};

const run: Command = {
  path: ['relay', 'run'],
  summary: "run the relay: serve the site's agents what the coordinator granted them, fetching each object once",
  maxArgs: 0,
  options: {
    ...stateDirOption,
    'metrics-listen': {
      type: 'string',
      valueName: 'HOST:PORT',
      description: 'serve Prometheus metrics at http://HOST:PORT/metrics to anyone who can reach that address (bind it where only your monitoring can; default: not served)',
    },
    'no-prefetch': { type: 'boolean', description: "fetch only what agents ask for, not the closures the coordinator says they are to run before they ask" },
    'no-quic': { type: 'boolean', description: 'serve HTTPS only: no QUIC listener on UDP at the HTTPS port (agents then fetch over HTTPS)' },
  },
  async run({ options, stderr }) {
    const metricsListen = stringOption(options, 'metrics-listen');
    const { RelayServer } = await loadRelay();
    const relay = await RelayServer.start(stateDirFrom(options), {
      log: (line) => stderr.write(term`${line}\n`),
      // Test only: a relay that corrupts what it serves (docs/relays.md, "Testing").
      flipBlobBytes: process.env.FERRY_RELAY_TEST_FAULT === 'flip-blob-bytes',
      prefetch: !booleanOption(options, 'no-prefetch'),
      quic: !booleanOption(options, 'no-quic'),
      ...(metricsListen ? { metricsListen: parseListen(metricsListen, 'metrics-listen') } : {}),
    });
    const status = relay.status();
    stderr.write(term`ferry relay ${status.relayId} listening on ${status.listening ?? '?'}${status.quicListening ? ` (QUIC on UDP ${status.quicListening})` : ' (HTTPS only)'} for ${status.coordinator}\n`);
    if (relay.metrics) stderr.write(term`ferry relay: metrics at ${relay.metrics.url}\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await relay.close();
    return 0;
  },
};

const status: Command = {
  path: ['relay', 'status'],
  summary: 'the relay: cache size, hits and misses, bytes served and fetched, agents served',
  maxArgs: 0,
  options: { ...stateDirOption, ...jsonOption },
  async run({ options, stdout }) {
    const file = path.join(stateDirFrom(options), 'status.json');
    if (!existsSync(file)) throw new UsageError(`${file} does not exist: is this a relay's state dir, and did it run?`);
    const current = RelayStatusSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
    if (booleanOption(options, 'json')) return writeJson(stdout, current);
    const asked = current.hits + current.misses;
    stdout.write(
      term`${[
        term`relay       ${current.relayId}\ncoordinator ${current.coordinator}\nlistening   ${current.listening ?? '-'}${current.quicListening ? `, QUIC ${current.quicListening}` : ''}\n`,
        current.requests ? term`requests    ${current.requests.quic} over QUIC, ${current.requests.https} over HTTPS\n` : '',
        term`cache       ${formatBytes(current.cache.bytes)} of ${formatBytes(current.cache.limitBytes)}, ${current.cache.blobs} blobs, ${current.cache.evictions} evicted\n`,
        term`hit rate    ${asked === 0 ? '-' : `${Math.round((100 * current.hits) / asked)}%`} (${current.hits} hits, ${current.misses} misses)\n`,
        term`served      ${formatBytes(current.bytesServed)} to ${current.agentsServed} agent(s); fetched ${formatBytes(current.bytesFetched)}; refused ${current.refused} request(s)\n`,
        current.streams ? term`streams     ${current.streams.recorded} kept (${formatBytes(current.streams.bytes)}), served ${current.streams.served} time(s), ${formatBytes(current.streams.servedWireBytes)} on the wire\n` : '',
        prefetchLine(current.prefetch),
        upstreamLine(current.upstream),
      ]}`,
    );
    return 0;
  },
};

/** Where the relay fetches from (`ferry relay status`): its upstream relay or the coordinator, and how often the upstream relay failed. */
function upstreamLine(upstream: RelayStatus['upstream']): TerminalText | '' {
  if (!upstream) return '';
  if (!upstream.relay) return term`fetches     from the coordinator (no upstream relay)\n`;
  const where = upstream.fetchingFrom === 'relay' ? term`from relay ${upstream.relay.url} (${upstream.relay.id.slice(0, 12)}…), then the coordinator` : term`from the coordinator: relay ${upstream.relay.url} dropped until ${new Date(upstream.droppedUntil ?? 0).toISOString()}`;
  const failures = upstream.failures > 0 ? term`; last: ${upstream.lastFailure ?? '?'}` : '';
  return term`fetches     ${where}; ${upstream.tasks} fetch(es) from it, ${upstream.failures} failed${failures}\n`;
}

/** The prefetch's line of `ferry relay status`: closures ready of those wanted, the one under way, what failed. */
function prefetchLine(prefetch: RelayStatus['prefetch']): TerminalText {
  if (!prefetch) return term`prefetch    off\n`;
  const current = prefetch.current ? term`; fetching ${prefetch.current.closure.slice(0, 12)}… (${prefetch.current.objectsDone}/${prefetch.current.objectsTotal} blobs)` : '';
  const skipped = prefetch.skipped.length > 0 ? term`; ${prefetch.skipped.length} over the cache limit` : '';
  const failed = prefetch.failed.length > 0 ? term`; ${prefetch.failed.length} failed (${prefetch.failed[0]!.error})` : '';
  return term`prefetch    ${prefetch.ready.length} of ${prefetch.wanted} closure(s) ready${prefetch.truncated ? '+' : ''}${current}${skipped}${failed}\n`;
}

const relaysLs: Command = {
  path: ['relays', 'ls'],
  summary: 'list site relays, the agents they serve, and what those agents reported of them in the last 24 h (fetched through, failures)',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const { relays } = await clientFrom(options).call('relays.list', {});
    if (booleanOption(options, 'json')) return writeJson(stdout, relays);
    stdout.write(
      table(
        ['RELAY', 'NAME', 'URL', 'STATUS', 'WHERE', 'UPSTREAM', 'SERVED', 'FAILED', 'LAST FAILURE'],
        relays.map((relay) => [
          relay.id,
          relay.name,
          relay.url,
          relay.status,
          relay.where.join(' ') || '(nobody)',
          relay.upstream ? `${relays.find((other) => other.id === relay.upstream)?.name ?? '?'} ${relay.upstream.slice(0, 12)}` : '(coordinator)',
          String(relay.reports.agentsServed),
          relay.reports.drops > 0 ? `${relay.reports.failures} (${relay.reports.drops} dropped)` : String(relay.reports.failures),
          relay.reports.lastFailure ? `${new Date(relay.reports.lastFailure.at).toISOString()} ${relay.reports.lastFailure.agentId.slice(0, 12)}: ${relay.reports.lastFailure.message.slice(0, 120)}` : '-',
        ]),
      ),
    );
    return 0;
  },
};

const relaysAssign: Command = {
  path: ['relays', 'assign'],
  summary: 'choose the agents a relay serves: --where labels.site=barn-3 (no --where: nobody)',
  args: '<relay-id>',
  minArgs: 1,
  maxArgs: 1,
  options: { where: { type: 'string', multiple: true, valueName: 'K=V', description: 'operator label (labels.k=v) or agent field; several are ANDed' }, ...common },
  async run({ args, options, stdout }) {
    const result = await clientFrom(options).call('relays.assign', { relayId: args[0]!, where: stringListOption(options, 'where') });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`relay ${args[0]!} assigned (event ${String(result.seq)})\n`);
    return 0;
  },
};

const relaysUpstream: Command = {
  path: ['relays', 'upstream'],
  summary: "choose where a relay fetches from before the coordinator: another relay (which may then read this relay's configs), or none",
  args: '<relay-id> <upstream-relay-id|none>',
  minArgs: 2,
  maxArgs: 2,
  options: common,
  async run({ args, options, stdout }) {
    const [relayId, upstream] = [args[0]!, args[1]!];
    const result = await clientFrom(options).call('relays.upstream', { relayId, upstream: upstream === 'none' ? null : upstream });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(upstream === 'none' ? term`relay ${relayId} fetches from the coordinator (event ${String(result.seq)})\n` : term`relay ${relayId} fetches from relay ${upstream} first (event ${String(result.seq)})\n`);
    return 0;
  },
};

const relaysRevoke: Command = {
  path: ['relays', 'revoke'],
  summary: 'revoke a relay: its key is refused, and agents are no longer sent to it',
  args: '<relay-id>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const result = await clientFrom(options).call('relays.revoke', { relayId: args[0]! });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`relay ${args[0]!} revoked (event ${String(result.seq)})\n`);
    return 0;
  },
};

export const relayCommands: Command[] = [enroll, run, status, relaysLs, relaysAssign, relaysUpstream, relaysRevoke];
