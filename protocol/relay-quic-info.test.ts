// Hostile relay answers to the agent's "do you serve QUIC?" (RELAY_QUIC_INFO_PATH), over a real pinned
// HTTPS server on 127.0.0.1: another certificate than the pinned one is refused (PinningError), an
// oversize or malformed answer leaves the agent on HTTPS only, naming why; a 404 means HTTPS only. The agent
// remembers a verified answer ten minutes per relay id and fingerprint (RelayQuicInfoCache), and forgets it
// when the QUIC it names does not connect.
import { createSocket } from 'node:dgram';
import https from 'node:https';
import { afterEach, describe, expect, it } from 'vitest';
import { openRelayDataClient } from './connect.js';
import { Identity } from './identity.js';
import { RelayQuicInfoCache, RELAY_QUIC_INFO_TTL_MS } from './relay-quic-info-cache.js';
import { RELAY_QUIC_INFO_PATH } from './relays.js';
import { createSelfSignedCertificate } from './self-signed-certificate.js';
import { PinningError } from './tls-pinning.js';

const certificate = createSelfSignedCertificate();
const other = createSelfSignedCertificate();
let server: https.Server | undefined;
/** Times the relay was asked for its QUIC info. */
let asked = 0;

/** A relay's HTTPS port answering RELAY_QUIC_INFO_PATH with `status` and `body`. */
async function relayAnswering(status: number, body: string): Promise<{ url: string; fingerprint: string }> {
  server = https.createServer({ cert: certificate.certificatePem, key: certificate.privateKeyPem }, (request, reply) => {
    if (request.url !== RELAY_QUIC_INFO_PATH) return void reply.writeHead(500).end();
    asked++;
    reply.writeHead(status, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { url: `https://127.0.0.1:${(server.address() as { port: number }).port}`, fingerprint: certificate.fingerprint };
}

async function open(body: string, status = 200): Promise<{ notices: string[]; client: Awaited<ReturnType<typeof openRelayDataClient>> }> {
  const relay = await relayAnswering(status, body);
  const notices: string[] = [];
  const client = await openRelayDataClient({ id: 'r'.repeat(64), ...relay } as never, Identity.generate(), { onNotice: (notice) => notices.push(notice), connectTimeoutMs: 2000 });
  return { notices, client };
}

/** Stops the relay's server, its kept-alive connections included. */
async function stop(): Promise<void> {
  server?.closeAllConnections();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = undefined;
}

afterEach(async () => {
  await stop();
  asked = 0;
});

/** A UDP port nothing listens on (bound, then closed). */
async function silentUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

describe("a relay's QUIC info", () => {
  it('naming a certificate other than the pinned one is refused', async () => {
    await expect(open(JSON.stringify({ port: 9443, certificatePem: other.certificatePem }))).rejects.toBeInstanceOf(PinningError);
  });

  it('oversize, malformed or of the wrong shape leaves the agent on HTTPS only, saying why', async () => {
    for (const [body, why] of [
      [JSON.stringify({ port: 9443, certificatePem: 'x'.repeat(20_000) }), /more than 16384 bytes/],
      ['{"port": 9443, "certificatePem":', /HTTPS only/],
      [JSON.stringify({ port: 70_000, certificatePem: certificate.certificatePem }), /not a relay's QUIC info/],
      [JSON.stringify({ port: 9443, certificatePem: certificate.certificatePem, extra: 1 }), /not a relay's QUIC info/],
    ] as const) {
      const { notices, client } = await open(body);
      expect(notices.join('\n')).toMatch(why);
      expect(notices.join('\n')).toMatch(/HTTPS only/);
      await client.close();
      await stop();
    }
  });

  it('a 404 (the relay runs --no-quic) means HTTPS only, with nothing to say', async () => {
    const { notices, client } = await open('{}', 404);
    expect(notices).toEqual([]);
    await client.close();
  });
});

describe("the agent's memory of a relay's QUIC info", () => {
  it('asks once within ten minutes per relay id and fingerprint, again after, and for another id or fingerprint', async () => {
    const relay = await relayAnswering(404, '{}');
    let clock = 1_000_000;
    const cache = new RelayQuicInfoCache(RELAY_QUIC_INFO_TTL_MS, () => clock);
    const identity = Identity.generate();
    const endpoint = { id: 'r'.repeat(64), ...relay } as never as Parameters<typeof openRelayDataClient>[0];
    for (let round = 0; round < 3; round++) await (await openRelayDataClient(endpoint, identity, { quicInfo: cache, connectTimeoutMs: 2000 })).close();
    expect(asked).toBe(1);
    // Another relay id, or the same id with another certificate: not the answer remembered.
    await (await openRelayDataClient({ ...endpoint, id: 's'.repeat(64) as never }, identity, { quicInfo: cache, connectTimeoutMs: 2000 })).close();
    expect(asked).toBe(2);
    // Asked (not answered from memory), so refused at the TLS handshake, before any request.
    await expect(openRelayDataClient({ ...endpoint, fingerprint: other.fingerprint }, identity, { quicInfo: cache, connectTimeoutMs: 2000 })).rejects.toBeInstanceOf(PinningError);
    expect(asked).toBe(2);
    clock += RELAY_QUIC_INFO_TTL_MS - 1;
    await (await openRelayDataClient(endpoint, identity, { quicInfo: cache, connectTimeoutMs: 2000 })).close();
    expect(asked).toBe(2);
    clock += 2;
    await (await openRelayDataClient(endpoint, identity, { quicInfo: cache, connectTimeoutMs: 2000 })).close();
    expect(asked).toBe(3);
  });

  it('never remembers an answer naming another certificate, nor one it could not read', async () => {
    const cache = new RelayQuicInfoCache();
    const relay = await relayAnswering(200, JSON.stringify({ port: 9443, certificatePem: other.certificatePem }));
    const endpoint = { id: 'r'.repeat(64), ...relay } as never as Parameters<typeof openRelayDataClient>[0];
    await expect(openRelayDataClient(endpoint, Identity.generate(), { quicInfo: cache, connectTimeoutMs: 2000 })).rejects.toBeInstanceOf(PinningError);
    expect(cache.get(endpoint)).toBeUndefined();
    await stop();
    const garbled = await relayAnswering(200, '{"port":');
    const client = await openRelayDataClient({ ...endpoint, ...garbled }, Identity.generate(), { quicInfo: cache, connectTimeoutMs: 2000 });
    await client.close();
    expect(cache.get({ ...endpoint, ...garbled })).toBeUndefined();
  });

  it('forgets a remembered answer whose QUIC does not connect, and asks the relay again next time', async () => {
    const port = await silentUdpPort();
    const relay = await relayAnswering(200, JSON.stringify({ port, certificatePem: certificate.certificatePem }));
    const cache = new RelayQuicInfoCache();
    const endpoint = { id: 'r'.repeat(64), ...relay } as never as Parameters<typeof openRelayDataClient>[0];
    const notices: string[] = [];
    const client = await openRelayDataClient(endpoint, Identity.generate(), { quicInfo: cache, connectTimeoutMs: 500, onNotice: (notice) => notices.push(notice) });
    expect(asked).toBe(1);
    expect(cache.get(endpoint)).toEqual({ port, certificatePem: certificate.certificatePem });
    // A bulk transfer connects QUIC at once: nothing answers on that port.
    client.startBulkTransfer();
    for (let waited = 0; !notices.some((notice) => /falling back to HTTP/.test(notice)) && waited < 10_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(notices.join('\n')).toMatch(/falling back to HTTP/);
    expect(cache.get(endpoint)).toBeUndefined();
    await client.close();
    await (await openRelayDataClient(endpoint, Identity.generate(), { quicInfo: cache, connectTimeoutMs: 500 })).close();
    expect(asked).toBe(2);
  });
});
