// The Nix binary cache endpoint over real HTTP, without Nix: credentials and
// roles, signed narinfos, NAR streaming with HEAD and Range, and uploads —
// accepted when they verify, refused (nothing visible) when they do not.
// test/nix-cache-real-nix.test.ts does the same with Nix's own tools.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportNar } from '../castore/index.js';
import { nixCachePassword } from '../coordinator/nix-cache/index.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { dumpPath, encodeNixBase32, narHash, parseNarInfo, parseNixPublicKey, serializeNarInfo, storePathBaseName, verifyNarInfoSignature, asStorePath, type NarInfo } from '../nix/index.js';
import { zstdCompress } from '../protocol/compression/zstd.js';
import { createHash } from 'node:crypto';
import { Identity } from '../protocol/identity.js';
import { addTreeAsStorePath, enrollAgent, fakeStorePath, narBytes, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let work: string;
let publicServer: RunningServer;
let cache: string;
let viewer: Identity;
const lib = fakeStorePath('cache-lib-1.0');
const app = fakeStorePath('cache-app-1.0');
const other = fakeStorePath('cache-other-1.0');

function auth(identity: Identity, password = nixCachePassword(identity)): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${identity.keyId}:${password}`).toString('base64')}` };
}

function hashPartOf(storePath: string): string {
  return storePathBaseName(storePath).slice(0, 32);
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

function sha256Nix32(bytes: Uint8Array): string {
  return encodeNixBase32(new Uint8Array(createHash('sha256').update(bytes).digest()));
}

/** `source` compressed by the `xz` CLI (XZ Utils, one thread), as Nix compresses with liblzma. */
function xzCli(args: string[], source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('xz', ['-T1', ...args, '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`xz exited with ${code}`))));
    void (async () => {
      for await (const chunk of source) if (!child.stdin.write(chunk)) await new Promise((drained) => child.stdin.once('drain', drained));
      child.stdin.end();
    })().catch(reject);
  });
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

/** A NAR string: u64 little-endian length, the bytes, zero padding to 8. */
function narString(text: string): Buffer {
  const bytes = Buffer.from(text);
  const out = Buffer.alloc(8 + Math.ceil(bytes.length / 8) * 8);
  out.writeBigUInt64LE(BigInt(bytes.length));
  bytes.copy(out, 8);
  return out;
}

/** The NAR of one regular file of `size` zero bytes (`size` a multiple of 8: no padding), streamed. */
async function* zeroFileNar(size: number): AsyncGenerator<Uint8Array> {
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(size));
  yield Buffer.concat([...['nix-archive-1', '(', 'type', 'regular', 'contents'].map(narString), length]);
  const zeros = new Uint8Array(1024 * 1024);
  for (let left = size; left > 0; left -= zeros.length) yield zeros.subarray(0, Math.min(zeros.length, left));
  yield narString(')');
}

beforeAll(async () => {
  test = await startTestCoordinator();
  cache = `${test.http.url}/nix-cache`;
  work = mkdtempSync(path.join(tmpdir(), 'ferry-nix-cache-http-'));
  writeTree(path.join(work, 'lib'), 'lib', { small: 60, large: 1, largeSize: 600_000 });
  writeTree(path.join(work, 'app'), 'app', { small: 10, large: 0 });
  writeTree(path.join(work, 'other'), 'other', { small: 5, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'lib'), lib);
  await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'app'), app, [lib]);
  await addTreeAsStorePath(test.coordinator.castore, path.join(work, 'other'), other);
  viewer = Identity.generate();
  await test.adminClient.call('keys.add', { keyId: viewer.keyId, role: 'viewer', label: 'reader' });
  publicServer = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: (line) => test.log.push(line), nixCache: { publicRead: true } });
}, 60_000);

afterAll(async () => {
  await publicServer?.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('reading', () => {
  it('serves nix-cache-info and the public key to anyone', async () => {
    const info = await fetch(`${cache}/nix-cache-info`);
    expect(info.status).toBe(200);
    expect(await info.text()).toBe('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n');
    const key = parseNixPublicKey(await (await fetch(`${cache}/public-key`)).text());
    expect(key.name).toBe('test-1');
    expect(Buffer.from(key.publicKey).toString('hex')).toBe(test.coordinator.identity.keyId);
  });

  it('refuses reads without valid credentials of a live key (401/403), and serves them to readers', async () => {
    const url = `${cache}/${hashPartOf(app)}.narinfo`;
    const anonymous = await fetch(url);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic /);
    expect((await fetch(url, { headers: auth(viewer, nixCachePassword(test.pusher)) })).status).toBe(401);
    const stranger = Identity.generate();
    expect((await fetch(url, { headers: auth(stranger) })).status).toBe(401);
    for (const reader of [viewer, test.pusher, test.admin]) expect((await fetch(url, { headers: auth(reader) })).status).toBe(200);

    const revoked = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: revoked.keyId, role: 'viewer', label: 'soon revoked' });
    expect((await fetch(url, { headers: auth(revoked) })).status).toBe(200);
    await test.adminClient.call('keys.revoke', { keyId: revoked.keyId });
    expect((await fetch(url, { headers: auth(revoked) })).status).toBe(403);
  });

  it('serves public reads without credentials when configured so, but never public writes', async () => {
    const response = await fetch(`${publicServer.url}/nix-cache/${hashPartOf(app)}.narinfo`);
    expect(response.status).toBe(200);
    const put = await fetch(`${publicServer.url}/nix-cache/${hashPartOf(app)}.narinfo`, { method: 'PUT', body: 'x' });
    expect(put.status).toBe(401);
  });

  it('signs narinfos with the coordinator key over what castore registered', async () => {
    const text = await (await fetch(`${cache}/${hashPartOf(app)}.narinfo`, { headers: auth(viewer) })).text();
    const info = parseNarInfo(text);
    const registered = test.coordinator.castore.getStorePath(app)!;
    expect(info).toMatchObject({ storePath: app, narHash: registered.narHash, narSize: registered.narSize, compression: 'none', references: [storePathBaseName(lib)] });
    const key = parseNixPublicKey(await (await fetch(`${cache}/public-key`)).text());
    expect(verifyNarInfoSignature(info, [key]).valid).toBe(true);
    expect(verifyNarInfoSignature({ ...info, narSize: info.narSize + 1 }, [key]).valid).toBe(false);
    expect((await fetch(`${cache}/${'0'.repeat(32)}.narinfo`, { headers: auth(viewer) })).status).toBe(404);
  });

  it('streams NARs with Content-Length, answers HEAD without a body, and serves byte ranges', async () => {
    const info = parseNarInfo(await (await fetch(`${cache}/${hashPartOf(lib)}.narinfo`, { headers: auth(viewer) })).text());
    const expected = await narBytes(test.coordinator.castore, lib);
    const full = await fetch(`${cache}/${info.url}`, { headers: auth(viewer) });
    expect(full.status).toBe(200);
    expect(full.headers.get('content-length')).toBe(String(expected.length));
    expect(Buffer.from(await full.arrayBuffer()).equals(expected)).toBe(true);

    const head = await fetch(`${cache}/${info.url}`, { method: 'HEAD', headers: auth(viewer) });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(expected.length));

    const start = 300_000;
    const tail = await fetch(`${cache}/${info.url}`, { headers: { ...auth(viewer), range: `bytes=${start}-` } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get('content-range')).toBe(`bytes ${start}-${expected.length - 1}/${expected.length}`);
    expect(Buffer.from(await tail.arrayBuffer()).equals(expected.subarray(start))).toBe(true);
    const middle = await fetch(`${cache}/${info.url}`, { headers: { ...auth(viewer), range: 'bytes=100-199' } });
    expect(Buffer.from(await middle.arrayBuffer()).equals(expected.subarray(100, 200))).toBe(true);
    expect((await fetch(`${cache}/${info.url}`, { headers: { ...auth(viewer), range: `bytes=${expected.length}-` } })).status).toBe(416);

    const zst = await fetch(`${cache}/${info.url}.zst`, { headers: auth(viewer) });
    expect(zst.status).toBe(200);
    const { zstdDecompress } = await import('../protocol/compression/zstd.js');
    expect((await collect(zstdDecompress((async function* () { yield new Uint8Array(await zst.arrayBuffer()); })(), { maxOutputBytes: expected.length, what: `served ${info.url}.zst` }))).equals(expected)).toBe(true);

    const wrongHash = info.url.replace(/-[0-9a-z]{52}\.nar$/, `-${'0'.repeat(52)}.nar`);
    expect((await fetch(`${cache}/${wrongHash}`, { headers: auth(viewer) })).status).toBe(404);
  });

  it('lets an agent read only the closure of its configs', async () => {
    await test.adminClient.call('graphs.submit', { graph: 'cache-web', ...signedConfig(test.admin, 'cache-web', [], { 'x86_64-linux': app }) });
    const agent = await enrollAgent(test, 'cache-web');
    for (const storePath of [app, lib]) expect((await fetch(`${cache}/${hashPartOf(storePath)}.narinfo`, { headers: auth(agent) })).status).toBe(200);
    expect((await fetch(`${cache}/${hashPartOf(other)}.narinfo`, { headers: auth(agent) })).status).toBe(404);
  });
});

describe('uploading', () => {
  async function narOf(tree: string): Promise<{ nar: Buffer; narHash: string; narSize: number }> {
    const nar = await collect(dumpPath(tree));
    const hashed = await narHash([nar]);
    return { nar, narHash: hashed.narHash, narSize: hashed.narSize };
  }

  function narInfoFor(storePath: string, nar: { narHash: string; narSize: number }, file: { url: string; compression: string }, references: string[] = []): string {
    const info: NarInfo = { storePath: asStorePath(storePath), url: file.url, compression: file.compression, narHash: nar.narHash, narSize: nar.narSize, references: references.map(storePathBaseName), sigs: [] };
    return serializeNarInfo(info);
  }

  async function put(pathname: string, body: Uint8Array | string, identity: Identity = test.pusher): Promise<Response> {
    return fetch(`${cache}/${pathname}`, { method: 'PUT', headers: auth(identity), body });
  }

  const spoolFiles = () => readdirSync(path.join(test.coordinator.dataDir, 'nix-cache', 'spool'));

  it('registers an uploaded NAR once its narinfo verifies, and records one store.push event', async () => {
    writeTree(path.join(work, 'up'), 'up', { small: 20, large: 1, largeSize: 300_000 });
    const storePath = fakeStorePath('uploaded-1.0');
    const nar = await narOf(path.join(work, 'up'));
    const fileName = `${nar.narHash.slice(7)}.nar`;
    expect((await put(`nar/${fileName}`, nar.nar)).status).toBe(200);
    const headSpooled = await fetch(`${cache}/nar/${fileName}`, { method: 'HEAD', headers: auth(test.pusher) });
    expect(headSpooled.status).toBe(200);
    expect(test.coordinator.castore.getStorePath(storePath)).toBeUndefined();
    const before = test.coordinator.lastSeq;
    const response = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${fileName}`, compression: 'none' }, [lib, storePath]));
    expect(response.status, await response.clone().text()).toBe(200);
    const registered = test.coordinator.castore.getStorePath(storePath)!;
    expect(registered).toMatchObject({ narHash: nar.narHash, narSize: nar.narSize, references: [lib, storePath].sort() });
    expect((await collect(exportNar(test.coordinator.castore, registered.root))).equals(nar.nar)).toBe(true);
    const events = [...test.coordinator.events(before)];
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ action: 'store.push', subject: storePath, actorKey: test.pusher.keyId, actorRole: 'pusher', requestSignature: null });
    expect(events[0]!.payload).toMatchObject({ roots: [storePath], registered: [storePath], registeredCount: 1, bytesSent: nar.narSize });
    // Uploading the same narinfo again changes nothing.
    expect((await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${fileName}`, compression: 'none' }, [lib, storePath]))).status).toBe(200);
    expect(test.coordinator.lastSeq).toBe(before + 1);
  });

  it('accepts zstd NARs', async () => {
    writeTree(path.join(work, 'zup'), 'zup', { small: 8, large: 0 });
    const storePath = fakeStorePath('zstd-uploaded-1.0');
    const nar = await narOf(path.join(work, 'zup'));
    const compressed = await collect(zstdCompress((async function* () { yield new Uint8Array(nar.nar); })()));
    const fileName = `${sha256Nix32(compressed)}.nar.zst`;
    expect((await put(`nar/${fileName}`, compressed)).status).toBe(200);
    const response = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${fileName}`, compression: 'zstd' }));
    expect(response.status, await response.clone().text()).toBe(200);
    expect(test.coordinator.castore.getStorePath(storePath)?.narHash).toBe(nar.narHash);
  });

  it('accepts xz NARs (Nix\'s default), stored in castore form and served as before', async () => {
    writeTree(path.join(work, 'xup'), 'xup', { small: 8, large: 1, largeSize: 200_000 });
    const storePath = fakeStorePath('xz-uploaded-1.0');
    const nar = await narOf(path.join(work, 'xup'));
    const compressed = await xzCli(['-6', '--check=crc64'], once(nar.nar));
    const fileName = `${sha256Nix32(compressed)}.nar.xz`;
    expect((await put(`nar/${fileName}`, compressed)).status).toBe(200);
    const headSpooled = await fetch(`${cache}/nar/${fileName}`, { method: 'HEAD', headers: auth(test.pusher) });
    expect(headSpooled.headers.get('content-type')).toBe('application/x-xz');
    const narinfo = serializeNarInfo({ ...parseNarInfo(narInfoFor(storePath, nar, { url: `nar/${fileName}`, compression: 'xz' })), fileHash: `sha256:${sha256Nix32(compressed)}`, fileSize: compressed.length });
    const before = test.coordinator.lastSeq;
    const response = await put(`${hashPartOf(storePath)}.narinfo`, narinfo);
    expect(response.status, await response.clone().text()).toBe(200);
    const registered = test.coordinator.castore.getStorePath(storePath)!;
    expect(registered).toMatchObject({ narHash: nar.narHash, narSize: nar.narSize });
    expect((await collect(exportNar(test.coordinator.castore, registered.root))).equals(nar.nar)).toBe(true);
    const events = [...test.coordinator.events(before)];
    expect(events).toHaveLength(1);
    // bytesSent: what crossed the wire, the xz file.
    expect(events[0]).toMatchObject({ action: 'store.push', subject: storePath, payload: { registered: [storePath], bytesSent: compressed.length } });
    // Served as every other path: uncompressed, with FileHash = NarHash.
    const served = parseNarInfo(await (await fetch(`${cache}/${hashPartOf(storePath)}.narinfo`, { headers: auth(viewer) })).text());
    expect(served).toMatchObject({ compression: 'none', fileHash: nar.narHash, fileSize: nar.narSize });
    expect(served.url).toMatch(/^nar\/[0-9a-z]{32}-[0-9a-z]{52}\.nar$/);
    expect(Buffer.from(await (await fetch(`${cache}/${served.url}`, { headers: auth(viewer) })).arrayBuffer()).equals(nar.nar)).toBe(true);
  });

  it('refuses an xz bomb (a 1 GiB NAR in ~150 KB) claiming NarSize 1000 as NAR_MISMATCH; nothing registered or audited', async () => {
    const bomb = await xzCli(['-0'], zeroFileNar(1024 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(300_000);
    const narUrl = `nar/${sha256Nix32(bomb)}.nar.xz`;
    const storePath = fakeStorePath('xz-bomb');
    const seq = test.coordinator.lastSeq;
    expect((await put(narUrl, bomb)).status).toBe(200);
    const claimed = { narHash: `sha256:${sha256Nix32(Buffer.from('not the hash of the bomb'))}`, narSize: 1000 };
    const refused = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, claimed, { url: narUrl, compression: 'xz' }));
    expect(refused.status).toBe(400);
    expect(await refused.text()).toBe(`NAR_MISMATCH: the xz NAR ${narUrl} decompresses to more than its claimed NarSize of 1000 bytes\n`);
    expect(test.coordinator.castore.getStorePath(storePath)).toBeUndefined();
    expect((await fetch(`${cache}/${hashPartOf(storePath)}.narinfo`, { headers: auth(test.pusher) })).status).toBe(404);
    expect(test.coordinator.lastSeq).toBe(seq);
  }, 60_000);

  it('refuses uploads that do not verify, leaving nothing visible', async () => {
    writeTree(path.join(work, 'bad'), 'bad', { small: 8, large: 0 });
    writeFileSync(path.join(work, 'bad', 'marker'), 'M'.repeat(1000));
    const storePath = fakeStorePath('corrupt-1.0');
    const nar = await narOf(path.join(work, 'bad'));
    const visible = async () => ({
      registered: test.coordinator.castore.getStorePath(storePath) !== undefined,
      narinfo: (await fetch(`${cache}/${hashPartOf(storePath)}.narinfo`, { headers: auth(viewer) })).status,
    });
    const seq = test.coordinator.lastSeq;

    // Bytes that do not match the file name they are uploaded under.
    const flipped = Buffer.from(nar.nar);
    flipped[flipped.indexOf('M'.repeat(1000)) + 500]! ^= 1; // inside a file's contents: still a valid NAR
    const named = `${nar.narHash.slice(7)}.nar`;
    const mismatch = await put(`nar/${named}`, flipped);
    expect(mismatch.status).toBe(400);
    expect(await mismatch.text()).toMatch(/NAR_HASH_MISMATCH/);
    expect(spoolFiles()).not.toContain(named);

    // A NAR (consistently named) whose NarHash is not the narinfo's.
    const wrongFile = `${sha256Nix32(flipped)}.nar`;
    expect((await put(`nar/${wrongFile}`, flipped)).status).toBe(200);
    const wrong = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${wrongFile}`, compression: 'none' }));
    expect(wrong.status).toBe(400);
    expect(await wrong.text()).toMatch(/NAR_MISMATCH/);

    // The same inside zstd, where only the ingest can tell.
    const compressed = await collect(zstdCompress((async function* () { yield new Uint8Array(flipped); })()));
    const zstFile = `${sha256Nix32(compressed)}.nar.zst`;
    expect((await put(`nar/${zstFile}`, compressed)).status).toBe(200);
    const zstWrong = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${zstFile}`, compression: 'zstd' }));
    expect(zstWrong.status).toBe(400);
    expect(await zstWrong.text()).toMatch(/NAR_MISMATCH/);
    // A claimed NarSize smaller than what the zstd stream expands to.
    const short = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, { ...nar, narSize: 100 }, { url: `nar/${zstFile}`, compression: 'zstd' }));
    expect(short.status).toBe(400);

    // Garbage where a NAR should be.
    const garbage = Buffer.from('not a nar at all');
    const garbageFile = `${sha256Nix32(garbage)}.nar`;
    expect((await put(`nar/${garbageFile}`, garbage)).status).toBe(200);
    const notNar = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, { narHash: `sha256:${sha256Nix32(garbage)}`, narSize: garbage.length }, { url: `nar/${garbageFile}`, compression: 'none' }));
    expect(notNar.status).toBe(400);

    // Missing references, a NAR never uploaded, a malformed narinfo, a narinfo for another path, unsupported compression.
    const goodFile = `${nar.narHash.slice(7)}.nar`;
    expect((await put(`nar/${goodFile}`, nar.nar)).status).toBe(200);
    const missingRef = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${goodFile}`, compression: 'none' }, [fakeStorePath('never-pushed')]));
    expect(missingRef.status).toBe(422);
    const notUploaded = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, { narHash: `sha256:${'1'.repeat(52)}`, narSize: 8 }, { url: `nar/${'1'.repeat(52)}.nar`, compression: 'none' }));
    expect(notUploaded.status).toBe(404);
    expect((await put(`${hashPartOf(storePath)}.narinfo`, 'StorePath: nonsense\n')).status).toBe(400);
    expect((await put(`${hashPartOf(other)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${goodFile}`, compression: 'none' }))).status).toBe(400);
    const bz2 = await put(`nar/${goodFile}.bz2`, nar.nar);
    expect(bz2.status).toBe(415);
    expect(await bz2.text()).toMatch(/^UNSUPPORTED_COMPRESSION: .*only xz \(Nix's default\), zstd and uncompressed NARs are accepted/);
    const bz2Info = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${goodFile}.bz2`, compression: 'bzip2' }));
    expect(bz2Info.status).toBe(415);
    expect(await bz2Info.text()).toMatch(/^UNSUPPORTED_COMPRESSION: compression 'bzip2' is not accepted/);

    // xz: a NAR that is not xz under an xz name, a truncated xz NAR, and names that do not match the Compression.
    const notXz = await put(`nar/${goodFile}.xz`, nar.nar); // named by its own hash, so spooled
    expect(notXz.status).toBe(200);
    const notXzInfo = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${goodFile}.xz`, compression: 'xz' }));
    expect(notXzInfo.status).toBe(400);
    expect(await notXzInfo.text()).toMatch(/^BAD_NAR: NAR nar\/.*\.nar\.xz is not valid xz: it does not start with the xz magic bytes/);
    const xz = await xzCli(['-6'], once(nar.nar));
    const cut = xz.subarray(0, xz.length - 40);
    expect((await put(`nar/${sha256Nix32(cut)}.nar.xz`, cut)).status).toBe(200);
    const cutInfo = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${sha256Nix32(cut)}.nar.xz`, compression: 'xz' }));
    expect(cutInfo.status).toBe(400);
    expect(await cutInfo.text()).toMatch(/^BAD_NAR: .* ends inside an xz stream/);
    expect((await put(`nar/${sha256Nix32(xz)}.nar.xz`, xz)).status).toBe(200);
    for (const [url, compression] of [[`nar/${sha256Nix32(xz)}.nar.xz`, 'zstd'], [`nar/${sha256Nix32(xz)}.nar.xz`, 'none'], [`nar/${goodFile}`, 'xz']] as const) {
      const mismatched = await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url, compression }));
      expect(mismatched.status, `${url} ${compression}`).toBe(400);
      expect(await mismatched.text()).toMatch(/^BAD_NARINFO: URL .* does not match Compression/);
    }

    // Roles: a viewer may not upload, nor anyone without credentials.
    expect((await put(`nar/${goodFile}`, nar.nar, viewer)).status).toBe(403);
    expect((await fetch(`${cache}/nar/${goodFile}`, { method: 'PUT', body: nar.nar })).status).toBe(401);
    expect((await put(`${hashPartOf(storePath)}.narinfo`, narInfoFor(storePath, nar, { url: `nar/${goodFile}`, compression: 'none' }), viewer)).status).toBe(403);

    expect(await visible()).toEqual({ registered: false, narinfo: 404 });
    expect(test.coordinator.lastSeq).toBe(seq);
    expect(test.log.some((line) => /nix-cache refused PUT .*NAR_MISMATCH/.test(line))).toBe(true);
  });

  it('refuses a NAR over the size limit before spooling it', async () => {
    const small = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: () => undefined, nixCache: { maxNarBytes: 1000 } });
    try {
      const big = Buffer.alloc(5000, 1);
      const response = await fetch(`${small.url}/nix-cache/nar/${sha256Nix32(big)}.nar`, { method: 'PUT', headers: auth(test.pusher), body: big });
      expect(response.status).toBe(413);
      expect(spoolFiles()).not.toContain(`${sha256Nix32(big)}.nar`);
    } finally {
      await small.close();
    }
  });
});
