/**
 * The coordinator's HTTP port also speaks TLS with the coordinator's own
 * certificate, and a client that pins that certificate's fingerprint trusts
 * nothing else. Agents enrolled with a `tls=pinned` join string (what
 * `ferry tokens create` hands out) use it for everything: the eavesdropper
 * here is a real TCP relay on 127.0.0.1 that records every byte both ways.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { PinningError } from '../protocol/tls-pinning.js';
import { COORDINATOR_TLS_NAME } from '../protocol/data-protocol.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let httpsUrl: string;
const marker = `ferry-marker-${randomBytes(8).toString('hex')}`;
const target = fakeStorePath('pinned');

/** A TCP relay to `port` that keeps a copy of everything it forwards. */
async function recordingRelay(port: number): Promise<{ url: string; recorded: () => Buffer; close: () => void }> {
  const chunks: Buffer[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    client.on('data', (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
    upstream.on('data', (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    recorded: () => Buffer.concat(chunks),
    close: () => server.close(),
  };
}

beforeAll(async () => {
  test = await startTestCoordinator();
  httpsUrl = test.http.url.replace(/^http:/, 'https:');
  writeTree(path.join(test.dir, 'tree'), 'pinned', { small: 3, large: 0 });
  writeFileSync(path.join(test.dir, 'tree', 'secret.txt'), `${marker}-file\n`);
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
});
afterAll(async () => {
  await test?.close();
});

describe('pinned HTTPS on the HTTP port', () => {
  it('serves plain HTTP and, on the same port, TLS with the certificate the join string pins', async () => {
    const plain = (await (await fetch(`${test.http.url}/v1/info`)).json()) as { coordinatorKey: string };
    expect(plain.coordinatorKey).toBe(test.coordinator.identity.keyId);

    const presented = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: Number(new URL(test.http.url).port), servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false }, () => {
        resolve(socket.getPeerCertificate().fingerprint256.replace(/:/g, '').toLowerCase());
        socket.end();
      });
      socket.on('error', reject);
    });
    expect(presented).toBe(test.coordinator.tls.fingerprint);

    const pinned = new CoordinatorHttpClient(httpsUrl, undefined, { pinnedFingerprint: test.coordinator.tls.fingerprint });
    expect((await pinned.call('info')).coordinatorKey).toBe(test.coordinator.identity.keyId);
    // No CA vouches for it: a client that does not pin it does not trust it.
    await expect(fetch(`${httpsUrl}/v1/info`)).rejects.toThrow();
  });

  it('refuses another certificate before sending anything, whatever the URL scheme, so nothing happens', async () => {
    const tokensBefore = (await test.adminClient.call('tokens.list')).tokens.length;
    const wrongPin = new CoordinatorHttpClient(httpsUrl, test.admin, { pinnedFingerprint: randomBytes(32).toString('hex') });
    const refused = await wrongPin.post('/v1/tokens', { uses: 1 }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(PinningError);
    expect((refused as PinningError).code).toBe('TLS_FINGERPRINT_MISMATCH');
    expect((refused as Error).message).toContain(test.coordinator.tls.fingerprint);

    // An http:// URL is the coordinator's port all the same: a pinned client speaks TLS to it, never in clear.
    const wrongPinHttpUrl = new CoordinatorHttpClient(test.http.url, test.admin, { pinnedFingerprint: randomBytes(32).toString('hex') });
    await expect(wrongPinHttpUrl.post('/v1/tokens', { uses: 1 })).rejects.toBeInstanceOf(PinningError);
    expect((await test.adminClient.call('tokens.list')).tokens.length).toBe(tokensBefore);
    const pinnedHttpUrl = new CoordinatorHttpClient(test.http.url, test.admin, { pinnedFingerprint: test.coordinator.tls.fingerprint });
    await pinnedHttpUrl.call('tokens.create', { uses: 1 });
    expect((await test.adminClient.call('tokens.list')).tokens.length).toBe(tokensBefore + 1);
  });

  for (const pinnedTls of [true, false]) {
    it(`an agent enrolled through a relay ${pinnedTls ? 'with tls=pinned deploys, and the relay sees none of the token, config or files' : 'without tls=pinned shows the relay everything (the control)'}`, async () => {
      const relay = await recordingRelay(Number(new URL(test.http.url).port));
      try {
        const graph = `pinned-${pinnedTls}`;
        const activate = `echo ${marker}-activation > "$FERRY_STATE_DIR/activated"`;
        const { configId } = await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, [], { 'x86_64-linux': target }, 'pinned', { activate }) });
        const stateDir = path.join(test.dir, `agent-${graph}`);
        const { agentId, token } = await enrollStateDir(test, { stateDir, name: graph, pinnedTls, httpUrl: relay.url });
        await test.adminClient.call('agents.assign', { agentId, graph });
        // HTTP only, so the data plane (QUIC is UDP, past the relay) crosses the relay too.
        const agent = new Agent(stateDir, { httpOnly: true, log: () => undefined });
        try {
          await agent.runOnce();
        } finally {
          await agent.close();
        }
        expect(agent.generations.current()?.configId).toBe(configId);
        expect(readFileSync(path.join(stateDir, 'activated'), 'utf8')).toBe(`${marker}-activation\n`);

        const seen = relay.recorded();
        expect(seen.length).toBeGreaterThan(10_000);
        const secrets = [token, `${marker}-activation`, `${marker}-file`, '/v1/enroll', agentId];
        const leaked = secrets.filter((secret) => seen.includes(Buffer.from(secret)));
        expect(leaked).toEqual(pinnedTls ? [] : secrets);
      } finally {
        relay.close();
      }
    });
  }
});
