// The coordinator as a Nix binary cache, driven by real Nix: `nix copy
// --from` with signatures required (and refused with the wrong key), `nix
// store verify`, `nix path-info --store`, `nix copy --to` uploads (none,
// zstd, and plain `nix copy --to` with Nix's default xz) byte-identical to
// `nix-store --dump` (fetched back by an agent over QUIC, and by Nix), a
// corrupted upload refused, and anonymous reads refused unless
// `ferry coordinator serve --nix-cache-public`. Credentials and the trusted
// key come from `ferry cache netrc` / `ferry cache key`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCastore, exportNar, ingestStorePath } from '../castore/index.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { encodeNixBase32, formatNixPublicKey, generateNixSecretKey, nixPublicKeyOf, parseNarInfo, queryPathInfos, serializeNarInfo, storePathBaseName } from '../nix/index.js';
import { openDataClient } from '../protocol/connect.js';
import type { Identity } from '../protocol/identity.js';
import { fetchConfigClosure, enrollAgent, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { buildFixtureClosure, nixEnv, nixUnavailableReason, type FixtureClosure } from './nix-fixtures/index.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping Nix cache real-Nix tests: ${skipReason}`);
const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');

interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

describe.skipIf(skipReason !== undefined)('the coordinator as a Nix binary cache, with real Nix', () => {
  let dir: string;
  let test: TestCoordinator;
  let cacheUrl: string;
  let fixture: FixtureClosure;
  let trustedKey: string;
  let pusherNetrc: string;
  let env: NodeJS.ProcessEnv;
  let stores = 0;

  /**
   * Runs a command without blocking the event loop (the coordinator under
   * test runs in this process); resolves to its exit status and output.
   */
  const run = (command: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<RunResult> =>
    new Promise((resolve, reject) => {
      const child = spawn(command, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
      child.on('error', reject);
      child.on('close', (code) => resolve({ status: code ?? -1, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() }));
    });
  const ferry = (...args: string[]) => run(process.execPath, [ferryBin, ...args]);
  const ok = async (pending: Promise<RunResult>): Promise<string> => {
    const result = await pending;
    expect(result.status, `${result.stderr}\n${result.stdout}`).toBe(0);
    return result.stdout;
  };
  const freshStore = () => path.join(dir, `store-${++stores}`);
  const dump = (storePath: string) => spawnSync('nix-store', ['--dump', storePath], { env: nixEnv, maxBuffer: 1 << 30 }).stdout;
  const narOf = async (store: LocalCastore, storePath: string) => {
    const chunks: Uint8Array[] = [];
    for await (const chunk of exportNar(store, store.getStorePath(storePath)!.root)) chunks.push(chunk);
    return Buffer.concat(chunks);
  };
  const keyFileOf = (identity: Identity, name: string) => {
    const file = path.join(dir, `${name}.key`);
    writeFileSync(file, identity.toKeyFile(), { mode: 0o600 });
    return file;
  };
  /** The `Authorization` header Nix sends for a netrc file written by `ferry cache netrc`. */
  const basicFromNetrc = (file: string): string => {
    const [, , , login, , password] = readFileSync(file, 'utf8').trim().split(' ');
    return `Basic ${Buffer.from(`${login}:${password}`).toString('base64')}`;
  };
  /** `nix copy --from <cache>` into a fresh chroot store, signatures required. */
  const copyFrom = (from: string, storeRoot: string, trusted: string, netrc: string | undefined, paths: string[]) =>
    run('nix', [
      'copy', '--from', from, '--to', `local?root=${storeRoot}`,
      '--option', 'require-sigs', 'true',
      '--option', 'trusted-public-keys', trusted,
      ...(netrc ? ['--option', 'netrc-file', netrc] : []),
      ...paths,
    ]);

  beforeAll(async () => {
    fixture = buildFixtureClosure();
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-nix-cache-'));
    env = { ...nixEnv, XDG_CACHE_HOME: path.join(dir, 'xdg-cache'), FERRY_CONFIG_DIR: path.join(dir, 'config') };
    test = await startTestCoordinator();
    cacheUrl = `${test.http.url}/nix-cache`;
    // The fixture closure, in the coordinator's castore straight from `nix-store --dump`.
    for (const info of await queryPathInfos(fixture.paths)) {
      await ingestStorePath(test.coordinator.castore, (async function* () { yield new Uint8Array(dump(info.path)); })(), {
        storePath: info.path,
        narHash: info.narHash,
        narSize: info.narSize,
        references: info.references,
        ...(info.deriver ? { deriver: info.deriver } : {}),
        signatures: info.signatures ?? [],
      });
    }
    trustedKey = (await ok(ferry('cache', 'key', '--url', test.http.url))).trim();
    pusherNetrc = path.join(dir, 'pusher.netrc');
    writeFileSync(pusherNetrc, await ok(ferry('cache', 'netrc', '--url', test.http.url, '--key', keyFileOf(test.pusher, 'pusher'))), { mode: 0o600 });
  }, 180_000);

  afterAll(async () => {
    await test?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints the trusted key and netrc line Nix needs', () => {
    expect(trustedKey).toBe(formatNixPublicKey({ name: 'test-1', publicKey: test.coordinator.identity.publicKey }));
    expect(readFileSync(pusherNetrc, 'utf8')).toMatch(new RegExp(`^machine 127\\.0\\.0\\.1 login ${test.pusher.keyId} password [A-Za-z0-9+/]{86}==\\n$`));
  });

  it('refuses to print a key other than the one the CLI context pinned', async () => {
    const configDir = path.join(dir, 'pinned-config');
    mkdirSync(configDir);
    const context = { url: test.http.url, keyFile: keyFileOf(test.pusher, 'pusher'), coordinatorKey: 'ab'.repeat(32) };
    writeFileSync(path.join(configDir, 'contexts.json'), JSON.stringify({ current: 'pinned', contexts: { pinned: context } }));
    const refused = await run(process.execPath, [ferryBin, 'cache', 'key'], { FERRY_CONFIG_DIR: configDir });
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/not the pinned/);
  });

  it('serves `nix copy --from` with signatures required, and the copy passes `nix store verify`', async () => {
    const root = freshStore();
    await ok(copyFrom(cacheUrl, root, trustedKey, pusherNetrc, [fixture.app]));
    expect(readFileSync(path.join(root, fixture.greeting)).length).toBeGreaterThan(0);
    // Contents re-hashed against NarHash, and every path signed by the trusted key.
    await ok(run('nix', ['store', 'verify', '--store', `local?root=${root}`, '--trusted-public-keys', trustedKey, '--sigs-needed', '1', '--all']));
  }, 120_000);

  it('is refused by Nix when another key is trusted', async () => {
    const root = freshStore();
    const impostor = formatNixPublicKey(nixPublicKeyOf(generateNixSecretKey('test-1')));
    const refused = await copyFrom(cacheUrl, root, impostor, pusherNetrc, [fixture.app]);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/lacks a valid signature/);
    expect(existsSync(path.join(root, fixture.app))).toBe(false);
  }, 120_000);

  it('lists the paths with their NarHash and size to `nix path-info --store`', async () => {
    type PathInfo = { path: string; narHash: string; narSize: number; references: string[]; signatures?: string[] };
    const listed = JSON.parse(await ok(run('nix', ['path-info', '--store', cacheUrl, '--option', 'netrc-file', pusherNetrc, '--json', ...fixture.paths]))) as PathInfo[];
    const local = JSON.parse(await ok(run('nix', ['path-info', '--json', ...fixture.paths]))) as PathInfo[];
    expect(listed.map(({ path, narHash, narSize, references }) => ({ path, narHash, narSize, references }))).toEqual(
      local.map(({ path, narHash, narSize, references }) => ({ path, narHash, narSize, references })),
    );
    for (const info of listed) expect(info.signatures?.some((sig) => sig.startsWith('test-1:'))).toBe(true);
  }, 60_000);

  it('accepts `nix copy --to ?compression=none`; an agent then fetches the closure over QUIC, NARs identical to nix-store --dump', async () => {
    const fresh = buildFixtureClosure('nix-cache-upload-none');
    const before = test.coordinator.lastSeq;
    await ok(run('nix', ['copy', '--to', `${cacheUrl}?compression=none`, '--option', 'netrc-file', pusherNetrc, fresh.app]));
    for (const storePath of fresh.paths) expect((await narOf(test.coordinator.castore, storePath)).equals(dump(storePath)), storePath).toBe(true);
    const events = [...test.coordinator.events(before)].filter((event) => event.action === 'store.push');
    expect(events.map((event) => event.subject).sort()).toEqual([...fresh.paths].sort());
    expect(events.every((event) => event.actorKey === test.pusher.keyId && event.actorRole === 'pusher')).toBe(true);

    const { configId } = await test.adminClient.call('graphs.submit', { graph: 'nix-cache', ...signedConfig(test.admin, 'nix-cache', [], { 'x86_64-linux': fresh.app }) });
    const agent = await enrollAgent(test, 'nix-cache');
    const { client } = await openDataClient(test.http.url, agent, { tlsFingerprint: test.coordinator.tls.fingerprint });
    const store = LocalCastore.open(path.join(dir, 'agent-castore'));
    try {
      const report = await fetchConfigClosure(client, store, configId, { coordinatorKey: test.coordinator.identity.keyId });
      expect(client.transportKind).toBe('quic');
      expect(report.storePaths.map((info) => info.storePath).sort()).toEqual([...fresh.paths].sort());
      for (const storePath of fresh.paths) expect((await narOf(store, storePath)).equals(dump(storePath)), storePath).toBe(true);
    } finally {
      store.close();
      await client.close();
    }
  }, 180_000);

  it('accepts `nix copy --to ?compression=zstd`, and serves zstd NARs that Nix substitutes', async () => {
    const fresh = buildFixtureClosure('nix-cache-upload-zstd');
    await ok(run('nix', ['copy', '--to', `${cacheUrl}?compression=zstd`, '--option', 'netrc-file', pusherNetrc, fresh.app]));
    for (const storePath of fresh.paths) expect((await narOf(test.coordinator.castore, storePath)).equals(dump(storePath)), storePath).toBe(true);

    const zstd: RunningServer = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: (line) => test.log.push(line), nixCache: { compression: 'zstd' } });
    try {
      const netrc = path.join(dir, 'zstd.netrc');
      writeFileSync(netrc, await ok(ferry('cache', 'netrc', '--url', zstd.url, '--key', keyFileOf(test.pusher, 'pusher'))));
      const narinfo = await fetch(`${zstd.url}/nix-cache/${storePathBaseName(fresh.app).slice(0, 32)}.narinfo`, { headers: { authorization: basicFromNetrc(netrc) } });
      expect(parseNarInfo(await narinfo.text())).toMatchObject({ compression: 'zstd' });
      const root = freshStore();
      await ok(copyFrom(`${zstd.url}/nix-cache`, root, trustedKey, netrc, [fresh.app, fixture.app]));
      await ok(run('nix', ['store', 'verify', '--store', `local?root=${root}`, '--trusted-public-keys', trustedKey, '--sigs-needed', '1', ...fresh.paths, ...fixture.paths]));
    } finally {
      await zstd.close();
    }
  }, 180_000);

  it('accepts plain `nix copy --to` (no ?compression: Nix\'s default, xz); the paths are registered, byte-identical, and Nix fetches them back', async () => {
    const fresh = buildFixtureClosure('nix-cache-upload-xz');
    const spool = path.join(test.coordinator.dataDir, 'nix-cache', 'spool');
    const xzBefore = new Set(readdirSync(spool).filter((name) => name.endsWith('.nar.xz')));
    const before = test.coordinator.lastSeq;
    await ok(run('nix', ['copy', '--to', cacheUrl, '--option', 'netrc-file', pusherNetrc, fresh.app]));
    // What Nix sent: one nar/<FileHash>.nar.xz per path (kept in the spool for its grace period after ingest).
    const sent = readdirSync(spool).filter((name) => name.endsWith('.nar.xz') && !xzBefore.has(name));
    expect(sent.length).toBe(fresh.paths.length);
    for (const storePath of fresh.paths) expect((await narOf(test.coordinator.castore, storePath)).equals(dump(storePath)), storePath).toBe(true);
    const events = [...test.coordinator.events(before)].filter((event) => event.action === 'store.push');
    expect(events.map((event) => event.subject).sort()).toEqual([...fresh.paths].sort());

    const root = freshStore();
    await ok(copyFrom(cacheUrl, root, trustedKey, pusherNetrc, [fresh.app]));
    await ok(run('nix', ['store', 'verify', '--store', `local?root=${root}`, '--trusted-public-keys', trustedKey, '--sigs-needed', '1', ...fresh.paths]));
  }, 180_000);

  it('refuses a corrupted upload of a Nix-made NAR and narinfo; nothing becomes visible', async () => {
    const fresh = buildFixtureClosure('nix-cache-upload-corrupt');
    // Nix writes the closure to a file:// cache; we then upload the greeting (no references) by hand, corrupted.
    const fileCache = path.join(dir, 'file-cache');
    await ok(run('nix', ['copy', '--to', `file://${fileCache}?compression=none`, fresh.greeting]));
    const hashPart = storePathBaseName(fresh.greeting).slice(0, 32);
    const narinfoText = readFileSync(path.join(fileCache, `${hashPart}.narinfo`), 'utf8');
    const info = parseNarInfo(narinfoText);
    const nar = readFileSync(path.join(fileCache, info.url));
    const corrupt = Buffer.from(nar);
    const contents = corrupt.indexOf('hello from ferry');
    expect(contents).toBeGreaterThan(0);
    corrupt[contents] = 0x48; // 'Hello': still a valid NAR, another NarHash
    const authorization = basicFromNetrc(pusherNetrc);
    const put = (name: string, body: Uint8Array | string) => fetch(`${cacheUrl}/${name}`, { method: 'PUT', headers: { authorization }, body });
    const seq = test.coordinator.lastSeq;

    // Corrupted bytes under the name Nix gave the good ones: refused on arrival.
    const underGoodName = await put(info.url, corrupt);
    expect(underGoodName.status).toBe(400);
    // Consistently renamed, so only the narinfo's NarHash can tell: refused at the narinfo.
    const corruptName = `nar/${encodeNixBase32(new Uint8Array(createHash('sha256').update(corrupt).digest()))}.nar`;
    expect((await put(corruptName, corrupt)).status).toBe(200);
    const pointed = serializeNarInfo({ ...info, url: corruptName, fileHash: undefined, fileSize: undefined });
    const refused = await put(`${hashPart}.narinfo`, pointed);
    expect(refused.status).toBe(400);
    expect(await refused.text()).toMatch(/NAR_MISMATCH/);

    expect(test.coordinator.castore.getStorePath(fresh.greeting)).toBeUndefined();
    expect(test.coordinator.lastSeq).toBe(seq);
    expect((await run('nix', ['path-info', '--store', cacheUrl, '--option', 'netrc-file', pusherNetrc, fresh.greeting])).status).not.toBe(0);
    expect((await copyFrom(cacheUrl, freshStore(), trustedKey, pusherNetrc, [fresh.greeting])).status).not.toBe(0);

    // The untouched upload, as Nix made it, is accepted.
    renameSync(path.join(fileCache, info.url), path.join(fileCache, 'good.nar'));
    expect((await put(info.url, readFileSync(path.join(fileCache, 'good.nar')))).status).toBe(200);
    expect((await put(`${hashPart}.narinfo`, narinfoText)).status).toBe(200);
    expect((await narOf(test.coordinator.castore, fresh.greeting)).equals(dump(fresh.greeting))).toBe(true);
  }, 180_000);

  it('refuses anonymous reads by default, and serves them with `ferry coordinator serve --nix-cache-public`', async () => {
    // The in-process coordinator requires credentials: Nix finds nothing without them.
    const anonymous = await copyFrom(cacheUrl, freshStore(), trustedKey, undefined, [fixture.app]);
    expect(anonymous.status).not.toBe(0);
    expect(test.log.some((line) => /nix-cache refused (GET|HEAD) .*UNAUTHENTICATED/.test(line))).toBe(true);
    expect((await fetch(`${cacheUrl}/${storePathBaseName(fixture.app).slice(0, 32)}.narinfo`)).status).toBe(401);

    // A coordinator process serving reads publicly.
    const publicEnv = { FERRY_DATA_DIR: path.join(dir, 'public-data') };
    mkdirSync(publicEnv.FERRY_DATA_DIR);
    await ok(run(process.execPath, [ferryBin, 'coordinator', 'init', '--name', 'public-cache'], publicEnv));
    const server: ChildProcess = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--listen', '127.0.0.1:0', '--no-quic', '--nix-cache-public'], {
      env: { ...env, ...publicEnv },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      let out = '';
      const url = await new Promise<string>((resolve, reject) => {
        server.stdout!.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
          if (match && /Nix cache:.*reads: public/.test(out)) resolve(match[1]!);
        });
        server.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
      });
      // The CLI context from `init` holds the admin key and the pinned coordinator key.
      const publicKey = (await ok(ferry('cache', 'key', '--url', url))).trim();
      expect(publicKey).toMatch(/^public-cache-1:/);
      const adminNetrc = path.join(dir, 'admin.netrc');
      writeFileSync(adminNetrc, await ok(ferry('cache', 'netrc', '--url', url)));
      await ok(run('nix', ['copy', '--to', `${url}/nix-cache?compression=none`, '--option', 'netrc-file', adminNetrc, fixture.app]));
      const root = freshStore();
      await ok(copyFrom(`${url}/nix-cache`, root, publicKey, undefined, [fixture.app]));
      await ok(run('nix', ['store', 'verify', '--store', `local?root=${root}`, '--trusted-public-keys', publicKey, '--sigs-needed', '1', ...fixture.paths]));
      // Writes still need credentials.
      const put = await fetch(`${url}/nix-cache/nar/${'0'.repeat(52)}.nar`, { method: 'PUT', body: 'x' });
      expect(put.status).toBe(401);
    } finally {
      server.kill('SIGTERM');
    }
  }, 180_000);
});
