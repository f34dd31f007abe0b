// A TCP proxy that counts the bytes coming down (target -> client): what a relay's uplink carries, in the relay tests.
import { createServer, connect, type Server } from 'node:net';

/** A TCP proxy to the coordinator's HTTP port that counts coordinator -> client bytes (the downlink of an uplink). */
export interface CountingProxy {
  url: string;
  down: number;
  close(): Promise<void>;
}

export async function startCountingProxy(targetPort: number): Promise<CountingProxy> {
  const sockets = new Set<{ destroy(): void }>();
  const proxy: CountingProxy = { url: '', down: 0, close: async () => undefined };
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      proxy.down += chunk.length;
      client.write(chunk);
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
  proxy.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  return proxy;
}
