// The coordinator's Prometheus metrics, served on an address of their own (--metrics-listen), scraped
// over real HTTP and parsed with a Prometheus text-format parser: fleet gauges read from the state when
// scraped (a config's outcomes as `ferry graph log` summarizes them), request durations by route pattern, data-plane bytes by transport (QUIC and HTTPS, real
// fetches). Hostile: labels take the API's route patterns, never a client's path, so no request can
// add series; the endpoint serves nothing but GET /metrics. On the API port, GET /v1/metrics takes HTTP
// Basic credentials derived from a reader's key, refused for any other key, context or revoked key.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { keyCredentialPassword, METRICS_CREDENTIAL_CONTEXT } from '../coordinator/api/key-credentials.js';
import { nixCachePassword } from '../coordinator/nix-cache/credentials.js';
import { addTreeAsStorePath, enrollAgent, fakeStorePath, fetchConfigClosure, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
let test: TestCoordinator;
let head: string;
let active: Identity;
let behind: Identity;
const target = fakeStorePath('metered');

async function scrape(): Promise<ReturnType<typeof parsePrometheusTextFormat>> {
  const response = await fetch(test.metricsUrl!);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusTextFormat(await response.text());
}

/**
 * The request-duration histogram's series: their labels and counts, from the `_count` lines (the
 * parser above mislays the labels of some of prom-client's histogram samples, whose `le` comes first).
 */
async function requestSeries(): Promise<{ labels: Record<string, string>; count: number }[]> {
  const text = await (await fetch(test.metricsUrl!)).text();
  return [...text.matchAll(/^ferry_http_request_duration_seconds_count\{(.*)\} (\d+)$/gm)].map(([, labels, count]) => ({
    labels: Object.fromEntries([...labels!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, key, value]) => [key!, value!])),
    count: Number(count),
  }));
}

/** The value of `name`'s sample whose labels include `labels` (undefined: no such sample). */
function valueOf(families: ReturnType<typeof parsePrometheusTextFormat>, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((candidate) => candidate.name === name);
  const sample = family?.metrics.find((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value));
  return sample === undefined ? undefined : Number(sample.value ?? sample.count);
}

beforeAll(async () => {
  test = await startTestCoordinator({ metrics: true });
  writeTree(path.join(test.dir, 'tree'), 'metered', { small: 20, large: 1, largeSize: 300_000 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
  head = (await test.adminClient.call('graphs.submit', { graph: 'metered', ...signedConfig(test.admin, 'metered', [], { 'x86_64-linux': target }) })).configId;
  active = await enrollAgent(test, 'metered');
  behind = await enrollAgent(test, 'metered');
  await new CoordinatorHttpClient(test.http.url, active).call('agent.status', { configId: head, phase: 'active', error: null });
}, 60_000);
afterAll(async () => {
  await test?.close();
});

describe('the metrics endpoint', () => {
  it('shows the fleet, the rollout of each graph head, the audit head and the castore, as the state has them', async () => {
    const families = await scrape();
    expect(valueOf(families, 'ferry_agents', { status: 'enrolled', phase: 'active' })).toBe(1);
    expect(valueOf(families, 'ferry_agents', { status: 'enrolled', phase: 'none' })).toBe(1);
    expect(valueOf(families, 'ferry_config_agents', { config: head, outcome: 'succeeded' })).toBe(1);
    expect(valueOf(families, 'ferry_config_agents', { config: head, outcome: 'unreported' })).toBe(1);
    expect(valueOf(families, 'ferry_audit_head_seq')).toBe(test.coordinator.lastSeq);
    expect(valueOf(families, 'ferry_castore', { what: 'store_paths' })).toBe(test.coordinator.castore.stats().storePaths);
    expect(valueOf(families, 'ferry_http_connections_open')).toBeGreaterThanOrEqual(0);
    // A report moves the gauges at the next scrape: nothing is cached.
    await new CoordinatorHttpClient(test.http.url, behind).call('agent.status', { configId: head, phase: 'fetching', error: null });
    const after = await scrape();
    expect(valueOf(after, 'ferry_config_agents', { config: head, outcome: 'unreported' })).toBeUndefined();
    expect(valueOf(after, 'ferry_config_agents', { config: head, outcome: 'pending' })).toBe(1);
    expect(valueOf(after, 'ferry_agents', { status: 'enrolled', phase: 'fetching' })).toBe(1);
    // Health: unknown until the agent's periodic check says, then by its report.
    expect(valueOf(after, 'ferry_agents', { phase: 'active', health: 'unknown' })).toBe(1);
    await new CoordinatorHttpClient(test.http.url, active).call('agent.health', { configId: head, health: 'degraded', reason: 'exit 1' });
    const degraded = await scrape();
    expect(valueOf(degraded, 'ferry_agents', { phase: 'active', health: 'degraded' })).toBe(1);
    expect(valueOf(degraded, 'ferry_agents', { phase: 'active', health: 'unknown' })).toBeUndefined();
  });

  it("shows the process's event-loop lag since the previous scrape and its garbage collections, under Node exporters' names", async () => {
    await scrape(); // the lag's window starts here
    // The coordinator runs in this process: a loop blocked for 150 ms (from a timer, as a stall in the server would
    // be) is the kind of stall a request histogram cannot see.
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        const blockedUntil = performance.now() + 150;
        while (performance.now() < blockedUntil);
        setTimeout(resolve, 60);
      }, 60),
    );
    const families = await scrape();
    expect(valueOf(families, 'nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.1);
    expect(families.some((family) => family.name === 'nodejs_gc_duration_seconds')).toBe(true);
    expect(valueOf(families, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    // Reset at each scrape: the next window did not block.
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(valueOf(await scrape(), 'nodejs_eventloop_lag_max_seconds')).toBeLessThan(0.1);
  });

  it('counts requests by route pattern and transport, and data-plane bytes both ways on QUIC and HTTPS', async () => {
    for (const transport of ['quic', 'https'] as const) {
      // Over HTTPS as agents whose join string pins the certificate talk to the coordinator's port (HTTP/2).
      const { client } = await openDataClient(test.http.url, active, { httpOnly: transport === 'https', pinnedTls: transport === 'https', tlsFingerprint: test.coordinator.tls.fingerprint });
      const store = LocalCastore.open(path.join(test.dir, `fetched-${transport}`));
      try {
        const before = valueOf(await scrape(), 'ferry_data_plane_bytes_total', { transport, direction: 'sent' }) ?? 0;
        await fetchConfigClosure(client, store, head, { coordinatorKey: test.coordinator.identity.keyId });
        const families = await scrape();
        // The large file alone is 300 kB of the reply bytes.
        expect((valueOf(families, 'ferry_data_plane_bytes_total', { transport, direction: 'sent' }) ?? 0) - before).toBeGreaterThan(300_000);
        expect(valueOf(families, 'ferry_data_plane_bytes_total', { transport, direction: 'received' })).toBeGreaterThan(0);
      } finally {
        store.close();
        await client.close();
      }
    }
    expect((await scrape()).find((family) => family.name === 'ferry_http_request_duration_seconds')?.type).toBe('HISTOGRAM');
    const series = await requestSeries();
    expect(series.filter((one) => one.labels.route === '/v1/enroll').reduce((sum, one) => sum + one.count, 0)).toBe(2);
    expect(series.some((one) => one.labels.route === '/v1/agent/status' && one.labels.transport === 'http' && one.labels.status === '201')).toBe(true);
    // The HTTPS fetch's requests, over HTTP/2.
    expect(series.some((one) => one.labels.route === '/v1/data' && one.labels.transport === 'https')).toBe(true);
  });

  it('labels what clients ask for with route patterns only: random paths and ids add no series', async () => {
    const before = (await requestSeries()).length;
    for (let i = 0; i < 20; i++) await fetch(`${test.http.url}/v1/no-such-route-${i}/${'f'.repeat(64)}`);
    for (let i = 0; i < 5; i++) await test.adminClient.call('agents.show', { agentId: i % 2 === 0 ? active.keyId : behind.keyId });
    const series = await requestSeries();
    // One series for the unmatched paths (404), one for the show route: whatever the paths were.
    expect(series.length).toBeLessThanOrEqual(before + 2);
    for (const one of series) expect(one.labels.route).not.toMatch(/[0-9a-f]{64}|no-such-route/);
    expect(series.some((one) => one.labels.route === 'unmatched' && one.labels.status === '404' && one.count >= 20)).toBe(true);
    expect(series.some((one) => one.labels.route === '/v1/agents/:agentId' && one.count >= 5)).toBe(true);
  });

  it('serves nothing but GET /metrics, and no body is read', async () => {
    const base = test.metricsUrl!.replace(/\/metrics$/, '');
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics/../v1/agents`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST', body: 'x'.repeat(1024) })).status).toBe(405);
    expect((await fetch(`${base}/metrics`, { method: 'HEAD' })).status).toBe(200);
  });
});

describe('the metrics on the API port', () => {
  const basic = (login: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${login}:${password}`).toString('base64')}` });
  const metricsOn = (headers: Record<string, string> = {}) => fetch(`${test.http.url}/v1/metrics`, { headers });

  it("serves a reader whose key derived the password, and refuses everyone else, naming why", async () => {
    const viewer = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: viewer.keyId, role: 'viewer', label: 'prometheus' });
    const served = await metricsOn(basic(viewer.keyId, keyCredentialPassword(viewer, METRICS_CREDENTIAL_CONTEXT)));
    expect(served.status).toBe(200);
    expect(parsePrometheusTextFormat(await served.text()).some((family) => family.name === 'ferry_audit_head_seq')).toBe(true);

    const refusals: [string, Record<string, string>, number, string][] = [
      ['no credentials', {}, 401, 'UNAUTHENTICATED'],
      ['a bearer token', { authorization: 'Bearer abc' }, 401, 'BAD_CREDENTIALS'],
      ["the viewer's Nix cache password (another context)", basic(viewer.keyId, nixCachePassword(viewer)), 401, 'BAD_CREDENTIALS'],
      ["another key's password under the viewer's id", basic(viewer.keyId, keyCredentialPassword(active, METRICS_CREDENTIAL_CONTEXT)), 401, 'BAD_CREDENTIALS'],
      ['an agent, whose role may not read them', basic(active.keyId, keyCredentialPassword(active, METRICS_CREDENTIAL_CONTEXT)), 403, 'FORBIDDEN'],
      ['a key the coordinator does not know', (() => { const stranger = Identity.generate(); return basic(stranger.keyId, keyCredentialPassword(stranger, METRICS_CREDENTIAL_CONTEXT)); })(), 401, 'UNKNOWN_KEY'],
      ['a login that is no key id', basic('prometheus', 'x'.repeat(86) + '=='), 401, 'BAD_CREDENTIALS'],
    ];
    for (const [what, headers, status, code] of refusals) {
      const response = await metricsOn(headers);
      expect(response.status, what).toBe(status);
      expect(((await response.json()) as { error: { code: string } }).error.code, what).toBe(code);
    }

    // What `ferry metrics credentials` prints is what the endpoint takes (the CLI, as a user runs it).
    const keyFile = path.join(test.dir, 'viewer.key');
    writeFileSync(keyFile, viewer.toKeyFile(), { mode: 0o600 });
    const cli = spawnSync(process.execPath, [ferryBin, 'metrics', 'credentials', '--url', test.http.url, '--key', keyFile, '--json'], { encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    const printed = JSON.parse(cli.stdout) as { url: string; username: string; password: string };
    expect(printed.url).toBe(`${test.http.url}/v1/metrics`);
    expect((await fetch(printed.url, { headers: basic(printed.username, printed.password) })).status).toBe(200);
    const config = spawnSync(process.execPath, [ferryBin, 'metrics', 'credentials', '--url', test.http.url, '--key', keyFile], { encoding: 'utf8' });
    expect(config.stdout).toContain(`metrics_path: /v1/metrics`);
    expect(config.stdout).toContain(`password: ${printed.password}`);

    // Revoking the key revokes the password.
    await test.adminClient.call('keys.revoke', { keyId: viewer.keyId });
    const revoked = await metricsOn(basic(viewer.keyId, keyCredentialPassword(viewer, METRICS_CREDENTIAL_CONTEXT)));
    expect([401, 403]).toContain(revoked.status);
  });
});
