// Fixtures of the relay tests with real processes: a counting TCP proxy (an uplink or a LAN whose bytes are
// measured), compressible trees (a closure's files compress about 3x), reading a tree back, and an in-process
// agent enrolled at a site.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import path from 'node:path';
import { expect } from 'vitest';
import { Agent } from '../agent/index.js';
import { formatJoinString } from '../protocol/join-string.js';
import type { TestCoordinator } from './data-plane-fixture.js';

/** A TCP proxy to a port on 127.0.0.1 that counts server -> client bytes (the downlink of an uplink, or what a LAN carried). */
export interface CountingProxy {
  url: string;
  port: number;
  down: number;
  close(): Promise<void>;
}

/**
 * Starts a CountingProxy to `target` (a port, or a function asked at each
 * connection: a process restarted on another port); `onDown` is called
 * with the running count after each chunk (a test that kills the server
 * mid-transfer).
 */
export async function startCountingProxy(target: number | (() => number), onDown: (down: number) => void = () => undefined): Promise<CountingProxy> {
  const sockets = new Set<{ destroy(): void }>();
  const proxy: CountingProxy = { url: '', port: 0, down: 0, close: async () => undefined };
  const server: Server = createServer((client) => {
    const upstream = connect(typeof target === 'number' ? target : target(), '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      proxy.down += chunk.length;
      client.write(chunk);
      onDown(proxy.down);
    });
    upstream.on('end', () => client.end());
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', drop);
    client.on('error', drop);
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = (server.address() as { port: number }).port;
  proxy.url = `https://127.0.0.1:${proxy.port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  return proxy;
}

/**
 * Text-like files (lines of words from a small vocabulary): they compress about 3x, as a closure's do.
 * Writes `files` small text files and one of `largeBytes` (big.dat) under `root`; their total size. `seed` varies the words.
 */
export function writeCompressibleTree(root: string, files: number, largeBytes: number, seed = ''): number {
  const words = ['lib', 'share', 'include', 'static', 'const', 'return', 'function', 'module', 'export', 'nix', 'store', 'ferry', 'relay', 'agent', 'closure', 'blob'];
  let state = 12345 + [...seed].reduce((sum, char) => (sum * 31 + char.charCodeAt(0)) & 0xffff, 0);
  const next = () => (state = (state * 1103515245 + 12345) & 0x7fffffff);
  const text = (bytes: number) => {
    const parts: string[] = [];
    let length = 0;
    while (length < bytes) {
      const part = `${words[next() % words.length]}${next() % 1000}${next() % 9 === 0 ? '\n' : ' '}`;
      parts.push(part);
      length += part.length;
    }
    return parts.join('').slice(0, bytes);
  };
  let total = 0;
  for (let index = 0; index < files; index++) {
    const dir = path.join(root, `d${index % 9}`);
    mkdirSync(dir, { recursive: true });
    const size = 2000 + ((index * 7919) % 60_000);
    writeFileSync(path.join(dir, `f${index}.txt`), text(size));
    total += size;
  }
  mkdirSync(root, { recursive: true });
  writeFileSync(path.join(root, 'big.dat'), text(largeBytes));
  return total + largeBytes;
}

export function filesOf(dir: string, prefix = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) for (const [rel, bytes] of filesOf(full, `${prefix}${name}/`)) out.set(rel, bytes);
    else out.set(`${prefix}${name}`, readFileSync(full));
  }
  return out;
}

/** Asserts that the tree at `materialized` holds exactly the files of `source`, byte for byte. */
export function expectSameTree(materialized: string, source: string): void {
  const got = filesOf(materialized);
  const want = filesOf(source);
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, bytes] of want) expect(got.get(name)!.equals(bytes), name).toBe(true);
}

export interface SiteAgent {
  agent: Agent;
  agentId: string;
  stateDir: string;
  storeDir: string;
}

/** An in-process agent `name` (state under `work`), enrolled approved with the label site=`site`, following `graph`. */
export async function enrollSiteAgent(test: TestCoordinator, work: string, name: string, graph: string, site: string): Promise<SiteAgent> {
  const stateDir = path.join(work, name);
  const storeDir = path.join(stateDir, 'store');
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels: { site } });
  const join = formatJoinString({ httpUrl: test.http.url, coordinatorKey: test.coordinator.identity.keyId, tlsFingerprint: test.coordinator.tls.fingerprint, token, pinnedTls: true });
  const { agentId } = await Agent.enroll(join, { stateDir, storeDir, name });
  await test.adminClient.call('agents.assign', { agentId, graph });
  return { agent: new Agent(stateDir, { log: () => undefined }), agentId, stateDir, storeDir };
}
