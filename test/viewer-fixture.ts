/**
 * A coordinator with a scripted history for the viewer tests, driven
 * through the real HTTP API (signed requests, recorded in the log) except
 * for the push, recorded in-process as the data plane records it: keys,
 * a token, two agents enrolling and approved, pushes, configs submitted,
 * activations, a failing health check and its rollback, a graph rollback.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Coordinator } from '../coordinator/coordinator.js';
import { addKey } from '../coordinator/domain/commands.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { createIdentityFile, Identity } from '../protocol/identity.js';
import { signedConfig } from './data-plane-fixture.js';
import { addStorePath, bootstrap, coordinatorActor } from './fleet-simulator.js';

export interface ScriptedCoordinator {
  dir: string;
  dataDir: string;
  coordinator: Coordinator;
  http: RunningServer;
  admin: Identity;
  /** A key with the viewer role, saved as `viewerKeyFile`. */
  viewer: Identity;
  viewerKeyFile: string;
  pusher: Identity;
  /** The two agents, gw-1 and gw-2 (both follow graph edge; at the end gw-2 runs its head, healthy so far). */
  agents: Identity[];
  /** Seqs of notable events, by name. */
  marks: Record<string, number>;
  /** Closes and reopens the coordinator (e.g. after tampering with its database file). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startScriptedCoordinator(options: { checkpointEvery?: number } = {}): Promise<ScriptedCoordinator> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-viewer-'));
  const dataDir = path.join(dir, 'coordinator');
  const open = (): Coordinator => Coordinator.open(dataDir, { checkpointEvery: options.checkpointEvery ?? 10 });
  let coordinator = open();
  const { admin } = bootstrap(coordinator);
  const viewerKeyFile = path.join(dir, 'viewer.key');
  const viewer = createIdentityFile(viewerKeyFile);
  const pusher = Identity.generate();
  const self = coordinatorActor(coordinator);
  coordinator.record(self, (context) => addKey(context, { keyId: viewer.keyId, role: 'viewer', label: 'auditor' }));
  coordinator.record(self, (context) => addKey(context, { keyId: pusher.keyId, role: 'pusher', label: 'ci' }));
  let http = await startHttpServer(coordinator, '127.0.0.1', 0, { log: () => undefined });
  const adminClient = new CoordinatorHttpClient(http.url, admin);
  const marks: Record<string, number> = {};
  const last = (name: string): void => {
    marks[name] = coordinator.lastSeq;
  };

  const { token } = await adminClient.call('tokens.create', { uses: 2, label: 'barn', labels: { site: 'barn-3' } });
  const agents = [Identity.generate(), Identity.generate()];
  const agentClients = agents.map((agent) => new CoordinatorHttpClient(http.url, agent));
  await agentClients[0]!.call('enroll', { token, name: 'gw-1', facts: { system: 'x86_64-linux', hostname: 'gw-1', cpus: 4 } });
  last('enroll');
  await agentClients[1]!.call('enroll', { token, name: 'gw-2', facts: { system: 'x86_64-linux', hostname: 'gw-2', cpus: 2 } });
  for (const agent of agents) await adminClient.call('agents.approve', { agentId: agent.keyId });
  last('approve');

  const v1 = await addStorePath(coordinator, 'app-1.0');
  const v2 = await addStorePath(coordinator, 'app-2.0');
  for (const storePath of [v1, v2]) {
    coordinator.record({ keyId: pusher.keyId, role: 'pusher', requestSignature: null }, () => ({
      action: 'store.push',
      subject: storePath,
      payload: { roots: [storePath], registered: [storePath], registeredCount: 1, alreadyPresent: 0, bytesSent: 312, blobsSent: 1, directoriesSent: 1 },
    }));
  }
  last('push');

  const first = signedConfig(admin, 'edge', [], { 'x86_64-linux': v1 }, 'app 1.0', { activate: 'bin/activate', health: 'bin/check' });
  const c1 = (await adminClient.call('graphs.submit', { graph: 'edge', ...first })).configId;
  last('submit1');
  for (const agent of agents) await adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'edge' });
  for (const client of agentClients) {
    for (const phase of ['fetching', 'activating', 'active'] as const) await client.call('agent.status', { configId: c1, phase, error: null });
  }
  last('activate1');
  await agentClients[0]!.call('agent.facts', { facts: { system: 'x86_64-linux', hostname: 'gw-1', cpus: 8 } });
  last('facts');

  const second = signedConfig(admin, 'edge', [c1], { 'x86_64-linux': v2 }, 'app 2.0 (health check fails)', { activate: 'bin/activate', health: 'bin/check' });
  const c2 = (await adminClient.call('graphs.submit', { graph: 'edge', ...second })).configId;
  last('submit2');
  for (const client of agentClients) {
    await client.call('agent.status', { configId: c2, phase: 'fetching', error: null });
    await client.call('agent.status', { configId: c2, phase: 'activating', error: null });
  }
  last('activating2');
  await agentClients[0]!.call('agent.status', { configId: c2, phase: 'failed', error: 'health check failed: bin/check exited with 1' });
  last('fail');
  await agentClients[0]!.call('agent.status', { configId: c2, phase: 'rolled-back', error: 'health check failed; rolled back to the previous generation' });
  last('agentRollback');
  await adminClient.call('graphs.rollback', { graph: 'edge' });
  last('graphRollback');
  await agentClients[1]!.call('agent.status', { configId: c2, phase: 'failed', error: 'health check failed' });
  await agentClients[1]!.call('agent.status', { configId: c1, phase: 'active', error: null });
  last('end');

  return {
    dir,
    dataDir,
    get coordinator() {
      return coordinator;
    },
    get http() {
      return http;
    },
    admin,
    viewer,
    viewerKeyFile,
    pusher,
    agents,
    marks,
    async restart() {
      const port = Number(new URL(http.url).port);
      await http.close();
      coordinator.close();
      coordinator = open();
      http = await startHttpServer(coordinator, '127.0.0.1', port, { log: () => undefined });
    },
    async close() {
      await http.close();
      coordinator.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
