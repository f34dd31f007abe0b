/**
 * Something between an agent and its coordinator (the control plane and the
 * data plane's fallback are plain HTTP) must not be able to choose what the
 * agent runs. The "attacker" here is a real HTTP proxy on 127.0.0.1 that
 * rewrites the coordinator's answers.
 */
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, UnverifiedAnswerError } from '../agent/index.js';
import { LocalCastore } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import { desiredProofMessage, signProof, verifyProof } from '../protocol/coordinator-proofs.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { relayGrantMessage, relayOfferMessage } from '../protocol/relays.js';
import { readFileSync } from 'node:fs';
import { fetchConfigClosure, addTreeAsStorePath, enrollAgent, enrollStateDir, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;
let configId: string;
const target = fakeStorePath('proofs');

/** A real HTTP proxy to `upstream` that passes every answer's body through `rewrite` (url, body) first. */
async function rewritingProxy(upstream: string, rewrite: (url: string, body: Buffer) => Buffer): Promise<{ url: string; server: Server }> {
  const server = createServer((incoming, outgoing) => {
    const forwarded = request(new URL(incoming.url!, upstream), { method: incoming.method, headers: incoming.headers }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.on('end', () => {
        const body = answer.statusCode === 200 ? rewrite(incoming.url!, Buffer.concat(chunks)) : Buffer.concat(chunks);
        const headers = { ...answer.headers, 'content-length': String(body.length) };
        delete headers['transfer-encoding'];
        outgoing.writeHead(answer.statusCode!, headers).end(body);
      });
    });
    incoming.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

beforeAll(async () => {
  test = await startTestCoordinator();
  writeTree(path.join(test.dir, 'tree'), 'proofs', { small: 3, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
  configId = (await test.adminClient.call('graphs.submit', { graph: 'proofs', ...signedConfig(test.admin, 'proofs', [], { 'x86_64-linux': target }) })).configId;
});
afterAll(async () => {
  await test?.close();
});

describe("the coordinator's signed answers", () => {
  it('an agent behind a proxy that changes the activation command refuses the config, and runs nothing', async () => {
    const proxy = await rewritingProxy(test.http.url, (url, body) => {
      if (!url.startsWith('/v1/agent/desired')) return body;
      const answer = JSON.parse(body.toString()) as { config: { activation: { command: string } } | null };
      if (answer.config) answer.config.activation.command = 'touch "$FERRY_PWNED"';
      return Buffer.from(JSON.stringify(answer));
    });
    try {
      const stateDir = path.join(test.dir, 'agent-state');
      const { agentId } = await enrollStateDir(test, { stateDir, storeDir: path.join(test.dir, 'agent-store'), name: 'behind-proxy', httpUrl: proxy.url });
      await test.adminClient.call('agents.assign', { agentId, graph: 'proofs' });
      const agent = new Agent(stateDir, { log: () => undefined });
      await expect(agent.runOnce()).rejects.toBeInstanceOf(UnverifiedAnswerError);
      expect(agent.generations.current()).toBeUndefined();
    } finally {
      proxy.server.close();
    }
  });

  it("an unsigned 'unchanged' watch answer naming another config than the agent's is not taken: the agent asks for a signed answer", async () => {
    // The watch's quiet answer is unsigned: it may only confirm the config the agent verified last.
    const paths: string[] = [];
    const proxy = await rewritingProxy(test.http.url, (url, body) => {
      paths.push(url.split('?')[0]!);
      return url.startsWith('/v1/agent/watch') ? Buffer.from(JSON.stringify({ unchanged: true, configId })) : body;
    });
    const stateDir = path.join(test.dir, 'forged-unchanged');
    await enrollStateDir(test, { stateDir, storeDir: path.join(test.dir, 'forged-unchanged-store'), name: 'forged-unchanged', httpUrl: proxy.url });
    // Not assigned to any graph: its signed answer is "no config", and `configId` is another graph's.
    const agent = new Agent(stateDir, { log: () => undefined, pollIntervalMs: 1000 });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      const count = (route: string) => paths.filter((p) => p === route).length;
      for (const deadline = Date.now() + 20_000; count('/v1/agent/watch') < 3 && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 50));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(count('/v1/agent/watch')).toBeGreaterThanOrEqual(3);
      // The first round's ask, then one after every forged watch answer but a last one possibly still in its round.
      expect(count('/v1/agent/desired')).toBeGreaterThanOrEqual(count('/v1/agent/watch'));
      expect(agent.generations.current()).toBeUndefined();
    } finally {
      stop.abort();
      await running;
      await agent.close();
      proxy.server.close();
    }
  });

  it('relays in a desired answer count only under their own proof: an agent behind a proxy that adds or redirects relays ignores them and fetches from the coordinator', async () => {
    const relayKey = Identity.generate();
    for (const how of ['forged', 'redirected'] as const) {
      const proxy = await rewritingProxy(test.http.url, (url, body) => {
        if (!url.startsWith('/v1/agent/desired')) return body;
        const answer = JSON.parse(body.toString()) as { configId: string | null; relays?: unknown };
        if (!answer.configId) return body;
        const challenge = new URL(url, 'http://x').searchParams.get('challenge')!;
        const agentId = decodeURIComponent(String(proxyAgent));
        const expiresAt = Date.now() + 600_000;
        const coordinator = test.coordinator.identity;
        const grant = { agentId, configId: answer.configId, expiresAt, proof: signProof(coordinator, relayGrantMessage(agentId, answer.configId, expiresAt)) };
        const honest = [{ id: relayKey.keyId, url: 'https://127.0.0.1:9', fingerprint: 'ab'.repeat(32) }];
        // Forged: signed by a key that is not the coordinator's. Redirected: the coordinator's proof, over another relay URL.
        const proof = signProof(how === 'forged' ? Identity.generate() : coordinator, relayOfferMessage(agentId, challenge, { relays: honest, grant }));
        const relays = how === 'forged' ? honest : [{ ...honest[0]!, url: 'https://127.0.0.1:10' }];
        answer.relays = { relays, grant, proof };
        return Buffer.from(JSON.stringify(answer));
      });
      let proxyAgent = '';
      try {
        const stateDir = path.join(test.dir, `relays-${how}`);
        const { agentId } = await enrollStateDir(test, { stateDir, storeDir: path.join(test.dir, `relays-${how}-store`), name: `relays-${how}`, httpUrl: proxy.url });
        proxyAgent = agentId;
        await test.adminClient.call('agents.assign', { agentId, graph: 'proofs' });
        const agent = new Agent(stateDir, { log: () => undefined });
        try {
          // The config's activation fails here (its tree has no bin/activate): what counts is where the closure came from.
          await agent.runOnce();
          const kinds = readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8').split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { kind: string }).kind);
          expect(kinds).toContain('relay-refused');
          expect(kinds).toContain('fetched');
          expect(kinds).not.toContain('relay');
          expect(kinds).not.toContain('relay-failed');
        } finally {
          await agent.close();
        }
      } finally {
        proxy.server.close();
      }
    }
  });

  it('binds a desired-config answer to the asking agent and its challenge, so an old one cannot be replayed', async () => {
    const agent = await enrollAgent(test, 'proofs');
    const client = new CoordinatorHttpClient(test.http.url, agent);
    const key = test.coordinator.identity.keyId;
    const first = randomBytes(16).toString('hex');
    const answer = await client.call('agent.desired', { challenge: first });
    expect(answer.configId).toBe(configId);
    expect(verifyProof(key, desiredProofMessage(agent.keyId, first, answer), answer.proof)).toBe(true);
    // The same answer, replayed to a later request (another challenge) or to another agent, does not verify.
    expect(verifyProof(key, desiredProofMessage(agent.keyId, randomBytes(16).toString('hex'), answer), answer.proof)).toBe(false);
    expect(verifyProof(key, desiredProofMessage(Identity.generate().keyId, first, answer), answer.proof)).toBe(false);
    await expect(client.get('/v1/agent/desired', { challenge: 'not-hex' })).rejects.toMatchObject({ status: 400 });
  });

  it('the fetch refuses a manifest changed on the way (HTTP fallback), or signed by another key', async () => {
    const agent = await enrollAgent(test, 'proofs');
    const store = LocalCastore.open(path.join(test.dir, 'fetch-castore'));
    try {
      const honest = await openDataClient(test.http.url, agent, { httpOnly: true });
      await expect(fetchConfigClosure(honest.client, store, configId, { coordinatorKey: Identity.generate().keyId })).rejects.toMatchObject({ code: 'BAD_PROOF' });
      expect(store.getStorePath(target)).toBeUndefined();

      // The data plane's HTTP fallback answers with a frame: 4-byte length + JSON header. Swap the target for another path.
      const proxy = await rewritingProxy(test.http.url, (url, body) => {
        if (url !== '/v1/data') return body;
        const length = body.readUInt32BE(0);
        const header = JSON.parse(body.subarray(4, 4 + length).toString()) as { storePaths?: { narSize: number }[] };
        if (!header.storePaths) return body;
        for (const info of header.storePaths) info.narSize += 1;
        const json = Buffer.from(JSON.stringify(header));
        const prefix = Buffer.alloc(4);
        prefix.writeUInt32BE(json.length);
        return Buffer.concat([prefix, json, body.subarray(4 + length)]);
      });
      try {
        const tampered = await openDataClient(proxy.url, agent, { httpOnly: true });
        await expect(fetchConfigClosure(tampered.client, store, configId, { coordinatorKey: test.coordinator.identity.keyId })).rejects.toMatchObject({ code: 'BAD_PROOF' });
        expect(store.getStorePath(target)).toBeUndefined();
      } finally {
        proxy.server.close();
      }

      const report = await fetchConfigClosure(honest.client, store, configId, { coordinatorKey: test.coordinator.identity.keyId });
      expect(report.target).toBe(target);
    } finally {
      store.close();
    }
  });

  it('defect 1: an agent re-validates a signed answer: a target that is not a store path is refused even under the coordinator key, and nothing runs', async () => {
    // Stands in for a coordinator that signed junk (a bug, or a log written before store paths were
    // validated): the proxy holds the coordinator's key and re-signs the answer it rewrote.
    const proxy = await rewritingProxy(test.http.url, (url, body) => {
      if (!url.startsWith('/v1/agent/desired')) return body;
      const answer = JSON.parse(body.toString()) as { configId: string | null; config: { targets: Record<string, string> } | null; proof: string };
      if (!answer.config) return body;
      for (const system of Object.keys(answer.config.targets)) answer.config.targets[system] = '/nix/store/..';
      const challenge = new URL(url, 'http://x').searchParams.get('challenge') ?? '';
      answer.proof = signProof(test.coordinator.identity, desiredProofMessage(lastAgentKey, challenge, answer));
      return Buffer.from(JSON.stringify(answer));
    });
    let lastAgentKey = '';
    try {
      const stateDir = path.join(test.dir, 'agent-junk-target');
      const { agentId } = await enrollStateDir(test, { stateDir, storeDir: path.join(test.dir, 'agent-junk-store'), name: 'junk-target', httpUrl: proxy.url });
      lastAgentKey = agentId;
      await test.adminClient.call('agents.assign', { agentId, graph: 'proofs' });
      const agent = new Agent(stateDir, { log: () => undefined });
      const refusal = await agent.runOnce().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refusal).toBeInstanceOf(UnverifiedAnswerError);
      expect((refusal as Error).message).toMatch(/signed but invalid \(config\.targets\.[a-z0-9_-]+: .*not a store path/);
      expect(agent.generations.current()).toBeUndefined();
    } finally {
      proxy.server.close();
    }
  });
});
