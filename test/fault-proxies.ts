/**
 * Faulty networks on 127.0.0.1 for transport tests: a UDP proxy (for QUIC)
 * that flips bits, drops datagrams or black-holes a connection after some
 * bytes, and a TCP proxy (for the HTTP fallback) that flips one bit of a
 * response. Real sockets, real packets; only the faults are injected.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer, connect, type Server } from 'node:net';

export interface UdpFaults {
  /** Flip one random bit in every n-th server->client datagram (0: never). */
  flipEvery?: number;
  /** Probability of dropping a datagram, either direction. */
  dropRate?: number;
  /** After this many server->client bytes, drop everything of that client mapping, forever. */
  cutAfterBytes?: number;
}

export interface UdpProxy {
  port: number;
  /** Server->client bytes forwarded, all mappings. */
  forwardedBytes: number;
  flipped: number;
  dropped: number;
  cuts: number;
  faults: UdpFaults;
  close(): Promise<void>;
}

/** A deterministic generator, so a failing run can be replayed. */
function random(seed: number): () => number {
  let x = seed || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

export async function startUdpProxy(targetPort: number, faults: UdpFaults, seed = 7): Promise<UdpProxy> {
  const rand = random(seed);
  const front = createSocket('udp4');
  const mappings = new Map<string, { upstream: Socket; client: RemoteInfo; bytes: number; cut: boolean }>();
  let serverDatagrams = 0;
  const proxy: UdpProxy = {
    port: 0,
    forwardedBytes: 0,
    flipped: 0,
    dropped: 0,
    cuts: 0,
    faults,
    close: async () => {
      for (const mapping of mappings.values()) mapping.upstream.close();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
  front.on('message', (message, client) => {
    const key = `${client.address}:${client.port}`;
    let mapping = mappings.get(key);
    if (!mapping) {
      const upstream = createSocket('udp4');
      const created = { upstream, client, bytes: 0, cut: false };
      mapping = created;
      mappings.set(key, created);
      upstream.on('message', (reply) => {
        if (created.cut) return;
        if (proxy.faults.dropRate && rand() < proxy.faults.dropRate) {
          proxy.dropped++;
          return;
        }
        created.bytes += reply.length;
        if (proxy.faults.cutAfterBytes !== undefined && created.bytes > proxy.faults.cutAfterBytes) {
          created.cut = true;
          proxy.cuts++;
          return;
        }
        serverDatagrams++;
        if (proxy.faults.flipEvery && serverDatagrams % proxy.faults.flipEvery === 0) {
          const index = Math.floor(rand() * reply.length);
          reply[index] = reply[index]! ^ (1 << Math.floor(rand() * 8));
          proxy.flipped++;
        }
        proxy.forwardedBytes += reply.length;
        front.send(reply, client.port, client.address);
      });
      upstream.connect(targetPort, '127.0.0.1');
      upstream.on('connect', () => upstream.send(message));
      return;
    }
    if (mapping.cut) return;
    if (proxy.faults.dropRate && rand() < proxy.faults.dropRate) {
      proxy.dropped++;
      return;
    }
    try {
      mapping.upstream.send(message);
    } catch {
      // not connected yet: QUIC retransmits
    }
  });
  await new Promise<void>((resolve) => front.bind(0, '127.0.0.1', resolve));
  proxy.port = front.address().port;
  return proxy;
}

export interface TcpFlipProxy {
  port: number;
  /** How many responses had a bit flipped. */
  flipped: number;
  close(): Promise<void>;
}

/**
 * Forwards TCP to `targetPort`, flipping one bit at `atByte` of the first
 * `times` responses longer than that (counted from the response's start).
 */
export async function startTcpFlipProxy(targetPort: number, atByte: number, times = 1): Promise<TcpFlipProxy> {
  const proxy: TcpFlipProxy = { port: 0, flipped: 0, close: async () => undefined };
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    let seen = 0;
    let armed = true;
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (armed && proxy.flipped < times && seen + chunk.length > atByte) {
        chunk[atByte - seen] = chunk[atByte - seen]! ^ 0x10;
        proxy.flipped++;
        armed = false;
      }
      seen += chunk.length;
      client.write(chunk);
    });
    upstream.on('end', () => client.end());
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = (server.address() as { port: number }).port;
  proxy.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return proxy;
}
