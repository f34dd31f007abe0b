// Bundles carry secret ciphertext (docs/secrets.md, "Bundles"), with real
// processes: `ferry bundle create` reads the coordinator's data dir and puts
// each referenced secret's latest ciphertext (and its recipients) in the
// signed manifest; `ferry agent apply-bundle` on an agent that never reaches
// the coordinator decrypts it at activation. Hostile: a tampered ciphertext
// (the signature fails, nothing is kept), a bundle without the secret and an
// agent that is not a recipient (each fails naming the secret, running
// nothing), a secret the config does not reference (refused by the schema).
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixSystem } from '../agent/facts.js';
import { secretsRoot } from '../agent/generation-secrets.js';
import { blake3, LocalCastore, writeBundle, type BundleConfig } from '../castore/index.js';
import type { ConfigBody } from '../protocol/config.js';
import { asConfigId } from '../protocol/config.js';
import { secretCiphertexts } from '../coordinator/db/secret-ciphertexts.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { runFerrySource } from './cli-process.js';

const system = nixSystem();
const app = fakeStorePath('bundle-secret-app');
const VALUE = 'air-gapped-plaintext-3c9e1b';

let test: TestCoordinator;
let work: string;
let adminKeyFile: string;
let configId: string;
const agents: Record<string, { stateDir: string; agentId: string }> = {};

const ferry = (args: string[], input = '') => runFerrySource(args, { FERRY_URL: test.http.url, FERRY_KEY: adminKeyFile, FERRY_CONFIG_DIR: path.join(work, 'cli-config') }, input);

async function bytesOf(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** `bundle` with its manifest passed through `change` (its signature kept, or made again by `resign`). */
async function rewritten(bundle: Buffer, change: (manifest: Record<string, unknown>) => void, resign?: (format: string, bytes: Buffer) => Buffer): Promise<Buffer> {
  const extract = tar.extract();
  extract.end(bundle);
  const entries: { name: string; bytes: Buffer }[] = [];
  for await (const entry of extract) entries.push({ name: entry.header.name, bytes: await bytesOf(entry as AsyncIterable<Uint8Array>) });
  const manifest = JSON.parse(entries.find((entry) => entry.name === 'ferry-bundle.json')!.bytes.toString('utf8')) as Record<string, unknown>;
  change(manifest);
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const pack = tar.pack();
  for (const entry of entries) {
    let bytes = entry.bytes;
    if (entry.name === 'ferry-bundle.json') bytes = manifestBytes;
    if (entry.name === 'ferry-bundle.sig' && resign) bytes = resign(String(manifest.format), manifestBytes);
    pack.entry({ name: entry.name, size: bytes.length, mtime: new Date(0) }, bytes);
  }
  pack.finalize();
  return bytesOf(pack as unknown as AsyncIterable<Uint8Array>);
}

const applyBundle = (name: string, file: string) => ferry(['agent', 'apply-bundle', file, '--state-dir', agents[name]!.stateDir]);

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  work = mkdtempSync(path.join(tmpdir(), 'ferry-secret-bundles-'));
  adminKeyFile = path.join(work, 'admin.key');
  writeFileSync(adminKeyFile, test.admin.toKeyFile(), { mode: 0o600 });
  const tree = path.join(work, 'app');
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  writeFileSync(path.join(tree, 'bin', 'start'), '#!/bin/sh\ncat "$FERRY_SECRET_DB_PASS" > "$FERRY_STATE_DIR/seen.$FERRY_GENERATION"\n');
  chmodSync(path.join(tree, 'bin', 'start'), 0o755);
  const source = LocalCastore.open(path.join(work, 'source'));
  await addTreeAsStorePath(source, tree, app);
  await pushToCoordinator(test, source, [app]);
  source.close();
  for (const name of ['air', 'outsider', 'tampered', 'missing']) {
    const stateDir = path.join(work, name);
    agents[name] = { stateDir, ...(await enrollStateDir(test, { stateDir, name })) };
  }
  expect((await ferry(['secrets', 'set', 'db-pass', '--agents', 'air,tampered,missing'], VALUE)).status).toBe(0);
  const submit = await ferry(['config', 'submit', 'offline', '--target', `${system}=${app}`, '--activate', 'bin/start', '--secret', 'db-pass', '--json']);
  expect(submit.status, submit.stderr).toBe(0);
  configId = JSON.parse(submit.stdout).configId;
}, 120_000);

afterAll(async () => {
  for (const { stateDir, agentId } of Object.values(agents)) rmSync(secretsRoot(stateDir, agentId), { recursive: true, force: true });
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('bundles carry secret ciphertext', () => {
  const file = () => path.join(work, 'offline.tar');

  it('bundle create puts the ciphertext in the signed manifest (never the value); an air-gapped recipient decrypts at activation', async () => {
    const create = await ferry(['bundle', 'create', configId, '--data-dir', test.coordinator.dataDir, '--agents', 'air', '--agents', 'outsider', '-o', file()]);
    expect(create.status, create.stderr).toBe(0);
    expect(create.stderr).toMatch(/secret db-pass is not encrypted to 1 agent\(s\) of the bundle/);
    const bytes = readFileSync(file());
    expect(bytes.includes(VALUE)).toBe(false);
    expect(bytes.toString('latin1')).toContain('"secrets":[{"name":"db-pass","version":1');

    const applied = await applyBundle('air', file());
    expect(applied.status, applied.stderr + applied.stdout).toBe(0);
    expect(readFileSync(path.join(agents.air!.stateDir, 'seen.1'), 'utf8')).toBe(VALUE);
    expect(readFileSync(path.join(agents.air!.stateDir, 'generations', '1', 'secrets.json'), 'utf8')).not.toContain(VALUE);
  }, 120_000);

  it('an agent of the bundle that is not a recipient fails naming the secret and runs nothing', async () => {
    const applied = await applyBundle('outsider', file());
    expect(applied.status).not.toBe(0);
    const events = readFileSync(path.join(agents.outsider!.stateDir, 'events.jsonl'), 'utf8');
    expect(events).toMatch(/secret 'db-pass' \(version 1\) is not encrypted to this agent .*ferry secrets rekey db-pass/);
    expect(existsSync(path.join(agents.outsider!.stateDir, 'seen.1'))).toBe(false);
  }, 60_000);

  it('a tampered ciphertext breaks the signature: refused, nothing kept', async () => {
    const bundle = await bytesOf(writeBundle(test.coordinator.castore, test.coordinator.identity, configOf(), { audience: { agents: [agents.tampered!.agentId as never], where: [] }, secrets: bundled() }).bytes);
    const tampered = await rewritten(bundle, (manifest) => {
      const secret = (manifest.secrets as { ciphertext: string }[])[0]!;
      const raw = Buffer.from(secret.ciphertext, 'base64');
      raw[raw.length - 1] = raw[raw.length - 1]! ^ 1;
      secret.ciphertext = raw.toString('base64');
    });
    writeFileSync(path.join(work, 'tampered.tar'), tampered);
    const applied = await applyBundle('tampered', path.join(work, 'tampered.tar'));
    expect(applied.status).not.toBe(0);
    expect(applied.stderr).toMatch(/BAD_BUNDLE.*not signed by coordinator/);
    expect(existsSync(path.join(agents.tampered!.stateDir, 'generations', '1'))).toBe(false);
  }, 60_000);

  it('a bundle without the secret fails naming it; one carrying a secret the config does not reference is refused', async () => {
    const without = await bytesOf(writeBundle(test.coordinator.castore, test.coordinator.identity, configOf(), { audience: { agents: [agents.missing!.agentId as never], where: [] } }).bytes);
    writeFileSync(path.join(work, 'without.tar'), without);
    const applied = await applyBundle('missing', path.join(work, 'without.tar'));
    expect(applied.status).not.toBe(0);
    expect(readFileSync(path.join(agents.missing!.stateDir, 'events.jsonl'), 'utf8')).toMatch(/secret 'db-pass' is not in the bundle/);
    expect(existsSync(path.join(agents.missing!.stateDir, 'seen.1'))).toBe(false);

    expect(() => writeBundle(test.coordinator.castore, test.coordinator.identity, configOf(), { audience: { agents: [agents.missing!.agentId as never], where: [] }, secrets: [...bundled(), { ...bundled()[0]!, name: 'other' }] })).toThrow(
      /secret 'other' is not referenced by the config/,
    );
    // Signed by the coordinator all the same (a manifest the writer would refuse): the reader refuses it too.
    const extra = await rewritten(
      without,
      (manifest) => {
        manifest.secrets = [...bundled(), { ...bundled()[0]!, name: 'other' }];
      },
      (format, bytes) => Buffer.from(Buffer.from(test.coordinator.identity.sign(new TextEncoder().encode(`${format}\n${Buffer.from(blake3(bytes)).toString('hex')}`))).toString('base64')),
    );
    writeFileSync(path.join(work, 'extra.tar'), extra);
    const refused = await applyBundle('missing', path.join(work, 'extra.tar'));
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/secrets: secret 'other' is not referenced by the config/);
  }, 60_000);
});

function configOf(): BundleConfig {
  return { ...(test.coordinator.state.get('configs', configId)!.body as ConfigBody), id: asConfigId(configId) };
}

/** What bundle create puts in the manifest for db-pass. */
function bundled() {
  const row = test.coordinator.state.get('secrets', 'db-pass')!;
  const ciphertext = secretCiphertexts(test.coordinator).latest('db-pass', row.version, row.ciphertextSha256)!;
  return [{ name: 'db-pass', version: row.version, recipients: row.recipients as never[], ciphertext: ciphertext.toString('base64') }];
}
