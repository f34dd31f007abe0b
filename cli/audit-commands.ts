/** `ferry audit log|show|replay|view|verify|export`. */
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ActionSchema, type AuditEvent, type ChainReport } from '../protocol/api/audit.js';
import type { EventDetail, StateResult } from '../protocol/api/viewer-views.js';
import type { Viewer } from '../coordinator/viewer/index.js';
import { VIEWER_PATH } from '../protocol/api/viewer-routes.js';
import { publicKeyOf, KeyIdSchema, type KeyId } from '../protocol/identity.js';
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, writeJsonLine, type Command, type OptionSpec, type OptionValues } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { short, table } from './format.js';
import { counted, untilInterrupted } from './io.js';
import { createProgress, formatBytes } from './progress.js';
import { jsonForTerminal, term, type TerminalOutput, type TerminalText } from './terminal-text.js';

const common = { ...connectionOptions, ...jsonOption };

const offlineOptions: Record<string, OptionSpec> = {
  file: { type: 'string', valueName: 'FILE', description: 'an export from `ferry audit export`, read offline (no coordinator)' },
  pubkey: { type: 'string', valueName: 'KEY', description: "the coordinator's public key id, obtained out of band (with --file)" },
};

/** The export file and the key to verify it with, when --file is given. */
function offlineExport(options: OptionValues): { file: string; key: KeyId } | undefined {
  const file = stringOption(options, 'file');
  if (!file) return undefined;
  const pubkey = stringOption(options, 'pubkey');
  if (!pubkey) throw new UsageError("--pubkey is required with --file: the coordinator's key id, from a trusted source (not the file)");
  const parsed = KeyIdSchema.safeParse(pubkey);
  if (!parsed.success) throw new UsageError(`--pubkey '${pubkey}' is not a key id (64 hex characters)`);
  return { file, key: parsed.data };
}

/** A viewer over an export file, indexed and verified. */
async function offlineViewer(source: { file: string; key: KeyId }): Promise<Viewer> {
  const { readExportLogSource, Viewer } = await import('../coordinator/viewer/index.js');
  const viewer = new Viewer(readExportLogSource(source.file, source.key));
  await viewer.ready();
  return viewer;
}

function eventLine(event: AuditEvent): TerminalText {
  return term`${String(event.seq).padStart(6)}  ${new Date(event.wallTime).toISOString()}  ${event.actorRole.padEnd(11)} ${short(event.actorKey)}  ${event.action.padEnd(16)} ${event.subject}\n`;
}

const log: Command = {
  path: ['audit', 'log'],
  summary: 'list audit events (filter by action, actor, subject; --follow for new ones)',
  maxArgs: 0,
  options: {
    action: { type: 'string', valueName: 'ACTION', description: 'e.g. agent.enroll, config.submit' },
    actor: { type: 'string', valueName: 'KEY', description: 'actor key id' },
    subject: { type: 'string', valueName: 'ID', description: 'agent, key, token or graph the event is about' },
    after: { type: 'string', valueName: 'SEQ', description: 'only events after this seq' },
    limit: { type: 'string', valueName: 'N', description: 'at most N events (default: all)' },
    follow: { type: 'boolean', short: 'f', description: 'keep printing new events as they happen (polls every second; Ctrl-C to stop)' },
    ...common,
  },
  async run({ options, stdout }) {
    const client = clientFrom(options);
    const json = booleanOption(options, 'json');
    const limit = stringOption(options, 'limit') ? Number(stringOption(options, 'limit')) : Infinity;
    if (!(limit > 0)) throw new UsageError('--limit must be a positive number');
    let after = Number(stringOption(options, 'after') ?? '0');
    if (!Number.isInteger(after) || after < 0) throw new UsageError('--after must be a seq number');
    const givenAction = stringOption(options, 'action');
    const action = givenAction === undefined ? undefined : ActionSchema.safeParse(givenAction).data;
    if (givenAction !== undefined && action === undefined) throw new UsageError(`--action '${givenAction}' is none of ${ActionSchema.options.join(', ')}`);
    let printed = 0;
    for (;;) {
      const page = await client.call('audit.events', {
        after,
        limit: Math.min(1000, limit - printed),
        action,
        actor: stringOption(options, 'actor'),
        subject: stringOption(options, 'subject'),
      });
      for (const event of page.events) {
        if (json) writeJsonLine(stdout, event);
        else stdout.write(eventLine(event));
        after = event.seq;
        printed++;
      }
      if (printed >= limit) return;
      if (page.next === null) {
        if (!booleanOption(options, 'follow')) return;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  },
};

function verificationText(detail: EventDetail): string {
  const v = detail.verification;
  switch (v.state) {
    case 'verified':
      return `verified in the hash chain${v.coveredByCheckpoint ? `, covered by the signed checkpoint at seq ${v.coveredByCheckpoint}` : ', not yet covered by a signed checkpoint'}`;
    case 'broken':
      return `BROKEN: ${v.reason}`;
    case 'after-break':
      return `UNVERIFIED: after the break at seq ${v.brokenAt}`;
    case 'unchecked':
      return 'not verified yet (appended since the last check)';
  }
}

/** A changed field's value: a string as itself, anything else as JSON; escaped either way. */
const value = (v: unknown): TerminalText => (v === null || v === undefined ? term`—` : typeof v === 'string' ? term`${v}` : jsonForTerminal(v));

function printEvent(detail: EventDetail, stdout: TerminalOutput): void {
  const { event } = detail;
  const lines = [
    term`event ${event.seq}: ${event.action}  ${detail.entry.summary}\n`,
    term`  who:      ${event.actorRole}${detail.actorName ? ` ${detail.actorName}` : ''} ${event.actorKey}\n`,
    term`  subject:  ${event.subject}\n`,
    term`  when:     ${new Date(event.wallTime).toISOString()}  (HLC ${event.hlc})\n`,
    term`  chain:    ${verificationText(detail)}\n`,
    term`  request:  ${detail.requestSignature ? 'signed (signature recorded and hashed into the chain)' : 'no request signature (not recorded from a signed request: the coordinator itself, or in-process)'}\n`,
  ];
  if (detail.configSignature) lines.push(term`  config:   ${detail.configSignature.valid ? 'signature valid' : 'SIGNATURE INVALID'}: ${detail.configSignature.reason} (author ${short(detail.configSignature.author)})\n`);
  lines.push(term`  hash:     ${event.hash} (prev ${event.prevHash})\n\nwhat it changed:\n`);
  if (!detail.diff) lines.push(term`  cannot replay this event: ${detail.replayProblem}\n`);
  else if (detail.diff.length === 0) lines.push(term`  no state rows\n`);
  for (const change of detail.diff ?? []) {
    lines.push(term`  ${change.table} ${change.id} (${change.kind})\n`);
    for (const field of change.fields) lines.push(term`    ${field.field}: ${change.kind === 'added' ? '' : term`${value(field.before)} → `}${value(field.after)}\n`);
  }
  // The payload is what the client sent: JSON with every control character escaped, still valid JSON.
  lines.push(term`\npayload:\n${jsonForTerminal(event.payload, 2)}\n`);
  stdout.write(term`${lines}`);
}

const show: Command = {
  path: ['audit', 'show'],
  summary: 'one audit event: who, what, when, its verification status and the state rows it changed',
  args: '<seq>',
  minArgs: 1,
  maxArgs: 1,
  options: { ...offlineOptions, ...common },
  async run({ args, options, stdout }) {
    const seq = Number(args[0]);
    if (!Number.isInteger(seq) || seq < 1) throw new UsageError(`'${args[0]}' is not a seq number`);
    const offline = offlineExport(options);
    const detail = offline ? (await offlineViewer(offline)).event(seq) : await clientFrom(options).call('viewer.event', { seq: String(seq) });
    if (booleanOption(options, 'json')) return writeJson(stdout, detail);
    printEvent(detail, stdout);
  },
};

function printState(result: StateResult, stdout: TerminalOutput): void {
  const { state } = result;
  const at = result.position ? `after event ${result.seq} (${result.position.action}, ${new Date(result.position.wallTime).toISOString()}, HLC ${result.position.hlc})` : 'before the first event';
  const v = result.verification;
  stdout.write(
    term`${[
      term`fleet ${at}; the log has ${result.lastSeq} events\n`,
      v.ok ? term`chain verified through seq ${v.verifiedThrough}${v.lastCheckpoint ? `, last signed checkpoint at seq ${v.lastCheckpoint.seq}` : ''}\n` : term`CHAIN BROKEN at seq ${v.firstBad!.seq}: ${v.firstBad!.reason}\n`,
      term`${state.counts.agents} agents (${Object.entries(state.counts.agentsByStatus).map(([status, n]) => `${n} ${status}`).join(', ') || 'none'}), ${state.counts.graphs} graphs, ${state.counts.configs} configs, ${state.counts.keys} keys, ${state.counts.tokens} tokens\n`,
    ]}`,
  );
  if (state.agents.rows.length > 0) {
    stdout.write(table(['AGENT', 'ID', 'STATUS', 'GRAPH', 'DESIRED', 'CURRENT', 'PHASE'], state.agents.rows.map((a) => [a.name, short(a.id), a.status, a.desiredGraph, short(a.desiredConfig), short(a.currentConfig), a.phase])));
    stdout.write(term`\n`);
  }
  if (state.graphs.length > 0) {
    stdout.write(table(['GRAPH', 'HEAD', 'SINCE SEQ', 'CONFIGS'], state.graphs.map((g) => [g.id, short(g.head), g.updatedSeq, g.configCount])));
    stdout.write(term`\n`);
  }
  if (state.configs.rows.length > 0) {
    stdout.write(
      table(
        ['CONFIG', 'GRAPH', 'SEQ', 'HEAD', 'SUCCEEDED', 'FAILED', 'PENDING', 'UNREPORTED'],
        state.configs.rows.map((c) => [short(c.id), c.graph, c.seq, c.head ? 'yes' : '', c.summary.succeeded, c.summary.failed, c.summary.pending, c.summary.unreported]),
      ),
    );
  }
}

const replay: Command = {
  path: ['audit', 'replay'],
  summary: 'the fleet as it was at an event or a time, replayed from the audit log',
  description:
    'Replays the audit log with the coordinator\'s own reducer up to --at (a seq, or an ISO time such as 2026-11-26T10:00:00Z: ' +
    'the last event at or before it) and prints the fleet then: agents, graphs, per-config rollout. Against the coordinator, or ' +
    'offline against an export with --file and --pubkey. The same replay as the web viewer (ferry audit view).',
  maxArgs: 0,
  options: { at: { type: 'string', valueName: 'SEQ|TIME', description: 'position: a seq number, an ISO time, or `end` (default)' }, ...offlineOptions, ...common },
  async run({ options, stdout }) {
    const at = stringOption(options, 'at') ?? 'end';
    const offline = offlineExport(options);
    let result: StateResult;
    if (offline) {
      const viewer = await offlineViewer(offline);
      result = viewer.state(viewer.resolvePosition(at), { full: true });
    } else {
      result = await clientFrom(options).call('viewer.state', { at, full: '1' });
    }
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    printState(result, stdout);
  },
};

function parseListen(text: string): { host: string; port: number } {
  const match = /^(.*):(\d+)$/.exec(text);
  if (!match || Number(match[2]) > 65535) throw new UsageError(`--listen '${text}' is not HOST:PORT`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

function openInBrowser(url: string, stderr: TerminalOutput): void {
  try {
    const child = spawn('xdg-open', [url], { detached: true, stdio: 'ignore' });
    child.on('error', (error) => stderr.write(term`ferry: could not run xdg-open (${error.message}); open the link yourself\n`));
    child.unref();
  } catch (error) {
    stderr.write(term`ferry: could not run xdg-open (${(error as Error).message}); open the link yourself\n`);
  }
}

const view: Command = {
  path: ['audit', 'view'],
  summary: 'open the web viewer: timeline, replay to any event, verification (prints a one-time login link)',
  description:
    'Against the coordinator: asks it (a signed request; viewer role or higher) for a short-lived one-time login link to its ' +
    'web viewer and prints it (--open also runs xdg-open). The link is exchanged for a session cookie on first use.\n' +
    'Offline: with --file and --pubkey, verifies the export with the key and serves the same viewer read-only on --listen ' +
    '(default 127.0.0.1:0, a free port) until interrupted, printing its login link.',
  maxArgs: 0,
  options: {
    open: { type: 'boolean', description: 'also open the link with xdg-open' },
    ...offlineOptions,
    listen: { type: 'string', valueName: 'HOST:PORT', description: 'where to serve an export (with --file; default 127.0.0.1:0)' },
    ...common,
  },
  async run({ options, stdout, stderr }) {
    const json = booleanOption(options, 'json');
    const offline = offlineExport(options);
    if (!offline) {
      const client = clientFrom(options);
      const session = await client.call('viewer.session');
      const url = new URL(session.loginPath, client.baseUrl).toString();
      if (json) writeJson(stdout, { url, expiresAt: session.expiresAt, lastSeq: session.lastSeq });
      else stdout.write(term`${url}\n(one-time login link to the audit-log viewer, valid until ${new Date(session.expiresAt).toISOString()})\n`);
      if (booleanOption(options, 'open')) openInBrowser(url, stderr);
      return;
    }
    const { host, port } = parseListen(stringOption(options, 'listen') ?? '127.0.0.1:0');
    const { readExportLogSource, serveOfflineViewer } = await import('../coordinator/viewer/index.js');
    const server = await serveOfflineViewer(readExportLogSource(offline.file, offline.key), host, port);
    const info = server.viewer.info();
    const url = server.loginUrl();
    const status = info.verification.ok ? `chain verified through seq ${info.verification.verifiedThrough}` : `CHAIN BROKEN at seq ${info.verification.firstBad!.seq}: ${info.verification.firstBad!.reason}`;
    if (json) writeJson(stdout, { url, server: server.url, lastSeq: info.lastSeq, verification: info.verification });
    else stdout.write(term`serving ${offline.file} (${info.lastSeq} events; ${status}) read-only at ${server.url}${VIEWER_PATH}/\n${url}\n(one-time login link; Ctrl-C to stop)\n`);
    if (booleanOption(options, 'open')) openInBrowser(url, stderr);
    await untilInterrupted();
    await server.close();
  },
};

function printReport(report: ChainReport, stdout: TerminalOutput, json: boolean): number {
  if (json) writeJson(stdout, report);
  else if (report.ok) {
    stdout.write(term`audit log OK: ${report.events} events chained and verified${report.lastCheckpoint ? `, last signed checkpoint at seq ${report.lastCheckpoint.seq}` : ', no signed checkpoint yet'}\n`);
  } else {
    stdout.write(term`audit log BROKEN at seq ${report.firstBad!.seq}: ${report.firstBad!.reason}\nverified up to seq ${report.verifiedThrough}\n`);
  }
  return report.ok ? 0 : 1;
}

const verify: Command = {
  path: ['audit', 'verify'],
  summary: "verify the audit chain and checkpoint signatures (the coordinator's, or an export offline)",
  description: 'With --file and --pubkey, verifies an export from `ferry audit export` with no coordinator at all. Exit code 1 when the log is broken.',
  maxArgs: 0,
  options: { ...offlineOptions, ...common },
  async run({ options, stdout }) {
    const json = booleanOption(options, 'json');
    const offline = offlineExport(options);
    if (offline) {
      const { parseAuditExport, verifyAuditExport } = await import('../coordinator/audit/export.js');
      return printReport(verifyAuditExport(parseAuditExport(readFileSync(offline.file, 'utf8')), publicKeyOf(offline.key)), stdout, json);
    }
    return printReport(await clientFrom(options).call('audit.verify'), stdout, json);
  },
};

const exportLog: Command = {
  path: ['audit', 'export'],
  summary: 'write the audit log as JSON lines, verifiable offline with the coordinator key',
  maxArgs: 0,
  options: { output: { type: 'string', short: 'o', valueName: 'FILE', description: 'write here instead of standard output' }, ...connectionOptions },
  async run({ options, stdout, stderr }) {
    const response = await clientFrom(options).send('GET', '/v1/audit/export');
    const output = stringOption(options, 'output');
    const body = Readable.fromWeb(response.body! as import('node:stream/web').ReadableStream);
    // To standard output: the export's exact bytes (JSON lines to verify), not text for a terminal.
    if (!output) return void (await pipeline(body, stdout.raw));
    // To a file: progress on a terminal (the size is not known ahead), and what was written.
    const progress = createProgress(stderr, 'exporting', 'bytes');
    let written = 0;
    await pipeline(counted(body, (total) => progress.update((written = total))), createWriteStream(output));
    progress.done(`wrote the audit log to ${output} (${formatBytes(written)}); verify it offline with: ferry audit verify --file ${output} --pubkey COORDINATOR_KEY`);
  },
};

export const auditCommands: Command[] = [log, show, replay, view, verify, exportLog];
