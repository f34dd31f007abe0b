/**
 * `ferry metrics credentials`: what a Prometheus server needs to scrape the
 * coordinator's metrics on its API port (`GET /v1/metrics`) with the key of
 * the current context. See docs/coordinator.md, "Metrics".
 */
import { keyCredentialPassword, METRICS_CREDENTIAL_CONTEXT } from '../coordinator/api/key-credentials.js';
import { API_STREAMS } from '../protocol/api/routes.js';
import { booleanOption, jsonOption, writeJson, type Command } from './command.js';
import { clientFrom, connectionOptions } from './contexts.js';
import { term } from './terminal-text.js';

const credentials: Command = {
  path: ['metrics', 'credentials'],
  summary: 'print the HTTP Basic credentials and a Prometheus scrape_config for the metrics, from your Ferry key',
  description:
    `Derives the credentials of the key of the current context (or --key): username = the key id, password = base64 of its ` +
    `ed25519 signature of "${METRICS_CREDENTIAL_CONTEXT}", a newline and the key id. Nothing is sent: the coordinator verifies the ` +
    'signature and checks the key (an admin, operator or viewer) on each scrape, so revoking the key revokes the password. ' +
    'Treat it like a password. (For a listener without credentials: ferry coordinator serve --metrics-listen.)',
  maxArgs: 0,
  options: { ...connectionOptions, ...jsonOption },
  async run({ options, stdout }) {
    const client = clientFrom(options);
    const identity = client.identity!;
    const url = new URL(API_STREAMS.metrics.path, client.baseUrl);
    const password = keyCredentialPassword(identity, METRICS_CREDENTIAL_CONTEXT);
    if (booleanOption(options, 'json')) return writeJson(stdout, { url: url.href, username: identity.keyId, password });
    stdout.write(
      term`${[
        '# prometheus.yml',
        'scrape_configs:',
        '  - job_name: ferry',
        `    scheme: ${url.protocol.replace(':', '')}`,
        `    metrics_path: ${url.pathname}`,
        '    basic_auth:',
        `      username: ${identity.keyId}`,
        `      password: ${password}`,
        '    static_configs:',
        `      - targets: ['${url.host}']`,
        '',
      ].join('\n')}`,
    );
  },
};

export const metricsCommands: Command[] = [credentials];
