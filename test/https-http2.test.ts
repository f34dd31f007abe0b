/**
 * HTTPS on the coordinator's port speaks HTTP/2 to clients that offer it:
 * an agent's held watch and its other requests share one connection (one
 * TLS handshake), which is what lets one coordinator hold 10,000 agents
 * over HTTPS (bench/README.md, "Capacity"). Connections are counted by a
 * real TCP relay on 127.0.0.1; the HTTP/1.1-only server is a real
 * node:https server with the coordinator's certificate.
 */
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer } from '../coordinator/server.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { pinnedFetch } from '../protocol/pinned-fetch.js';
import { COORDINATOR_TLS_NAME } from '../protocol/tls-pinning.js';
import { Identity } from '../protocol/identity.js';
import { startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

let test: TestCoordinator;

/** A TCP relay to `port` that counts the connections it forwards. */
async function countingRelay(port: number): Promise<{ url: string; connections: () => number; close: () => void }> {
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(port, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections, close: () => server.close() };
}

/** An approved agent, in no graph: its watch is answered `unchanged` at its deadline. */
async function enrolledAgent(): Promise<Identity> {
  const agent = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true });
  await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name: `h2-${randomBytes(3).toString('hex')}`, facts: { system: 'x86_64-linux', hostname: 'test' } });
  return agent;
}

/** An HTTP/2 session to `url` with the coordinator's name, certificate unchecked (these tests look at the protocol, not the pin). */
function rawSession(url: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false } as http2.SecureClientSessionOptions);
    session.once('remoteSettings', () => resolve(session));
    session.once('error', reject);
  });
}

beforeAll(async () => {
  test = await startTestCoordinator();
});
afterAll(async () => {
  await test?.close();
});

describe('HTTP/2 on the HTTPS port', () => {
  it("carries an agent's held watch and its other requests over one connection", async () => {
    const relay = await countingRelay(Number(new URL(test.http.url).port));
    try {
      const agent = await enrolledAgent();
      // Its own fingerprint's pool is shared process-wide: a fresh origin (the relay) starts with no connection.
      const client = new CoordinatorHttpClient(relay.url, agent, { pinnedFingerprint: test.coordinator.tls.fingerprint });
      const first = (await client.callUnchecked('agent.desired', {})) as { configId: string | null };
      const watch = client.callUnchecked('agent.watch', { known: first.configId ?? 'none', wait: 3 });
      const others = await Promise.all(Array.from({ length: 6 }, () => client.call('agents.show', { agentId: agent.keyId })));
      expect(others.map((shown) => shown.id)).toEqual(Array(6).fill(agent.keyId));
      expect(await watch).toMatchObject({ unchanged: true });
      expect(relay.connections()).toBe(1);
    } finally {
      relay.close();
    }
  });

  it('offers h2 by ALPN with bounded streams and headers, and still serves HTTP/1.1', async () => {
    const session = await rawSession(test.http.url.replace(/^http:/, 'https:'));
    try {
      expect(session.alpnProtocol).toBe('h2');
      expect(session.remoteSettings.maxConcurrentStreams).toBe(32);
      expect(session.remoteSettings.maxHeaderListSize).toBe(16 * 1024);
      // Windows that let a push over a long link run faster than 64 KiB per round trip, bounded per connection.
      expect(session.remoteSettings.initialWindowSize).toBe(1024 * 1024);
      await new Promise<void>((resolve) => session.ping(() => resolve()));
      expect(session.state.remoteWindowSize).toBe(2 * 1024 * 1024);
    } finally {
      session.close();
    }
    // A client that offers only HTTP/1.1 (curl --http1.1, an old agent) gets it.
    const status = await new Promise<number>((resolve, reject) => {
      const request = https.get(`${test.http.url.replace(/^http:/, 'https:')}/v1/info`, { servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false, agent: false }, (reply) => {
        reply.resume();
        resolve(reply.statusCode ?? 0);
      });
      request.on('error', reject);
    });
    expect(status).toBe(200);
  });

  it('refuses a header block over its bound, and the connection goes on serving', async () => {
    const session = await rawSession(test.http.url.replace(/^http:/, 'https:'));
    try {
      const oversized = await new Promise<string>((resolve) => {
        const stream = session.request({ ':path': '/v1/info', 'x-padding': 'a'.repeat(20 * 1024) });
        stream.once('response', (headers) => resolve(`status ${String(headers[':status'])}`));
        stream.once('error', (error: NodeJS.ErrnoException) => resolve(`${error.code}: ${error.message}`));
        stream.once('close', () => resolve(`closed ${stream.rstCode}`));
        stream.end();
      });
      // The server resets the stream (nghttp2 answers a header block over the bound so).
      expect(oversized).toMatch(/ENHANCE_YOUR_CALM/);
      const ok = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':path': '/v1/info' });
        stream.once('response', (headers) => resolve(Number(headers[':status'])));
        stream.once('error', reject);
        stream.resume();
        stream.end();
      });
      expect(ok).toBe(200);
    } finally {
      session.close();
    }
  });

  it('a coordinator that stops closes idle HTTP/2 connections at once and answers the held ones', async () => {
    const server = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: () => undefined });
    const httpsUrl = server.url.replace(/^http:/, 'https:');
    const agent = await enrolledAgent();
    const client = new CoordinatorHttpClient(httpsUrl, agent, { pinnedFingerprint: test.coordinator.tls.fingerprint });
    const first = (await client.callUnchecked('agent.desired', {})) as { configId: string | null };
    const watch = client.callUnchecked('agent.watch', { known: first.configId ?? 'none', wait: 120 }).then(
      () => 'answered',
      (error: { code?: string }) => error.code,
    );
    const idle = await rawSession(httpsUrl);
    const idleClosed = new Promise<void>((resolve) => idle.once('close', resolve));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    await server.close();
    await idleClosed;
    expect(await watch).toBe('SHUTTING_DOWN');
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe('a stopping coordinator and a client that stopped reading', () => {
  it('cuts the stalled HTTP/2 request after its grace period instead of waiting forever', async () => {
    const server = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: () => undefined });
    const httpsUrl = server.url.replace(/^http:/, 'https:');
    // A 1 KiB window the client never reopens: the reply (the viewer's script, tens of KiB) cannot finish.
    const session = await new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const opened = http2.connect(httpsUrl, { servername: COORDINATOR_TLS_NAME, rejectUnauthorized: false, settings: { initialWindowSize: 1024 } } as http2.SecureClientSessionOptions);
      opened.once('remoteSettings', () => resolve(opened));
      opened.once('error', reject);
    });
    const closed = new Promise<void>((resolve) => session.once('close', resolve));
    session.on('error', () => undefined);
    const stream = session.request({ ':path': '/viewer/assets/viewer.js' });
    stream.on('error', () => undefined);
    stream.pause();
    const status = await new Promise<number>((resolve) => stream.once('response', (headers) => resolve(Number(headers[':status']))));
    expect(status).toBe(200);
    const started = performance.now();
    await server.close();
    await closed;
    const seconds = (performance.now() - started) / 1000;
    expect(seconds).toBeGreaterThan(4);
    expect(seconds).toBeLessThan(15);
  }, 30_000);
});

describe('pinned fetch against a server without HTTP/2', () => {
  it('falls back to HTTP/1.1, and still refuses a certificate that is not pinned', async () => {
    let requests = 0;
    const server = https.createServer({ cert: test.coordinator.tls.certificatePem, key: test.coordinator.tls.privateKeyPem }, (request, reply) => {
      requests++;
      reply.setHeader('content-type', 'application/json');
      reply.end(JSON.stringify({ httpVersion: request.httpVersion }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/anything`;
      const fetchPinned = pinnedFetch(test.coordinator.tls.fingerprint);
      for (let i = 0; i < 2; i++) {
        const reply = await fetchPinned(new URL(url), { method: 'GET' });
        expect(await reply.json()).toEqual({ httpVersion: '1.1' });
      }
      expect(requests).toBe(2);
      await expect(pinnedFetch(randomBytes(32).toString('hex'))(new URL(url), { method: 'GET' })).rejects.toMatchObject({ code: 'TLS_FINGERPRINT_MISMATCH' });
      expect(requests).toBe(2);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('the connection limit', () => {
  it('closes connections past --max-connections as they arrive, logs it, and serves again once one closes', async () => {
    const lines: string[] = [];
    const server = await startHttpServer(test.coordinator, '127.0.0.1', 0, { log: (line) => lines.push(line), maxConnections: 4 });
    const port = Number(new URL(server.url).port);
    const open = (): Promise<net.Socket> =>
      new Promise((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
        socket.once('error', reject);
      });
    /** Whether the coordinator closed `socket` within `ms` (a connection past the limit: at once). */
    const closedWithin = (socket: net.Socket, ms: number): Promise<boolean> =>
      new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve(true);
        });
        socket.on('error', () => undefined);
      });
    try {
      // Four held connections, as many agents' (or an attacker's, who needs no key for a TCP connection).
      const held = await Promise.all([open(), open(), open(), open()]);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const extra = await open();
      expect(await closedWithin(extra, 2000)).toBe(true);
      expect(lines.some((line) => /refused 1 connection\(s\): 4 are open, the limit \(ferry coordinator serve --max-connections\)/.test(line))).toBe(true);
      for (const socket of held) expect(socket.destroyed).toBe(false);
      held[0]!.destroy();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const info = await fetch(`${server.url}/v1/info`);
      expect(info.status).toBe(200);
      for (const socket of held) socket.destroy();
    } finally {
      await server.close();
    }
  });
});
