// Hostile input: a zstd decompression bomb uploaded to the Nix cache
// (issue 16, defect 2). A ~33 KB `.nar.zst` that expands to a NAR of 1 GiB,
// with a narinfo claiming NarSize 1000, against a real coordinator process
// (`ferry coordinator serve`) over HTTP on 127.0.0.1, with a pusher key's
// netrc credentials as `nix copy --to` sends them. The coordinator runs in
// a child process so that its memory can be read from /proc/<pid>/status:
// the upload must be refused with the exact code, leave nothing registered
// or audited, and cost the coordinator no more than a bounded amount of
// memory — where it used to expand the whole input chunk (1 GiB) at once.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { procStatus, resetPeakRss } from '../bench/harness.js';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { zstdCompress } from '../protocol/compression/zstd.js';
import { encodeNixBase32 } from '../nix/index.js';
import { Identity } from '../protocol/identity.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** How much the coordinator's peak RSS may grow while refusing the bomb (it grew ~1.5 GiB before the fix). */
const RSS_GROWTH_BOUND = 150 * MiB;

let dir: string;
let env: NodeJS.ProcessEnv;
let server: ChildProcess | undefined;
let serverLog = '';
let url: string;
let pusherAuth: string;

function ferry(...args: string[]): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [ferryBin, ...args], { env });
  return { status: result.status ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

function ok(...args: string[]): string {
  const result = ferry(...args);
  expect(result.status, `ferry ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}


function nix32Sha256(bytes: Uint8Array | string): string {
  return encodeNixBase32(new Uint8Array(createHash('sha256').update(bytes).digest()));
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
  const zeros = new Uint8Array(MiB);
  for (let left = size; left > 0; left -= zeros.length) yield zeros.subarray(0, Math.min(zeros.length, left));
  yield narString(')');
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

async function serve(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [ferryBin, 'coordinator', 'serve', '--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  server = child;
  child.stderr!.on('data', (chunk: Buffer) => (serverLog += chunk.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
      if (match) resolve({ url: match[1]!, child });
    });
    child.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}${serverLog}`)));
  });
}

async function put(pathname: string, body: Uint8Array | string): Promise<Response> {
  return fetch(`${url}/nix-cache/${pathname}`, { method: 'PUT', headers: { authorization: pusherAuth }, body });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-zstd-'));
  env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'data') };
  ok('coordinator', 'init', '--name', 'hostile');
  url = (await serve()).url;
  const pusher = Identity.generate();
  const keyFile = path.join(dir, 'pusher.key');
  writeFileSync(keyFile, pusher.toKeyFile(), { mode: 0o600 });
  ok('keys', 'add', pusher.keyId, '--role', 'pusher', '--label', 'hostile pusher', '--url', url);
  // The credentials `nix copy --to` would send for the netrc line `ferry cache netrc` prints.
  const [, , , login, , password] = ok('cache', 'netrc', '--url', url, '--key', keyFile).trim().split(' ');
  pusherAuth = `Basic ${Buffer.from(`${login}:${password}`).toString('base64')}`;
}, 120_000);

afterAll(() => {
  server?.kill('SIGKILL');
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('hostile Nix cache uploads: zstd', () => {
  it('defect 2: a zstd bomb (a 1 GiB NAR in ~33 KB) with NarSize 1000 is refused as NAR_MISMATCH, registers and audits nothing, and the coordinator stays within 150 MiB of its memory', async () => {
    const pid = server!.pid!;
    const bomb = await collect(zstdCompress(zeroFileNar(GiB)));
    expect(bomb.length).toBeLessThan(100_000);
    const narUrl = `nar/${nix32Sha256(bomb)}.nar.zst`;
    const hashPart = nix32Sha256('zstd-bomb').slice(0, 32);
    const storePath = `/nix/store/${hashPart}-zstd-bomb`;
    const narinfo = [
      `StorePath: ${storePath}`,
      `URL: ${narUrl}`,
      'Compression: zstd',
      `NarHash: sha256:${nix32Sha256('not the hash of the bomb')}`,
      'NarSize: 1000',
      'References: ',
      '',
    ].join('\n');

    // The spool takes the bomb as it is: its name matches its bytes.
    const spooled = await put(narUrl, bomb);
    expect(spooled.status, await spooled.clone().text()).toBe(200);
    expect((await fetch(`${url}/nix-cache/${hashPart}.narinfo`, { headers: { authorization: pusherAuth } })).status).toBe(404);

    const resetWorked = resetPeakRss(pid);
    const before = procStatus(pid, resetWorked ? 'VmRSS' : 'VmHWM');
    const refused = await put(`${hashPart}.narinfo`, narinfo);
    const peak = procStatus(pid, 'VmHWM');
    const text = await refused.text();
    expect(refused.status, text).toBe(400);
    expect(text).toMatch(/^NAR_MISMATCH: /);
    // The defect itself: the refusal came only after the whole chunk was expanded in memory.
    const growth = peak - before;
    console.log(`defect 2: coordinator RSS ${(before / MiB).toFixed(0)} MiB before the narinfo PUT, peak ${(peak / MiB).toFixed(0)} MiB (+${(growth / MiB).toFixed(1)} MiB; peak ${resetWorked ? 'reset by clear_refs' : 'since start'})`);
    expect(growth, `peak RSS grew by ${(growth / MiB).toFixed(1)} MiB`).toBeLessThan(RSS_GROWTH_BOUND);
    expect(text).toBe(`NAR_MISMATCH: the zstd NAR ${narUrl} decompresses to more than its claimed NarSize of 1000 bytes\n`);
    expect(serverLog).toMatch(/nix-cache refused PUT .*NAR_MISMATCH/);

    // Nothing became visible, nothing was audited.
    expect((await fetch(`${url}/nix-cache/${hashPart}.narinfo`, { headers: { authorization: pusherAuth } })).status).toBe(404);
    expect(ok('audit', 'log', '--action', 'store.push', '--json', '--url', url)).toBe('');
  }, 120_000);
});
