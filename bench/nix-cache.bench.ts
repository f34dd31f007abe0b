/**
 * The coordinator as a Nix binary cache vs static files, in the same run:
 * `nix copy --from` of the ~200 MiB / 20,000-file closure into a fresh
 * chroot store, (a) from Ferry's /nix-cache endpoint, which rebuilds the
 * NAR from castore as it streams, and (b) from the same closure written by
 * `nix copy --to file://…?compression=none` and served as static files by a
 * small Node HTTP server (fs streams, the same runtime as Ferry) and, where
 * busybox is installed, by `busybox httpd`; and straight from `file://` (no
 * HTTP: the floor). Signatures are required in every case (the static cache
 * is signed with `nix store sign`); destination stores are on tmpfs. Also times the
 * bare NAR download (curl to /dev/null) from each, and a resumed download
 * (Range from the middle). Target: Ferry within 1.25x of the static server.
 * Run: npm run bench:nix-cache   (needs Nix; see bench/README.md)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { ingestStorePath } from '../castore/index.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { addKey } from '../coordinator/domain/commands.js';
import { nixCacheNetrcLine, nixCachePassword } from '../coordinator/nix-cache/index.js';
import { startHttpServer } from '../coordinator/server.js';
import { formatNixPublicKey, formatNixSecretKey, generateNixSecretKey, nixPublicKeyOf, normalizeNarHash, parseNarInfo, storePathBaseName } from '../nix/index.js';
import { Identity } from '../protocol/identity.js';
import { nixEnv } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { mbPerSecond, report } from './harness.js';

const runs = Number(process.env.BENCH_RUNS ?? 5);
mkdirSync(benchWorkDir, { recursive: true });
const work = mkdtempSync(path.join(benchWorkDir, 'nix-cache-'));
// Destination stores go to tmpfs where there is one: creating 20,000 files on this VM's disk costs
// 5–8 s of openat under load (strace), drowning what is measured here, the cache serving them.
const destinations = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : work, 'ferry-nix-cache-dst-'));
const env: NodeJS.ProcessEnv = { ...nixEnv, XDG_CACHE_HOME: path.join(work, 'xdg-cache') };

/** Runs a command without blocking this process (it serves the caches); resolves with its wall time in seconds. */
function timed(command: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Number(process.hrtime.bigint() - start) / 1e9) : reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${stderr}`))));
  });
}

/** A static file server: what any web server in front of a `file://` cache does. */
function startStaticServer(root: string): Promise<{ url: string; server: Server }> {
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://x');
    const file = path.join(root, path.normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, ''));
    let size: number;
    try {
      const stats = statSync(file);
      if (!stats.isFile()) throw new Error('not a file');
      size = stats.size;
    } catch {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-length': String(size), 'content-type': 'application/octet-stream' });
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    createReadStream(file, { highWaterMark: 1 << 20 }).pipe(response);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server })));
}

async function startBusybox(root: string): Promise<{ url: string; child: ChildProcess } | undefined> {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((candidate) => existsSync(candidate));
  if (!busybox) return undefined;
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(busybox, ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', root], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      if ((await fetch(`${url}/nix-cache-info`)).ok) return { url, child };
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill();
  return undefined;
}

const storePath = bigClosureStorePath(0, env);
const hashPart = storePathBaseName(storePath).slice(0, 32);
process.stderr.write(`closure: ${storePath}\n`);

// Ferry: a coordinator whose castore holds the closure, straight from `nix-store --dump`.
const coordinator = Coordinator.open(path.join(work, 'coordinator'));
const self = { keyId: coordinator.identity.keyId, role: 'coordinator' as const };
coordinator.record(self, () => ({ action: 'coordinator.init', subject: coordinator.identity.keyId, payload: { name: 'bench', coordinatorKey: coordinator.identity.keyId } }));
const reader = Identity.generate();
coordinator.record(self, (context) => addKey(context, { keyId: reader.keyId, role: 'viewer', label: 'bench reader' }));
const info = JSON.parse(execFileSync('nix', ['path-info', '--json', storePath], { env, encoding: 'utf8' })) as { narHash: string; narSize: number; ca?: string }[];
const dump = spawn('nix-store', ['--dump', storePath], { env, stdio: ['ignore', 'pipe', 'inherit'] });
await ingestStorePath(coordinator.castore, dump.stdout!, { storePath, narHash: normalizeNarHash(info[0]!.narHash), narSize: info[0]!.narSize, references: [], ...(info[0]!.ca ? { ca: info[0]!.ca } : {}) });
const narSize = info[0]!.narSize;
const ferry = await startHttpServer(coordinator, '127.0.0.1', 0, { log: (line) => process.stderr.write(`${line}\n`) });
const ferryCache = `${ferry.url}/nix-cache`;
const netrc = path.join(work, 'netrc');
writeFileSync(netrc, `${nixCacheNetrcLine(ferry.url, reader)}\n`, { mode: 0o600 });
const ferryKey = (await (await fetch(`${ferryCache}/public-key`)).text()).trim();

// Static: the same closure as Nix writes a file:// cache, signed by a Nix key.
const staticRoot = path.join(work, 'static-cache');
execFileSync('nix', ['copy', '--to', `file://${staticRoot}?compression=none`, storePath], { env });
const staticSecret = generateNixSecretKey('static-1');
const staticKeyFile = path.join(work, 'static.sk');
writeFileSync(staticKeyFile, formatNixSecretKey(staticSecret));
execFileSync('nix', ['store', 'sign', '--store', `file://${staticRoot}`, '--key-file', staticKeyFile, storePath], { env });
const staticKey = formatNixPublicKey(nixPublicKeyOf(staticSecret));
const staticServer = await startStaticServer(staticRoot);
const busybox = await startBusybox(staticRoot);

interface Source {
  name: string;
  cache: string;
  key: string;
  /** The NAR's URL, for the bare download timings (none for file://). */
  narUrl?: string;
}
const narUrlOf = (cache: string, text: string) => `${cache}/${parseNarInfo(text).url}`;
const ferryNarinfo = await (await fetch(`${ferryCache}/${hashPart}.narinfo`, { headers: { authorization: `Basic ${Buffer.from(`${reader.keyId}:${nixCachePassword(reader)}`).toString('base64')}` } })).text();
const staticNarinfo = readFileSync(path.join(staticRoot, `${hashPart}.narinfo`), 'utf8');
const sources: Source[] = [
  { name: 'ferry /nix-cache (castore → NAR on the fly)', cache: ferryCache, key: ferryKey, narUrl: narUrlOf(ferryCache, ferryNarinfo) },
  { name: 'static files, Node http server', cache: staticServer.url, key: staticKey, narUrl: narUrlOf(staticServer.url, staticNarinfo) },
  ...(busybox ? [{ name: 'static files, busybox httpd', cache: busybox.url, key: staticKey, narUrl: narUrlOf(busybox.url, staticNarinfo) }] : []),
  { name: 'file:// (no HTTP: the floor)', cache: `file://${staticRoot}`, key: staticKey },
];

const copySeconds = new Map<string, number>();
const downloadSeconds = new Map<string, number>();
const resumeSeconds = new Map<string, number>();
const best = (map: Map<string, number>, name: string, seconds: number) => map.set(name, Math.min(map.get(name) ?? Infinity, seconds));
let destination = 0;
for (let run = 0; run < runs; run++) {
  // Alternate the sources within each round, so drift on a noisy machine hits them alike.
  for (const source of run % 2 === 0 ? sources : [...sources].reverse()) {
    const root = path.join(destinations, `dst-${destination++}`);
    best(copySeconds, source.name, await timed('nix', [
      'copy', '--from', source.cache, '--to', `local?root=${root}`,
      '--option', 'require-sigs', 'true', '--option', 'trusted-public-keys', source.key, '--option', 'netrc-file', netrc,
      storePath,
    ]));
    rmSync(root, { recursive: true, force: true });
    if (source.narUrl === undefined) continue;
    best(downloadSeconds, source.name, await timed('curl', ['-sfS', '--netrc-file', netrc, '-o', '/dev/null', source.narUrl]));
    best(resumeSeconds, source.name, await timed('curl', ['-sfS', '--netrc-file', netrc, '-o', '/dev/null', '-r', `${Math.floor(narSize / 2)}-`, source.narUrl]));
  }
}

const reference = copySeconds.get(sources[1]!.name)!;
const referenceDownload = downloadSeconds.get(sources[1]!.name)!;
report(
  'nix-cache',
  sources.map((source) => ({
    source: source.name,
    'nix copy --from (s)': Number(copySeconds.get(source.name)!.toFixed(3)),
    'vs static (Node)': Number((copySeconds.get(source.name)! / reference).toFixed(2)),
    ...(downloadSeconds.has(source.name)
      ? {
          'NAR download (s)': Number(downloadSeconds.get(source.name)!.toFixed(3)),
          'NAR rate': mbPerSecond(narSize, downloadSeconds.get(source.name)!),
          'download vs static (Node)': Number((downloadSeconds.get(source.name)! / referenceDownload).toFixed(2)),
          'second half, Range (s)': Number(resumeSeconds.get(source.name)!.toFixed(3)),
        }
      : {}),
  })),
);
const ratio = copySeconds.get(sources[0]!.name)! / reference;
console.log(`NAR ${narSize} bytes; best of ${runs}. nix copy --from: ferry / static = ${ratio.toFixed(2)}x (target <= 1.25x: ${ratio <= 1.25 ? 'met' : 'NOT met'})`);

busybox?.child.kill();
staticServer.server.close();
await ferry.close();
coordinator.close();
rmSync(work, { recursive: true, force: true });
rmSync(destinations, { recursive: true, force: true });
