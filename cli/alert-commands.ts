/** `ferry alerts add|ls|rm`: webhooks the coordinator POSTs signed alerts to (docs/coordinator.md, "Alerts"). */
import { ALERT_KINDS, AlertKindSchema, type AlertKind } from '../protocol/alerts.js';
import { booleanOption, jsonOption, stringListOption, UsageError, writeJson, type Command } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { ago, oneLine, table } from './format.js';
import { term } from './terminal-text.js';

const common = { ...connectionOptions, ...jsonOption };

/** `--on rolled-back,degraded` (and repeated --on) as kinds; refuses an unknown one, naming the kinds there are. */
function kindsOption(values: readonly string[]): AlertKind[] {
  const kinds = values.flatMap((value) => value.split(',')).map((kind) => kind.trim()).filter((kind) => kind !== '');
  if (kinds.length === 0) throw new UsageError(`--on is required: one or more of ${ALERT_KINDS.join(', ')}`);
  for (const kind of kinds) if (!AlertKindSchema.safeParse(kind).success) throw new UsageError(`--on: '${kind}' is not an alert kind (${ALERT_KINDS.join(', ')})`);
  return [...new Set(kinds)] as AlertKind[];
}

const add: Command = {
  path: ['alerts', 'add'],
  summary: 'register a webhook the coordinator POSTs signed alerts to (admins only)',
  args: '<url>',
  description:
    `Kinds: rolled-back (an agent rolled back), degraded (an agent's periodic health check failed), offline (an agent ` +
    `went offline), audit-broken (the coordinator found its audit chain broken). --where selects the agents alerted ` +
    `about (as in agents ls; audit-broken ignores it). Receivers verify each alert with the coordinator key ` +
    `(Ferry-Signature; see docs/coordinator.md). The URL is shown to admins and operators only; the audit log records ` +
    `its origin and SHA-256.`,
  minArgs: 1,
  maxArgs: 1,
  options: {
    on: { type: 'string', multiple: true, valueName: 'KINDS', description: `comma-separated: ${ALERT_KINDS.join(', ')}` },
    where: { type: 'string', multiple: true, valueName: 'KEY=VALUE', description: 'only agents matching (labels.k=v, facts.k=v, status=…, presence=…)' },
    ...common,
  },
  async run({ args, options, stdout }) {
    const on = kindsOption(stringListOption(options, 'on'));
    const result = await clientFrom(options).call('alerts.add', { url: args[0]!, on, where: stringListOption(options, 'where') });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`alert ${result.alertId} added (audit event ${result.seq})\n`);
  },
};

const ls: Command = {
  path: ['alerts', 'ls'],
  summary: 'the webhooks, and how their deliveries went (admins and operators)',
  maxArgs: 0,
  options: common,
  async run({ options, stdout }) {
    const { alerts } = await clientFrom(options).call('alerts.list');
    if (booleanOption(options, 'json')) return writeJson(stdout, alerts);
    stdout.write(
      table(
        ['ALERT', 'URL', 'ON', 'WHERE', 'LAST ATTEMPT', 'STATUS', 'PENDING', 'OK/FAILED/DROPPED', 'LAST ERROR'],
        alerts.map((alert) => {
          const d = alert.delivery;
          const status = d.lastOutcome === null ? '-' : `${d.lastOutcome}${d.lastStatus === null ? '' : ` (${d.lastStatus})`}`;
          return [
            alert.id,
            alert.url ?? `${alert.target} (URL not in this database)`,
            alert.kinds.join(','),
            alert.where.join(' ') || '-',
            d.lastAttemptAt === null ? '-' : ago(d.lastAttemptAt),
            status,
            d.pending,
            `${d.delivered}/${d.failed}/${d.dropped}`,
            oneLine(d.lastError, 80) ?? '-',
          ];
        }),
      ),
    );
  },
};

const rm: Command = {
  path: ['alerts', 'rm'],
  summary: 'remove a webhook; its queued deliveries are dropped (admins only)',
  args: '<alert-id>',
  minArgs: 1,
  maxArgs: 1,
  options: common,
  async run({ args, options, stdout }) {
    const alertId = args[0]!;
    const result = await clientFrom(options).call('alerts.remove', { alertId });
    if (booleanOption(options, 'json')) return writeJson(stdout, result);
    stdout.write(term`alert ${alertId} removed (audit event ${result.seq})\n`);
  },
};

export const alertCommands: Command[] = [add, ls, rm];
