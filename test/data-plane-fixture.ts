/**
 * A real coordinator for data-plane tests: SQLite and castore in a temp
 * directory, the HTTP API and the QUIC listener on 127.0.0.1, an admin, a
 * pusher, and helpers to build store paths, submit configs and enroll agents
 * through the real API.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { copyClosure, exportNar, ingestStorePath, LocalCastore, openVouchedClosure, uploadStorePaths, type CastoreServices, type CopyOptions, type CopyReport } from '../castore/index.js';
import type { Coordinator, CoordinatorOptions } from '../coordinator/coordinator.js';
import { addKey, configId, configSigningMessage } from '../coordinator/domain/commands.js';
import type { RunningQuicServer } from '../coordinator/quic-server.js';
import type { RunningServer } from '../coordinator/server.js';
import { startCoordinator } from '../coordinator/start.js';
import { dumpPath } from '../nix/nar/index.js';
import { asStorePath, type StorePath } from '../nix/store-path.js';
import { asConfigId, type HealthCheck } from '../protocol/config.js';
import { formatHlc } from '../protocol/hlc.js';
import { openDataClient } from '../protocol/connect.js';
import type { DataClient } from '../protocol/data-client.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { formatJoinString } from '../protocol/join-string.js';
import { Agent } from '../agent/index.js';
import { Identity, type KeyId } from '../protocol/identity.js';
import { bootstrap, coordinatorActor } from './fleet-simulator.js';

export interface TestCoordinator {
  dir: string;
  coordinator: Coordinator;
  http: RunningServer;
  quic: RunningQuicServer;
  admin: Identity;
  pusher: Identity;
  adminClient: CoordinatorHttpClient;
  log: string[];
  /** `http://…/metrics`, when started with `metrics: true`. */
  metricsUrl: string | undefined;
  close(): Promise<void>;
}

export async function startTestCoordinator(options: { quic?: boolean; coordinator?: CoordinatorOptions; metrics?: boolean } = {}): Promise<TestCoordinator> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-data-'));
  const log: string[] = [];
  const running = await startCoordinator({
    dataDir: path.join(dir, 'coordinator'),
    listen: { host: '127.0.0.1', port: 0 },
    quic: options.quic === false ? false : { host: '127.0.0.1', port: 0 },
    log: (line) => log.push(line),
    coordinator: options.coordinator,
    ...(options.metrics ? { metricsListen: { host: '127.0.0.1', port: 0 } } : {}),
  });
  const { coordinator, http } = running;
  const { admin } = bootstrap(coordinator);
  const pusher = Identity.generate();
  coordinator.record(coordinatorActor(coordinator), (context) => addKey(context, { keyId: pusher.keyId, role: 'pusher', label: 'ci' }));
  return {
    dir,
    coordinator,
    http,
    get quic(): RunningQuicServer {
      if (!running.quic) throw new Error('this test coordinator serves no QUIC (started with quic: false)');
      return running.quic;
    },
    admin,
    pusher,
    adminClient: new CoordinatorHttpClient(http.url, admin),
    log,
    metricsUrl: running.metrics?.url,
    async close() {
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** A deterministic pseudo-random file tree: many small files, a few large ones, symlinks, nested dirs. */
export function writeTree(root: string, seed: string, shape: { small: number; large: number; largeSize?: number }): void {
  mkdirSync(root, { recursive: true });
  const bytes = (n: number, salt: string) => {
    const out = Buffer.alloc(n);
    let filled = 0;
    for (let counter = 0; filled < n; counter++) {
      const block = Buffer.from(sha256Hex(`${seed}/${salt}/${counter}`), 'hex');
      filled += block.copy(out, filled);
    }
    return out;
  };
  for (let index = 0; index < shape.small; index++) {
    const dir = path.join(root, `d${index % 7}`, `s${index % 3}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `f${index}`), bytes(50 + ((index * 977) % 9000), `small${index}`), { mode: index % 5 === 0 ? 0o755 : 0o644 });
  }
  for (let index = 0; index < shape.large; index++) writeFileSync(path.join(root, `big${index}`), bytes(shape.largeSize ?? 3 * 1024 * 1024 + 12345, `large${index}`));
}


/** A fake but well-formed store path name for `name`. */
export function fakeStorePath(name: string): StorePath {
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
  const digest = createHash('sha256').update(name).digest();
  return asStorePath(`/nix/store/${[...digest.subarray(0, 32)].map((b) => alphabet[b % 32]).join('')}-${name}`);
}

/** Ingests a directory tree into `store` as store path `storePath`. */
export async function addTreeAsStorePath(store: LocalCastore, dir: string, storePath: string, references: string[] = []): Promise<void> {
  await ingestStorePath(store, dumpPath(dir), { storePath, references });
}

/** The NAR of a file tree on disk (`nix-store --dump` of it, by our encoder). */
export async function narOfTree(dir: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of dumpPath(dir)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export async function narBytes(store: LocalCastore, storePath: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of exportNar(store, store.getStorePath(storePath)!.root)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export function signedConfig(
  author: Identity,
  graph: string,
  parents: string[],
  targets: Record<string, string>,
  message = 'test',
  commands: { activate?: string; health?: string | HealthCheck } = {},
) {
  const body = {
    graph,
    parents: parents.map(asConfigId),
    targets: Object.fromEntries(Object.entries(targets).map(([system, target]) => [system, asStorePath(target)])),
    activation: { command: commands.activate ?? 'bin/activate', environment: {}, timeoutSeconds: 60 },
    health: typeof commands.health === 'string' ? { command: commands.health, timeoutSeconds: 10, retries: 0 } : (commands.health ?? null),
    message,
    author: author.keyId,
    hlc: formatHlc({ wall: Date.now(), counter: 0, node: 'test' }),
  };
  return { body, signature: Buffer.from(author.sign(configSigningMessage(configId(body)))).toString('base64') };
}

/** Pushes `roots` and their closure from `source` to the coordinator, as its pusher, over the data plane. */
export async function pushToCoordinator(test: TestCoordinator, source: LocalCastore, roots: string[]): Promise<void> {
  const { client } = await openDataClient(test.http.url, test.pusher);
  try {
    await uploadStorePaths(client, source, roots);
  } finally {
    await client.close();
  }
}

/**
 * Enrolls a real Agent (its state dir, key and store dir) with a fresh
 * auto-approve token and a join string for `httpUrl` (default the
 * coordinator's; a proxy or relay in front of it otherwise); returns its id
 * and the token it used.
 */
export async function enrollStateDir(
  test: TestCoordinator,
  options: { stateDir: string; storeDir?: string; name: string; pinnedTls?: boolean; httpUrl?: string },
): Promise<{ agentId: string; token: string }> {
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true });
  const join = formatJoinString({
    httpUrl: options.httpUrl ?? test.http.url,
    coordinatorKey: test.coordinator.identity.keyId,
    tlsFingerprint: test.coordinator.tls.fingerprint,
    token,
    pinnedTls: options.pinnedTls ?? false,
  });
  const { agentId } = await Agent.enroll(join, { stateDir: options.stateDir, storeDir: options.storeDir ?? path.join(options.stateDir, 'store'), name: options.name });
  return { agentId, token };
}

/** Enrolls a new agent with an auto-approve token and assigns it to `graph`. */
export async function enrollAgent(test: TestCoordinator, graph: string, system = 'x86_64-linux'): Promise<Identity> {
  const agent = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true });
  await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name: `agent-${randomBytes(3).toString('hex')}`, facts: { system, hostname: 'test' } });
  await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph });
  return agent;
}

/**
 * Fetches a config's closure as the agent does: the manifest checked
 * against `coordinatorKey`, then copied from the data plane into `target`.
 * Reports the config's store path (`target`) with the copy's report.
 */
export async function fetchConfigClosure(
  client: DataClient,
  target: CastoreServices,
  configId: string,
  options: CopyOptions & { coordinatorKey: KeyId; system?: string },
): Promise<CopyReport & { target: string }> {
  const { coordinatorKey, system = 'x86_64-linux', ...copy } = options;
  const closure = await openVouchedClosure(client, configId, system, coordinatorKey);
  return { ...(await copyClosure(closure.source, target, closure.storePaths, copy)), target: closure.target };
}
