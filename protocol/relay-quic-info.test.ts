// Hostile relay answers to the agent's "do you serve QUIC?" (RELAY_QUIC_INFO_PATH), over a real pinned
// HTTPS server on 127.0.0.1: another certificate than the pinned one is refused (PinningError), an
// oversize or malformed answer leaves the agent on HTTPS only, naming why; a 404 means HTTPS only.
import https from 'node:https';
import { afterEach, describe, expect, it } from 'vitest';
import { openRelayDataClient } from './connect.js';
import { Identity } from './identity.js';
import { RELAY_QUIC_INFO_PATH } from './relays.js';
import { createSelfSignedCertificate } from './self-signed-certificate.js';
import { PinningError } from './tls-pinning.js';

const certificate = createSelfSignedCertificate();
const other = createSelfSignedCertificate();
let server: https.Server | undefined;

/** A relay's HTTPS port answering RELAY_QUIC_INFO_PATH with `status` and `body`. */
async function relayAnswering(status: number, body: string): Promise<{ url: string; fingerprint: string }> {
  server = https.createServer({ cert: certificate.certificatePem, key: certificate.privateKeyPem }, (request, reply) => {
    if (request.url !== RELAY_QUIC_INFO_PATH) return void reply.writeHead(500).end();
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

afterEach(stop);

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
