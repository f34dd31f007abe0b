// Per-machine parameters (docs/secrets.md, "Per-machine parameters"), with real
// processes: the CLI (`ferry params set|unset|ls`, `ferry agents show`) and
// agents (`ferry agent run --once`) run from the sources against a coordinator
// on 127.0.0.1 with a real SQLite file. Layers resolve graph < group < agent and
// reach the activation's environment over the config's --env (never FERRY_*);
// a change re-activates only the agents whose effective values it changes, and
// a held watch answers it at once. Hostile: viewer and agent keys, bad names and
// values, oversize, a group on facts, FERRY_*/PATH names.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { LocalCastore } from '../castore/index.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { paramsStamp } from '../protocol/params.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { runFerrySource } from './cli-process.js';

const system = nixSystem();
const app = fakeStorePath('params-app');

let test: TestCoordinator;
let work: string;
let adminKeyFile: string;
const agents: Record<string, { stateDir: string; agentId: string }> = {};

/** Runs `ferry …` from the sources in a child process. */
const ferry = (args: string[], keyFile = adminKeyFile) => runFerrySource(args, { FERRY_URL: test.http.url, FERRY_KEY: keyFile, FERRY_CONFIG_DIR: path.join(work, 'cli-config') });

const runAgent = (name: string) => ferry(['agent', 'run', '--once', '--state-dir', agents[name]!.stateDir]);
const generationsOf = (name: string) => (existsSync(path.join(agents[name]!.stateDir, 'generations')) ? readdirSync(path.join(agents[name]!.stateDir, 'generations')).filter((entry) => /^\d+$/.test(entry)).length : 0);
/** What the activation of generation `n` of agent `name` saw: its UPSTREAM, OTHER and FERRY_AGENT_ID. */
const seen = (name: string, n: number) => readFileSync(path.join(agents[name]!.stateDir, `env.${n}`), 'utf8').trim().split('\n');

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-params-'));
  adminKeyFile = path.join(work, 'admin.key');
  writeFileSync(adminKeyFile, test.admin.toKeyFile(), { mode: 0o600 });
  const tree = path.join(work, 'app');
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  writeFileSync(path.join(tree, 'bin', 'start'), '#!/bin/sh\nprintf "%s\\n%s\\n%s\\n" "$UPSTREAM" "$OTHER" "$FERRY_AGENT_ID" > "$FERRY_STATE_DIR/env.$FERRY_GENERATION"\n');
  chmodSync(path.join(tree, 'bin', 'start'), 0o755);
  const source = LocalCastore.open(path.join(work, 'source'));
  await addTreeAsStorePath(source, tree, app);
  await pushToCoordinator(test, source, [app]);
  source.close();
  for (const name of ['plain', 'barn', 'own']) {
    const stateDir = path.join(work, name);
    agents[name] = { stateDir, ...(await enrollStateDir(test, { stateDir, name })) };
  }
  await test.adminClient.call('agents.label', { agentIds: [agents.barn!.agentId as never, agents.own!.agentId as never], set: { site: 'barn-3' } });
}, 120_000);

afterAll(async () => {
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('params', () => {
  it('resolve graph < group < agent, over the config\'s --env, and reach the activation; agents show says where each came from', async () => {
    const submit = await ferry(['config', 'submit', 'web', '--target', `${system}=${app}`, '--activate', 'bin/start', '--env', 'UPSTREAM=from-config', '--env', 'OTHER=config-only', '--json']);
    expect(submit.status, submit.stderr).toBe(0);
    for (const name of Object.keys(agents)) await test.adminClient.call('agents.assign', { agentId: agents[name]!.agentId, graph: 'web' });
    for (const args of [
      ['--graph', 'web', 'UPSTREAM=a'],
      ['--where', 'labels.site=barn-3', 'UPSTREAM=b'],
      ['--agent', 'own', 'UPSTREAM=c'],
    ]) {
      const set = await ferry(['params', 'set', ...args, '--json']);
      expect(set.status, set.stderr).toBe(0);
      expect(JSON.parse(set.stdout).seq).toBeGreaterThan(0);
    }
    for (const name of Object.keys(agents)) expect((await runAgent(name)).status, name).toBe(0);
    expect(seen('plain', 1)).toEqual(['a', 'config-only', agents.plain!.agentId]);
    expect(seen('barn', 1)).toEqual(['b', 'config-only', agents.barn!.agentId]);
    expect(seen('own', 1)).toEqual(['c', 'config-only', agents.own!.agentId]);

    const show = JSON.parse((await ferry(['agents', 'show', 'own', '--json'])).stdout);
    expect(show.params).toEqual([{ key: 'UPSTREAM', value: 'c', source: { layer: 'agent' } }]);
    const barn = JSON.parse((await ferry(['agents', 'show', 'barn', '--json'])).stdout);
    expect(barn.params).toEqual([{ key: 'UPSTREAM', value: 'b', source: { layer: 'group', where: ['labels.site=barn-3'] } }]);
    expect((await ferry(['agents', 'show', 'plain'])).stdout).toMatch(/UPSTREAM=a {2}\(graph web\)/);
    const ls = JSON.parse((await ferry(['params', 'ls', '--json'])).stdout);
    expect(ls.map((layer: { layer: unknown }) => layer.layer)).toEqual([{ graph: 'web' }, { where: ['labels.site=barn-3'] }, { agent: agents.own!.agentId }]);
    // Each change is one audit event, values in clear (they are not secrets).
    const events = [...test.coordinator.events()].filter((event) => event.action === 'param.set');
    expect(events.map((event) => event.subject)).toEqual(['graph:web', 'where:["labels.site=barn-3"]', `agent:${agents.own!.agentId}`]);
  }, 120_000);

  it("changing one agent's parameter re-activates that agent alone, and its held watch answers at once", async () => {
    const ownKey = loadIdentity(path.join(agents.own!.stateDir, 'identity.key'));
    const ownClient = new CoordinatorHttpClient(test.http.url, ownKey);
    const configId = test.coordinator.state.get('graphs', 'web')!.head;
    const desired = await ownClient.call('agent.desired', {});
    expect(desired.params).toEqual({ UPSTREAM: 'c' });
    const barnKey = loadIdentity(path.join(agents.barn!.stateDir, 'identity.key'));
    const barnDesired = await new CoordinatorHttpClient(test.http.url, barnKey).call('agent.desired', {});
    const ownWatch = ownClient.callUnchecked('agent.watch', { known: configId, params: paramsStamp(desired.params), wait: 30 });
    const barnWatch = new CoordinatorHttpClient(test.http.url, barnKey).callUnchecked('agent.watch', { known: configId, params: paramsStamp(barnDesired.params), wait: 3 });
    const started = Date.now();
    const set = await ferry(['params', 'set', '--agent', agents.own!.agentId, 'UPSTREAM=c2']);
    expect(set.status, set.stderr).toBe(0);
    const answered = (await ownWatch) as { configId: string; params: Record<string, string> };
    expect(answered).toMatchObject({ configId, params: { UPSTREAM: 'c2' } });
    expect(Date.now() - started).toBeLessThan(25_000);
    expect(await barnWatch).toEqual({ unchanged: true, configId });

    for (const name of Object.keys(agents)) expect((await runAgent(name)).status, name).toBe(0);
    expect(generationsOf('own')).toBe(2);
    expect(seen('own', 2)).toEqual(['c2', 'config-only', agents.own!.agentId]);
    expect(generationsOf('plain')).toBe(1);
    expect(generationsOf('barn')).toBe(1);

    // Unsetting the agent's own value falls back to its group's: a new generation again, for it alone.
    expect((await ferry(['params', 'unset', '--agent', 'own', 'UPSTREAM'])).status).toBe(0);
    for (const name of Object.keys(agents)) expect((await runAgent(name)).status, name).toBe(0);
    expect(generationsOf('own')).toBe(3);
    expect(seen('own', 3)[0]).toBe('b');
    expect(generationsOf('plain')).toBe(1);
    // A group's change reaches its members only.
    expect((await ferry(['params', 'set', '--where', 'labels.site=barn-3', 'UPSTREAM=b2'])).status).toBe(0);
    for (const name of Object.keys(agents)) expect((await runAgent(name)).status, name).toBe(0);
    expect([generationsOf('plain'), generationsOf('barn'), generationsOf('own')]).toEqual([1, 2, 4]);
    expect(seen('barn', 2)[0]).toBe('b2');
    // Setting what is already set records nothing and re-activates nothing.
    const again = await ferry(['params', 'set', '--graph', 'web', 'UPSTREAM=a', '--json']);
    expect(JSON.parse(again.stdout).seq).toBeNull();
  }, 180_000);
});

describe('--env-secret', () => {
  it('the value reaches the command as its variable; the database, the export and the viewer never hold it', async () => {
    const VALUE = 'env-secret-plaintext-9b2f71';
    const submit = await ferry(['config', 'submit', 'web', '--target', `${system}=${app}`, '--activate', 'bin/start', '--env', 'UPSTREAM=from-config', '--env-secret', `OTHER=${VALUE}`, '--json']);
    expect(submit.status, submit.stderr).toBe(0);
    const body = test.coordinator.state.get('configs', JSON.parse(submit.stdout).configId)!.body as { secrets?: unknown; activation: { environment: Record<string, string> } };
    expect(body.secrets).toEqual([{ name: 'env.web.OTHER', env: 'OTHER' }]);
    expect(body.activation.environment).toEqual({ UPSTREAM: 'from-config' });
    expect((await runAgent('plain')).status).toBe(0);
    const n = generationsOf('plain');
    expect(seen('plain', n)).toEqual(['a', VALUE, agents.plain!.agentId]);

    const databaseFiles = readdirSync(test.coordinator.dataDir).filter((entry) => entry.startsWith('coordinator.db') || entry.endsWith('.db') || entry.endsWith('-wal'));
    expect(databaseFiles.length).toBeGreaterThan(0);
    for (const entry of databaseFiles) expect(readFileSync(path.join(test.coordinator.dataDir, entry)).includes(VALUE), entry).toBe(false);
    const exported = await (await test.adminClient.send('GET', '/v1/audit/export')).text();
    expect(exported).toContain('env.web.OTHER');
    expect(exported).not.toContain(VALUE);
    const { loginPath } = await test.adminClient.call('viewer.session');
    const login = await fetch(`${test.http.url}${loginPath}`, { redirect: 'manual' });
    const cookie = String(login.headers.get('set-cookie')).split(';')[0]!;
    for (const route of ['/viewer/api/events', '/viewer/api/state']) {
      const text = await (await fetch(`${test.http.url}${route}`, { headers: { cookie } })).text();
      expect(text, route).not.toContain(VALUE);
    }
  }, 120_000);
});

describe('params: hostile input', () => {
  it('viewer and agent keys cannot set or unset', async () => {
    const viewer = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: viewer.keyId, role: 'viewer' });
    const agentKey = loadIdentity(path.join(agents.plain!.stateDir, 'identity.key'));
    for (const identity of [viewer, agentKey]) {
      const client = new CoordinatorHttpClient(test.http.url, identity);
      await expect(client.call('params.set', { layer: { graph: 'web' }, values: { UPSTREAM: 'evil' } })).rejects.toMatchObject({ status: 403 });
      await expect(client.call('params.unset', { layer: { graph: 'web' }, keys: ['UPSTREAM'] })).rejects.toMatchObject({ status: 403 });
    }
    // A viewer reads them (they are not secret); an operator may set them.
    expect((await new CoordinatorHttpClient(test.http.url, viewer).call('params.list')).layers.length).toBeGreaterThan(0);
    const operator = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: operator.keyId, role: 'operator' });
    expect((await new CoordinatorHttpClient(test.http.url, operator).call('params.set', { layer: { graph: 'other' }, values: { X: '1' } })).seq).toBeGreaterThan(0);
    expect(test.coordinator.state.get('params', 'graph:web')!.values).toEqual({ UPSTREAM: 'a' });
  });

  it('bad names, values, layers and oversize input are refused, naming what, by the CLI and the coordinator', async () => {
    for (const [args, message] of [
      [['params', 'set', '--graph', 'web', 'FERRY_AGENT_ID=x'], /FERRY_AGENT_ID is refused/],
      [['params', 'set', '--graph', 'web', 'PATH=/tmp'], /PATH is refused/],
      [['params', 'set', '--graph', 'web', 'LD_PRELOAD=/tmp/x.so'], /LD_PRELOAD is refused/],
      [['params', 'set', '--graph', 'web', 'lower=x'], /parameter 'lower'/],
      [['params', 'set', '--graph', 'web', 'NOVALUE'], /give KEY=VALUE/],
      [['params', 'set', '--graph', 'web', `X=${'v'.repeat(4097)}`], /at most 4096/],
      [['params', 'set', 'X=1'], /name one layer/],
      [['params', 'set', '--graph', 'web', '--agent', 'own', 'X=1'], /name one layer/],
      [['params', 'set', '--where', 'facts.site=barn-3', 'X=1'], /operator labels only/],
      [['params', 'set', '--agent', 'nobody', 'X=1'], /no agent named/],
      [['params', 'unset', '--graph', 'web', 'NEVER_SET'], /NEVER_SET is not set/],
    ] as const) {
      const run = await ferry([...args]);
      expect(run.status, args.join(' ')).not.toBe(0);
      expect(run.stderr, args.join(' ')).toMatch(message);
    }
    const client = test.adminClient;
    const tooMany = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`K${i}`, 'v']));
    await expect(client.call('params.set', { layer: { graph: 'web' }, values: tooMany })).rejects.toMatchObject({ status: 400 });
    await expect(client.call('params.set', { layer: { graph: 'web' }, values: { ['A'.repeat(65)]: 'v' } })).rejects.toMatchObject({ status: 400 });
    await expect(client.call('params.set', { layer: { graph: 'web' }, values: { NUL: 'a\0b' } })).rejects.toMatchObject({ status: 400 });
    await expect(client.call('params.set', { layer: { agent: Identity.generate().keyId }, values: { X: '1' } })).rejects.toMatchObject({ status: 404 });
    await expect(client.send('POST', '/v1/params', { body: { layer: { graph: 'web', agent: agents.own!.agentId }, values: { X: '1' } } })).rejects.toMatchObject({ status: 400 });
    // A layer fills up to 256 across changes, not past it.
    const half = (from: number) => Object.fromEntries(Array.from({ length: 128 }, (_, i) => [`F${from + i}`, 'v']));
    expect((await client.call('params.set', { layer: { graph: 'full' }, values: half(0) })).seq).toBeGreaterThan(0);
    expect((await client.call('params.set', { layer: { graph: 'full' }, values: half(128) })).seq).toBeGreaterThan(0);
    await expect(client.call('params.set', { layer: { graph: 'full' }, values: { ONE_MORE: 'v' } })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/over 256/) });
    // The same group, its clauses in another order, is the same layer (not a new group).
    await client.call('params.set', { layer: { where: ['labels.b=1', 'labels.a=1'] }, values: { P: '1' } });
    await client.call('params.set', { layer: { where: ['labels.a=1', 'labels.b=1'] }, values: { Q: '2' } });
    expect(test.coordinator.state.get('params', 'where:["labels.a=1","labels.b=1"]')!.values).toEqual({ P: '1', Q: '2' });
    // At most 64 groups in use.
    const inUse = (await client.call('params.list')).layers.filter((layer) => 'where' in layer.layer).length;
    for (let i = inUse; i < 64; i++) await client.call('params.set', { layer: { where: [`labels.g=${i}`] }, values: { X: '1' } });
    await expect(client.call('params.set', { layer: { where: ['labels.g=64'] }, values: { X: '1' } })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/64 parameter groups/) });
  }, 120_000);
});
