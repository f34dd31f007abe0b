// Secrets encrypted to the machines (docs/secrets.md), with real processes: the
// CLI (`ferry secrets set|rekey|ls`, `config submit --secret`) and agents
// (`ferry agent run --once`) run from the sources against a coordinator on
// 127.0.0.1 with a real SQLite file. A recipient's activation reads the file;
// an agent that is not one fails naming the secret; the database, the audit
// export and the viewer's JSON hold no plaintext; a new version re-activates
// only the agents whose config uses it. Hostile: a non-admin key, malformed
// names, paths and modes, an oversize ciphertext, a ciphertext not for the agent.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { secretsRoot } from '../agent/generation-secrets.js';
import { LocalCastore } from '../castore/index.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { formatHlc } from '../protocol/hlc.js';
import { encryptSecret, recipientOfKey } from '../protocol/secrets.js';
import { secretsStamp } from '../protocol/secret-refs.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { runFerrySource } from './cli-process.js';

const system = nixSystem();
const app = fakeStorePath('secret-app');
const VALUE = 'hunter2-plaintext-7f3a9c';
const ROTATED = 'rotated-plaintext-51d0e4';

let test: TestCoordinator;
let work: string;
let adminKeyFile: string;
const agents: Record<string, { stateDir: string; agentId: string }> = {};

/** Runs `ferry …` from the sources in a child process, `input` on its standard input. */
const ferry = (args: string[], input = '', keyFile = adminKeyFile) => runFerrySource(args, { FERRY_URL: test.http.url, FERRY_KEY: keyFile, FERRY_CONFIG_DIR: path.join(work, 'cli-config') }, input);

const runAgent = (name: string) => ferry(['agent', 'run', '--once', '--state-dir', agents[name]!.stateDir]);
const generationsOf = (name: string) => (existsSync(path.join(agents[name]!.stateDir, 'generations')) ? readdirSync(path.join(agents[name]!.stateDir, 'generations')).filter((entry) => /^\d+$/.test(entry)).length : 0);

/** Every byte of the coordinator's database files. */
function databaseBytes(): Buffer {
  const file = Coordinator.paths(test.coordinator.dataDir).database;
  return Buffer.concat([file, `${file}-wal`].filter((candidate) => existsSync(candidate)).map((candidate) => readFileSync(candidate)));
}

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-secrets-'));
  adminKeyFile = path.join(work, 'admin.key');
  writeFileSync(adminKeyFile, test.admin.toKeyFile(), { mode: 0o600 });
  const tree = path.join(work, 'app');
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  writeFileSync(path.join(tree, 'bin', 'start'), '#!/bin/sh\ncat "$FERRY_SECRET_DB_PASS" > "$FERRY_STATE_DIR/seen.$FERRY_GENERATION"\nstat -c %a "$FERRY_SECRET_DB_PASS" > "$FERRY_STATE_DIR/mode"\nstat -c %u "$FERRY_SECRET_DB_PASS" > "$FERRY_STATE_DIR/uid"\necho "$FERRY_SECRETS_DIR" > "$FERRY_STATE_DIR/dir"\n');
  chmodSync(path.join(tree, 'bin', 'start'), 0o755);
  const source = LocalCastore.open(path.join(work, 'source'));
  await addTreeAsStorePath(source, tree, app);
  await pushToCoordinator(test, source, [app]);
  source.close();
  for (const name of ['reader', 'outsider', 'bystander', 'owned']) {
    const stateDir = path.join(work, name);
    agents[name] = { stateDir, ...(await enrollStateDir(test, { stateDir, name })) };
  }
}, 120_000);

afterAll(async () => {
  for (const { stateDir, agentId } of Object.values(agents)) rmSync(secretsRoot(stateDir, agentId), { recursive: true, force: true });
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('secrets', () => {
  let configId: string;

  it('a recipient decrypts at activation and its command reads the file (0400, paths only); another agent fails naming the secret', async () => {
    const set = await ferry(['secrets', 'set', 'db-pass', '--agents', 'reader', '--json'], VALUE);
    expect(set.status, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ name: 'db-pass', version: 1, recipients: [agents.reader!.agentId] });
    const submit = await ferry(['config', 'submit', 'app', '--target', `${system}=${app}`, '--activate', 'bin/start', '--secret', 'db-pass:db/pass', '--json']);
    expect(submit.status, submit.stderr).toBe(0);
    configId = JSON.parse(submit.stdout).configId;
    for (const name of ['reader', 'outsider']) await test.adminClient.call('agents.assign', { agentId: agents[name]!.agentId, graph: 'app' });

    const reader = await runAgent('reader');
    expect(reader.status, reader.stderr).toBe(0);
    const stateDir = agents.reader!.stateDir;
    expect(readFileSync(path.join(stateDir, 'seen.1'), 'utf8')).toBe(VALUE);
    expect(readFileSync(path.join(stateDir, 'mode'), 'utf8').trim()).toBe('400');
    const dir = readFileSync(path.join(stateDir, 'dir'), 'utf8').trim();
    expect(dir).toBe(path.join(secretsRoot(stateDir, agents.reader!.agentId), '1'));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    // At rest in the state dir: only ciphertext.
    expect(readFileSync(path.join(stateDir, 'generations', '1', 'secrets.json'), 'utf8')).not.toContain(VALUE);
    expect(test.coordinator.state.get('agents', agents.reader!.agentId)).toMatchObject({ currentConfig: configId, phase: 'active' });

    const outsider = await runAgent('outsider');
    expect(outsider.status).not.toBe(0);
    const row = test.coordinator.state.get('agents', agents.outsider!.agentId)!;
    expect(row.phase).toBe('failed');
    expect(row.lastError).toMatch(/secret 'db-pass' \(version 1\) is not encrypted to this agent .*ferry secrets rekey db-pass/);
    expect(generationsOf('outsider')).toBe(0);
    expect(existsSync(path.join(agents.outsider!.stateDir, 'seen.1'))).toBe(false);
  }, 120_000);

  it('the database, the audit export and the viewer hold no plaintext', async () => {
    expect(databaseBytes().includes(VALUE)).toBe(false);
    const exported = await (await test.adminClient.send('GET', '/v1/audit/export')).text();
    expect(exported).toContain('"secret.set"');
    expect(exported).toContain(agents.reader!.agentId);
    expect(exported).not.toContain(VALUE);
    const { loginPath } = await test.adminClient.call('viewer.session');
    const login = await fetch(`${test.http.url}${loginPath}`, { redirect: 'manual' });
    const cookie = String(login.headers.get('set-cookie')).split(';')[0]!;
    const seq = [...test.coordinator.events()].find((event) => event.action === 'secret.set')!.seq;
    for (const route of ['/viewer/api/events', `/viewer/api/events/${seq}`, '/viewer/api/state']) {
      const response = await fetch(`${test.http.url}${route}`, { headers: { cookie } });
      expect(response.status, route).toBe(200);
      const text = await response.text();
      expect(text, route).not.toContain(VALUE);
    }
    const detail = await (await fetch(`${test.http.url}/viewer/api/events/${seq}`, { headers: { cookie } })).text();
    expect(detail).toContain('ciphertextSha256');
  });

  it('rekey adds an agent the selector matches now; ls names it first', async () => {
    // A fixed --agents list matches no new agent: set it again by --where to follow the fleet.
    const reset = await ferry(['secrets', 'set', 'db-pass', '--where', 'desiredGraph=app'], VALUE);
    expect(reset.status, reset.stderr).toBe(0);
    const ls = await ferry(['secrets', 'ls', '--json']);
    expect(JSON.parse(ls.stdout)[0]).toMatchObject({ name: 'db-pass', version: 2, needsRekey: [] });
    await test.adminClient.call('agents.assign', { agentId: agents.bystander!.agentId, graph: 'app' });
    const lsAfter = JSON.parse((await ferry(['secrets', 'ls', '--json'])).stdout);
    expect(lsAfter[0].needsRekey).toEqual([agents.bystander!.agentId]);
    expect((await ferry(['secrets', 'ls'])).stdout).toMatch(/db-pass\s+2\s+2\s+desiredGraph=app\s+yes: 1 new agent/);
    const rekey = await ferry(['secrets', 'rekey', 'db-pass', '--json']);
    expect(rekey.status, rekey.stderr).toBe(0);
    expect(JSON.parse(rekey.stdout)).toMatchObject({ version: 3, added: 1, dropped: 0 });
    await test.adminClient.call('agents.assign', { agentId: agents.bystander!.agentId, graph: null });
  }, 60_000);

  it('a new version re-activates only the agents whose config uses it, and removes the old generation\'s secrets', async () => {
    // The bystander runs a config without secrets.
    const plain = await ferry(['config', 'submit', 'plain', '--target', `${system}=${app}`, '--activate', 'true']);
    expect(plain.status, plain.stderr).toBe(0);
    await test.adminClient.call('agents.assign', { agentId: agents.bystander!.agentId, graph: 'plain' });
    expect((await runAgent('bystander')).status).toBe(0);
    // The reader picks up versions 2 and 3 (its stamp changed): a new generation.
    expect((await runAgent('reader')).status).toBe(0);
    expect(generationsOf('reader')).toBe(2);

    const readerKey = loadIdentity(path.join(agents.reader!.stateDir, 'identity.key'));
    const bystanderKey = loadIdentity(path.join(agents.bystander!.stateDir, 'identity.key'));
    const readerClient = new CoordinatorHttpClient(test.http.url, readerKey);
    const desired = await readerClient.call('agent.desired', {});
    const stamp = secretsStamp(desired.secrets!);
    const plainHead = test.coordinator.state.get('graphs', 'plain')!.head;
    const readerWatch = readerClient.callUnchecked('agent.watch', { known: configId, secrets: stamp, wait: 30 });
    const bystanderWatch = new CoordinatorHttpClient(test.http.url, bystanderKey).callUnchecked('agent.watch', { known: plainHead, wait: 3 });
    const started = Date.now();
    const rotate = await ferry(['secrets', 'set', 'db-pass', '--where', 'desiredGraph=app'], ROTATED);
    expect(rotate.status, rotate.stderr).toBe(0);
    const answered = (await readerWatch) as { configId: string; secrets: { version: number }[] };
    expect(answered.configId).toBe(configId);
    expect(answered.secrets[0]!.version).toBe(4);
    expect(Date.now() - started).toBeLessThan(25_000);
    expect(await bystanderWatch).toEqual({ unchanged: true, configId: plainHead });

    expect((await runAgent('reader')).status).toBe(0);
    expect(generationsOf('reader')).toBe(3);
    expect(readFileSync(path.join(agents.reader!.stateDir, 'seen.3'), 'utf8')).toBe(ROTATED);
    const root = secretsRoot(agents.reader!.stateDir, agents.reader!.agentId);
    expect(readdirSync(root)).toEqual(['3']);
    expect(generationsOf('bystander')).toBe(1);
    expect((await runAgent('bystander')).status).toBe(0);
    expect(generationsOf('bystander')).toBe(1);
  }, 120_000);
});

describe('secrets: hostile input', () => {
  it('a non-admin key cannot set, list or read a secret', async () => {
    const operator = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: operator.keyId, role: 'operator' });
    const client = new CoordinatorHttpClient(test.http.url, operator);
    const ciphertext = Buffer.from(await encryptSecret(new TextEncoder().encode('x'), [recipientOfKey(operator.keyId)])).toString('base64');
    for (const call of [
      () => client.call('secrets.set', { name: 'op', ciphertext, recipients: [], selector: { agents: [agents.reader!.agentId as never] } }),
      () => client.call('secrets.list'),
      () => client.call('secrets.show', { name: 'db-pass' }),
      () => client.call('secrets.remove', { name: 'db-pass' }),
    ]) {
      await expect(call()).rejects.toMatchObject({ status: 403 });
    }
    // An agent's key neither.
    const agentClient = new CoordinatorHttpClient(test.http.url, loadIdentity(path.join(agents.reader!.stateDir, 'identity.key')));
    await expect(agentClient.call('secrets.show', { name: 'db-pass' })).rejects.toMatchObject({ status: 403 });
    expect(test.coordinator.state.get('secrets', 'op')).toBeUndefined();
  });

  it('malformed names, paths and modes are refused by the CLI and the coordinator, naming what', async () => {
    for (const [args, message] of [
      [['secrets', 'set', '../etc', '--agents', 'reader'], /secret name '\.\.\/etc'/],
      [['config', 'submit', 'bad', '--target', `${system}=${app}`, '--activate', 'true', '--secret', 'db-pass:/etc/shadow'], /--secret 'db-pass:\/etc\/shadow': path/],
      [['config', 'submit', 'bad', '--target', `${system}=${app}`, '--activate', 'true', '--secret', 'db-pass:a/../../x'], /path/],
      [['config', 'submit', 'bad', '--target', `${system}=${app}`, '--activate', 'true', '--secret', 'db-pass:x:4777'], /mode/],
      [['config', 'submit', 'bad', '--target', `${system}=${app}`, '--activate', 'true', '--secret', 'db-pass:x:0400:root;id'], /owner/],
      [['secrets', 'set', 'x', '--agents', 'reader', '--where', 'status=enrolled'], /one of the two/],
    ] as const) {
      const run = await ferry([...args], 'v');
      expect(run.status, args.join(' ')).not.toBe(0);
      expect(run.stderr, args.join(' ')).toMatch(message);
    }
    // The coordinator refuses the same without the CLI.
    const body = { graph: 'bad', parents: [], targets: { [system]: app }, activation: { command: 'true', environment: {}, timeoutSeconds: 60 }, health: null, message: '', author: test.admin.keyId, hlc: formatHlc({ wall: Date.now(), counter: 0, node: 'test' }), secrets: [{ name: 'x', path: '../x' }] };
    const refused = await test.adminClient.post('/v1/graphs/bad/configs', { body, signature: 'AA==' }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 400, code: 'INVALID' });
    expect((refused as ApiError).message).toMatch(/body\.secrets\.0\.path/);
    for (const name of ['a b', 'semi;colon', 'x'.repeat(129)]) {
      await expect(test.adminClient.call('secrets.set', { name, ciphertext: 'YQ==', recipients: [], selector: { where: ['status=enrolled'] } }), name).rejects.toMatchObject({ status: 400 });
    }
    expect(test.coordinator.state.get('graphs', 'bad')).toBeUndefined();
  }, 120_000);

  it('an oversize or non-age ciphertext, and a revoked recipient, are refused', async () => {
    const selector = { agents: [agents.reader!.agentId as never] };
    const huge = Buffer.concat([Buffer.from('age-encryption.org/v1\n'), Buffer.alloc(256 * 1024)]).toString('base64');
    await expect(test.adminClient.call('secrets.set', { name: 'big', ciphertext: huge, recipients: [], selector })).rejects.toMatchObject({ status: 400 });
    await expect(test.adminClient.call('secrets.set', { name: 'big', ciphertext: Buffer.from('plaintext!').toString('base64'), recipients: [], selector })).rejects.toMatchObject({ status: 400, code: 'INVALID' });
    const stranger = Identity.generate();
    await expect(test.adminClient.call('secrets.set', { name: 'big', ciphertext: Buffer.from('age-encryption.org/v1\n').toString('base64'), recipients: [stranger.keyId], selector })).rejects.toMatchObject({ status: 404 });
    expect(test.coordinator.state.get('secrets', 'big')).toBeUndefined();
  });

  it('a ciphertext not for the agent fails its activation, naming the secret, and runs nothing', async () => {
    // The coordinator is told the reader is a recipient, but the ciphertext is for another key only.
    const other = Identity.generate();
    const ciphertext = Buffer.from(await encryptSecret(new TextEncoder().encode('not yours'), [recipientOfKey(other.keyId)])).toString('base64');
    await test.adminClient.call('secrets.set', { name: 'db-pass', ciphertext, recipients: [agents.reader!.agentId as never], selector: { agents: [agents.reader!.agentId as never] } });
    const run = await runAgent('reader');
    expect(run.status).not.toBe(0);
    const row = test.coordinator.state.get('agents', agents.reader!.agentId)!;
    expect(row.phase).toBe('rolled-back');
    expect(row.lastError).toMatch(/not run: secret 'db-pass' \(version 5\): the ciphertext is not encrypted to this key/);
    expect(existsSync(path.join(agents.reader!.stateDir, 'seen.4'))).toBe(false);
    // Back on generation 3, whose secrets were decrypted again.
    expect(readdirSync(secretsRoot(agents.reader!.stateDir, agents.reader!.agentId))).toContain('3');
  }, 60_000);

  it('rm is refused while a graph head uses the secret', async () => {
    await expect(test.adminClient.call('secrets.remove', { name: 'db-pass' })).rejects.toMatchObject({ status: 409, message: expect.stringMatching(/the head of graph 'app'/) });
  });

  it("gives a secret the owner and mode its reference asks (a root agent chowns it; the directory lets that user through)", async () => {
    // Last: a new version of db-pass, for this agent only, and a graph of its own.
    const set = await ferry(['secrets', 'set', 'db-pass', '--agents', 'owned', '--json'], VALUE);
    expect(set.status, set.stderr).toBe(0);
    const submit = await ferry(['config', 'submit', 'owned', '--target', `${system}=${app}`, '--activate', 'bin/start', '--secret', 'db-pass:db/pass:0440:nobody', '--json']);
    expect(submit.status, submit.stderr).toBe(0);
    await test.adminClient.call('agents.assign', { agentId: agents.owned!.agentId, graph: 'owned' });
    const run = await runAgent('owned');
    expect(run.status, run.stderr).toBe(0);
    const stateDir = agents.owned!.stateDir;
    expect(readFileSync(path.join(stateDir, 'seen.1'), 'utf8')).toBe(VALUE);
    expect(readFileSync(path.join(stateDir, 'mode'), 'utf8').trim()).toBe('440');
    const nobody = readFileSync('/etc/passwd', 'utf8').split('\n').find((line) => line.startsWith('nobody:'))!.split(':')[2]!;
    if (process.getuid?.() === 0) {
      expect(readFileSync(path.join(stateDir, 'uid'), 'utf8').trim()).toBe(nobody);
      const dir = readFileSync(path.join(stateDir, 'dir'), 'utf8').trim();
      expect(statSync(dir).mode & 0o777).toBe(0o711);
    } else {
      // Not root (CI runs as root): the owner cannot be applied, and the agent says so.
      console.warn('secrets owner test: not root, so only the agent\'s note is checked');
      expect(run.stderr).toMatch(/owner 'nobody' not applied/);
    }
  }, 60_000);
});
