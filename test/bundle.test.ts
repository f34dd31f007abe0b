// Air-gapped deployment: a bundle written from the coordinator's castore and
// key for named agents, applied by an agent whose coordinator is unreachable,
// reported when it is back. Tampered, foreign, misaddressed, expired, old-
// format and insane bundles are refused with nothing stored; an older config
// is refused unless forced, and the coordinator's audit log records what a
// bundle did (and whether it was forced).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { asConfigId } from '../protocol/config.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { BundleError, LocalCastore, CastoreError, blake3, writeBundle, type BundleConfig, type BundleOptions } from '../castore/index.js';
import { startHttpServer } from '../coordinator/server.js';
import { configId as configIdOf, configSigningMessage } from '../coordinator/domain/commands.js';
import type { ConfigBody } from '../coordinator/domain/events.js';
import { formatHlc } from '../protocol/hlc.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity, type KeyId } from '../protocol/identity.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
const app = fakeStorePath('bundled-app');
const app2 = fakeStorePath('bundled-app-2');
const system = nixSystem();
/** Two configs of one graph: `older` first, `newer` on top of it (later HLC). */
let older: string;
let newer: string;
let agentA: { id: KeyId; stateDir: string };
let agentB: { id: KeyId; stateDir: string };

async function bytesOf(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return Buffer.concat(out);
}

async function* fromBuffer(buffer: Buffer): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < buffer.length; offset += 10_000) yield buffer.subarray(offset, offset + 10_000);
}

/** Submits a signed config with a chosen HLC (the fixture's signedConfig takes the wall clock). */
async function submit(parents: string[], target: string, wall: number, message: string): Promise<string> {
  const body = {
    graph: 'offline',
    parents,
    targets: { [system]: target },
    activation: { command: 'echo "$FERRY_CONFIG_ID" > "$FERRY_STATE_DIR/marker"', environment: {}, timeoutSeconds: 60 },
    health: { command: 'test -s "$FERRY_STATE_DIR/marker"', timeoutSeconds: 60, retries: 0 },
    message,
    author: test.admin.keyId,
    hlc: formatHlc({ wall, counter: 0, node: 'test' }),
  };
  const signature = Buffer.from(test.admin.sign(configSigningMessage(configIdOf(body as ConfigBody)))).toString('base64');
  return (await test.adminClient.call('graphs.submit', { graph: 'offline', body, signature })).configId;
}

function configOf(id: string): BundleConfig {
  return { ...(test.coordinator.state.get('configs', id)!.body as ConfigBody), id: asConfigId(id) };
}

async function bundleOf(id: string, agents: readonly KeyId[], options: Partial<BundleOptions> = {}, signer = test.coordinator.identity): Promise<Buffer> {
  return bytesOf(writeBundle(test.coordinator.castore, signer, configOf(id), { audience: { agents: [...agents], where: [] }, ...options }).bytes);
}

/** The manifest of a bundle, as JSON. */
async function manifestOf(bundle: Buffer): Promise<Record<string, unknown>> {
  const extract = tar.extract();
  extract.end(bundle);
  for await (const entry of extract) {
    const text = (await bytesOf(entry as AsyncIterable<Uint8Array>)).toString('utf8');
    if (entry.header.name === 'ferry-bundle.json') return JSON.parse(text) as Record<string, unknown>;
  }
  throw new Error('no manifest');
}

/** A bundle of just a manifest and its signature (as `format` says to sign it): for manifests writeBundle would refuse to write. */
async function craftedBundle(manifest: unknown, signer: Identity, format = String((manifest as { format?: unknown }).format)): Promise<Buffer> {
  const bytes = Buffer.from(JSON.stringify(manifest));
  const message = new TextEncoder().encode(`${format}\n${Buffer.from(blake3(bytes)).toString('hex')}`);
  const signature = Buffer.from(Buffer.from(signer.sign(message)).toString('base64'));
  const pack = tar.pack();
  pack.entry({ name: 'ferry-bundle.json', size: bytes.length, mtime: new Date(0) }, bytes);
  pack.entry({ name: 'ferry-bundle.sig', size: signature.length, mtime: new Date(0) }, signature);
  pack.finalize();
  return bytesOf(pack as unknown as AsyncIterable<Uint8Array>);
}

/** Everything an agent's castore holds: its rows and its files (not the database's own). */
function castoreContents(stateDir: string): { rows: Record<string, number>; files: string[] } {
  const dir = path.join(stateDir, 'castore');
  const store = LocalCastore.open(dir, { keepStaleFiles: true });
  try {
    const stats = store.stats();
    const rows: Record<string, number> = { blobs: stats.blobs, directories: stats.directories, store_paths: stats.storePaths, packs: stats.packFiles, ingests: stats.openIngests };
    const files = ['tmp', 'packs', 'blobs'].flatMap((sub) => (existsSync(path.join(dir, sub)) ? readdirSync(path.join(dir, sub), { recursive: true }).map((name) => `${sub}/${String(name)}`) : []));
    return { rows, files: files.sort() };
  } finally {
    store.close();
  }
}

/** The `agent.report` events of `agentId` in the coordinator's audit log, oldest first. */
function reportsOf(agentId: string): Record<string, unknown>[] {
  return [...test.coordinator.events()].filter((event) => event.action === 'agent.report' && event.subject === agentId).map((event) => event.payload as Record<string, unknown>);
}

async function refusal(promise: Promise<unknown>): Promise<BundleError> {
  const error = await promise.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(BundleError);
  return error as BundleError;
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-bundle-'));
  const source = LocalCastore.open(path.join(work, 'source'));
  writeTree(path.join(work, 'app'), 'bundle', { small: 30, large: 1, largeSize: 300_000 });
  writeTree(path.join(work, 'app2'), 'bundle-2', { small: 10, large: 0 });
  await addTreeAsStorePath(source, path.join(work, 'app'), app);
  await addTreeAsStorePath(source, path.join(work, 'app2'), app2);
  await pushToCoordinator(test, source, [app, app2]);
  source.close();
  const wall = Date.now() - 60_000;
  older = await submit([], app2, wall, 'older');
  newer = await submit([older], app, wall + 1000, 'newer');
  for (const name of ['a', 'b']) {
    const stateDir = path.join(work, `agent-${name}`);
    const { agentId } = await enrollStateDir(test, { stateDir, name: `island-${name}` });
    if (name === 'a') agentA = { id: agentId as KeyId, stateDir };
    else agentB = { id: agentId as KeyId, stateDir };
  }
}, 60_000);

afterAll(async () => {
  await test?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('bundles', () => {
  it('deploys a signed bundle with the coordinator unreachable, and reports once it is back, as from a bundle', async () => {
    const written = writeBundle(test.coordinator.castore, test.coordinator.identity, configOf(newer), { audience: { agents: [agentA.id], where: [] } });
    const bundle = await bytesOf(written.bytes);
    // The size announced before the first byte (for progress) is exact.
    expect(bundle.length).toBe(written.size);
    expect(written.storePaths).toBe(test.coordinator.castore.closure([app]).length);
    expect(written.expiresAt - Date.now()).toBeGreaterThan(29 * 24 * 3600 * 1000); // 30 days by default

    // The coordinator goes away: the HTTP port closes.
    const port = Number(new URL(test.http.url).port);
    await test.http.close();
    const agent = new Agent(agentA.stateDir, { log: () => undefined });
    try {
      // Refused first: a flipped byte deep inside the bundle, then a bundle signed by another key.
      const tampered = Buffer.from(bundle);
      tampered[tampered.length - 2000] = tampered[tampered.length - 2000]! ^ 1;
      await expect(agent.applyBundle(fromBuffer(tampered))).rejects.toBeInstanceOf(CastoreError);
      const foreign = await bundleOf(newer, [agentA.id], {}, Identity.generate());
      expect((await refusal(agent.applyBundle(fromBuffer(foreign)))).code).toBe('BAD_BUNDLE');
      expect(castoreContents(agentA.stateDir).rows).toMatchObject({ blobs: 0, directories: 0, store_paths: 0, ingests: 0 });

      const outcome = await agent.applyBundle(fromBuffer(bundle));
      expect(outcome).toEqual({ configId: newer, result: 'active', forced: false });
      expect(readFileSync(path.join(agentA.stateDir, 'marker'), 'utf8').trim()).toBe(newer);
      expect(agent.state.pendingReports.map((report) => [report.phase, report.source, report.forced])).toEqual([
        ['activating', 'bundle', false],
        ['active', 'bundle', false],
      ]);

      // Back online: the queued reports are delivered in order, and audited as from a bundle.
      test.http = await startHttpServer(test.coordinator, '127.0.0.1', port);
      await agent.runOnce();
      expect(agent.state.pendingReports).toEqual([]);
      expect(test.coordinator.state.get('agents', agentA.id)).toMatchObject({ currentConfig: newer, phase: 'active' });
      expect(reportsOf(agentA.id).slice(-2)).toEqual([
        { agentId: agentA.id, configId: newer, phase: 'activating', error: null, source: 'bundle', forced: false },
        { agentId: agentA.id, configId: newer, phase: 'active', error: null, source: 'bundle', forced: false },
      ]);
    } finally {
      await agent.close();
    }
  }, 60_000);

  it('defect 8: a bundle for agent A is refused on agent B (even with --force), and nothing changes on B', async () => {
    const agent = new Agent(agentB.stateDir, { log: () => undefined });
    try {
      // B runs a config of its own first (from a bundle made for it).
      expect(await agent.applyBundle(fromBuffer(await bundleOf(older, [agentB.id])))).toMatchObject({ configId: older, result: 'active' });
      const generations = agent.generations.list();
      const before = castoreContents(agentB.stateDir);
      const events = agent.events.read().length;

      const forA = await bundleOf(newer, [agentA.id]);
      for (const force of [false, true]) {
        const error = await refusal(agent.applyBundle(fromBuffer(forA), { force }));
        expect(error.code).toBe('BUNDLE_NOT_FOR_THIS_AGENT');
        expect(error.message).toContain(`is not for this agent ${agentB.id}`);
        expect(error.message).toContain(`ferry bundle create ${newer} --agents ${agentB.id}`);
      }
      expect(agent.generations.list()).toEqual(generations);
      expect(agent.generations.current()?.configId).toBe(older);
      expect(castoreContents(agentB.stateDir)).toEqual(before);
      expect(agent.events.read()).toHaveLength(events);
      expect(readFileSync(path.join(agentB.stateDir, 'marker'), 'utf8').trim()).toBe(older);
    } finally {
      await agent.close();
    }
  }, 60_000);

  it('defect 8: an expired bundle is refused (even with --force), with nothing stored', async () => {
    const agent = new Agent(agentB.stateDir, { log: () => undefined });
    try {
      const before = castoreContents(agentB.stateDir);
      const twoDaysAgo = Date.now() - 2 * 24 * 3600 * 1000;
      const expired = await bundleOf(newer, [agentA.id, agentB.id], { now: twoDaysAgo, ttlMs: 24 * 3600 * 1000 });
      for (const force of [false, true]) {
        const error = await refusal(agent.applyBundle(fromBuffer(expired), { force }));
        expect(error.code).toBe('BUNDLE_EXPIRED');
        expect(error.message).toMatch(/expired at \S+Z \(made \S+Z, this machine's clock says \S+Z\); make a new one/);
      }
      expect(castoreContents(agentB.stateDir)).toEqual(before);
      expect(agent.generations.current()?.configId).toBe(older);
    } finally {
      await agent.close();
    }
  }, 60_000);

  it('defect 8: a config older than the one running is refused, then applied with --force; the audit log records it as forced', async () => {
    const agent = new Agent(agentA.stateDir, { log: () => undefined });
    try {
      expect(agent.generations.current()?.configId).toBe(newer);
      const generations = agent.generations.list().length;
      const before = castoreContents(agentA.stateDir);
      const old = await bundleOf(older, [agentA.id]);
      const error = await refusal(agent.applyBundle(fromBuffer(old)));
      expect(error.code).toBe('BUNDLE_CONFIG_OLDER');
      expect(error.message).toContain(`config ${older}`);
      expect(error.message).toContain(`is older than config ${newer}`);
      expect(error.message).toContain('--force');
      expect(agent.generations.list()).toHaveLength(generations);
      expect(castoreContents(agentA.stateDir)).toEqual(before);

      const reports = reportsOf(agentA.id).length;
      expect(await agent.applyBundle(fromBuffer(old), { force: true })).toEqual({ configId: older, result: 'active', forced: true });
      expect(readFileSync(path.join(agentA.stateDir, 'marker'), 'utf8').trim()).toBe(older);
      expect(agent.events.read().some((event) => event.kind === 'bundle' && event.message.includes('forced'))).toBe(true);
      // The coordinator is reachable: the reports went at once, and the log says the bundle was forced.
      expect(agent.state.pendingReports).toEqual([]);
      expect(reportsOf(agentA.id).slice(reports)).toEqual([
        { agentId: agentA.id, configId: older, phase: 'activating', error: null, source: 'bundle', forced: true },
        { agentId: agentA.id, configId: older, phase: 'active', error: null, source: 'bundle', forced: true },
      ]);
      // A report that does not come from a bundle is recorded exactly as before (no new fields),
      // and `forced` is only said of a bundle.
      const client = new CoordinatorHttpClient(test.http.url, loadIdentity(path.join(agentA.stateDir, 'identity.key')));
      await client.call('agent.status', { configId: older, phase: 'active', error: null });
      expect(reportsOf(agentA.id).at(-1)).toEqual({ agentId: agentA.id, configId: older, phase: 'active', error: null });
      await expect(client.post('/v1/agent/status', { configId: older, phase: 'active', error: null, forced: true })).rejects.toMatchObject({ status: 400, message: expect.stringContaining('forced is only said of a bundle') });
      await expect(client.post('/v1/agent/status', { configId: older, phase: 'active', error: null, source: 'usb-stick' })).rejects.toMatchObject({ status: 400 });
    } finally {
      await agent.close();
    }
  }, 60_000);

  it('defect 8: a ferry-bundle-v1 bundle is refused with a clear message', async () => {
    const manifest = { format: 'ferry-bundle-v1', coordinatorKey: test.coordinator.identity.keyId, createdAt: Date.now(), config: configOf(newer), storePaths: [] };
    const v1 = await craftedBundle(manifest, test.coordinator.identity, 'ferry-bundle-v1');
    const agent = new Agent(agentA.stateDir, { log: () => undefined });
    try {
      const error = await refusal(agent.applyBundle(fromBuffer(v1)));
      expect(error.code).toBe('BUNDLE_FORMAT_UNSUPPORTED');
      expect(error.message).toMatch(/^this is a ferry-bundle-v1 bundle: v1 bundles name no agent and never expire, and this agent applies only ferry-bundle-v2, ferry-bundle-v3 and ferry-bundle-v4; make a new one .*ferry bundle create/);
    } finally {
      await agent.close();
    }
  });

  it('defect 8: every field of a signed manifest is validated (a signature proves who made it, not that it is sane)', async () => {
    const valid = await manifestOf(await bundleOf(older, [agentA.id]));
    const config = valid.config as BundleConfig;
    const rehashed = (body: Omit<BundleConfig, 'id'>): BundleConfig => ({ ...body, id: configIdOf(body as ConfigBody) });
    const { id: _id, ...body } = config;
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['a refused environment key (id recomputed, so only the key is wrong)', { config: rehashed({ ...body, activation: { ...body.activation, environment: { LD_PRELOAD: '/tmp/evil.so' } } }) }, /config\.activation\.environment\.LD_PRELOAD: LD_PRELOAD is refused/],
      ['a config whose body does not hash to its id', { config: { ...config, message: 'changed after signing' } }, /config\.id: the config's body hashes to [0-9a-f]{64}, not to its id/],
      ['a target that is no store path', { config: rehashed({ ...body, targets: { [system]: '/nix/store/..' as never } }) }, /config\.targets\./],
      ['an agent id that is not a key', { audience: { agents: ['island-a'], where: [] } }, /audience\.agents\.0: expected a key id/],
      ['an empty audience', { audience: { agents: [], where: [] } }, /audience\.agents: a bundle names at least one agent/],
      ['a validity of years', { expiresAt: (valid.createdAt as number) + 5 * 366 * 24 * 3600 * 1000 }, /expiresAt: the bundle is valid for more than 366 days/],
      ['an expiry before creation', { expiresAt: (valid.createdAt as number) - 1 }, /expiresAt: the bundle expires before it was made/],
      ['a store path whose reference is missing', { storePaths: [{ ...(valid.storePaths as Record<string, unknown>[])[0]!, references: [app] }] }, /storePaths: .* references .*, which the bundle lacks/],
      ['an unknown field', { extra: true }, /manifest: Unrecognized key/],
      ['another coordinator named', { coordinatorKey: Identity.generate().keyId }, /the manifest names coordinator [0-9a-f]{64}, but it is signed by/],
      // Unsigned or not, a manifest is bounded before anything walks it (the format check once overflowed the stack).
      ['a format nested 3,000 deep', { format: JSON.parse(`${'['.repeat(3000)}${']'.repeat(3000)}`) as unknown }, /the manifest nests deeper than 64 levels/],
    ];
    const agent = new Agent(agentA.stateDir, { log: () => undefined });
    try {
      const before = castoreContents(agentA.stateDir);
      for (const [what, change, message] of cases) {
        const error = await refusal(agent.applyBundle(fromBuffer(await craftedBundle({ ...valid, ...change }, test.coordinator.identity))));
        expect(error.code, what).toBe('BAD_BUNDLE');
        expect(error.message, what).toMatch(message);
      }
      expect(castoreContents(agentA.stateDir)).toEqual(before);
    } finally {
      await agent.close();
    }
  });
});
