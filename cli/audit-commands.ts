/** `ferry audit log|show|verify|export`. */
import { createWriteStream, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseAuditExport, verifyAuditExport } from '../coordinator/audit/export.js';
import type { ChainReport } from '../coordinator/audit/chain.js';
import type { AuditEvent } from '../coordinator/domain/events.js';
import { publicKeyOf, KeyIdSchema } from '../protocol/identity.js';
import { booleanOption, jsonOption, stringOption, UsageError, writeJson, type Command } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { short } from './format.js';

const common = { ...connectionOptions, ...jsonOption };

function eventLine(event: AuditEvent): string {
  return `${String(event.seq).padStart(6)}  ${new Date(event.wallTime).toISOString()}  ${event.actorRole.padEnd(11)} ${short(event.actorKey)}  ${event.action.padEnd(16)} ${event.subject}\n`;
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
    follow: { type: 'boolean', short: 'f', description: 'keep printing new events as they happen' },
    ...common,
  },
  async run({ options, stdout }) {
    const client = clientFrom(options);
    const json = booleanOption(options, 'json');
    const limit = stringOption(options, 'limit') ? Number(stringOption(options, 'limit')) : Infinity;
    let after = Number(stringOption(options, 'after') ?? '0');
    if (!Number.isInteger(after) || after < 0) throw new UsageError('--after must be a seq number');
    let printed = 0;
    for (;;) {
      const page = await client.get<{ events: AuditEvent[]; next: number | null }>('/v1/audit/events', {
        after: String(after),
        limit: String(Math.min(1000, limit - printed)),
        action: stringOption(options, 'action'),
        actor: stringOption(options, 'actor'),
        subject: stringOption(options, 'subject'),
      });
      for (const event of page.events) {
        stdout.write(json ? `${JSON.stringify(event)}\n` : eventLine(event));
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

const show: Command = {
  path: ['audit', 'show'],
  summary: 'one audit event in full',
  args: '<seq>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const seq = Number(args[0]);
    if (!Number.isInteger(seq) || seq < 1) throw new UsageError(`'${args[0]}' is not a seq number`);
    const { events } = await clientFrom(options).get<{ events: AuditEvent[] }>('/v1/audit/events', { after: String(seq - 1), limit: '1' });
    const event = events[0];
    if (!event || event.seq !== seq) throw new UsageError(`no audit event ${seq}`);
    writeJson(stdout, event);
  },
};

function printReport(report: ChainReport, stdout: NodeJS.WritableStream, json: boolean): number {
  if (json) writeJson(stdout, report);
  else if (report.ok) {
    stdout.write(`audit log OK: ${report.events} events chained and verified${report.lastCheckpoint ? `, last signed checkpoint at seq ${report.lastCheckpoint.seq}` : ', no signed checkpoint yet'}\n`);
  } else {
    stdout.write(`audit log BROKEN at seq ${report.firstBad!.seq}: ${report.firstBad!.reason}\nverified up to seq ${report.verifiedThrough}\n`);
  }
  return report.ok ? 0 : 1;
}

const verify: Command = {
  path: ['audit', 'verify'],
  summary: "verify the audit chain and checkpoint signatures (the coordinator's, or an export offline)",
  description: 'With --file and --pubkey, verifies an export from `ferry audit export` with no coordinator at all. Exit code 1 when the log is broken.',
  maxArgs: 0,
  options: {
    file: { type: 'string', valueName: 'FILE', description: 'an export (JSON lines) to verify offline' },
    pubkey: { type: 'string', valueName: 'KEY', description: "the coordinator's public key id, obtained out of band (with --file)" },
    ...common,
  },
  async run({ options, stdout }) {
    const json = booleanOption(options, 'json');
    const file = stringOption(options, 'file');
    if (file) {
      const pubkey = stringOption(options, 'pubkey');
      if (!pubkey) throw new UsageError("--pubkey is required with --file: the coordinator's key id, from a trusted source (not the file)");
      const parsed = KeyIdSchema.safeParse(pubkey);
      if (!parsed.success) throw new UsageError(`--pubkey '${pubkey}' is not a key id (64 hex characters)`);
      return printReport(verifyAuditExport(parseAuditExport(readFileSync(file, 'utf8')), publicKeyOf(parsed.data)), stdout, json);
    }
    return printReport(await clientFrom(options).get<ChainReport>('/v1/audit/verify'), stdout, json);
  },
};

const exportLog: Command = {
  path: ['audit', 'export'],
  summary: 'write the audit log as JSON lines, verifiable offline with the coordinator key',
  maxArgs: 0,
  options: { output: { type: 'string', short: 'o', valueName: 'FILE', description: 'write here instead of standard output' }, ...connectionOptions },
  async run({ options, stdout }) {
    const response = await clientFrom(options).send('GET', '/v1/audit/export');
    const output = stringOption(options, 'output');
    await pipeline(Readable.fromWeb(response.body! as import('node:stream/web').ReadableStream), output ? createWriteStream(output) : stdout);
  },
};

export const auditCommands: Command[] = [log, show, verify, exportLog];
