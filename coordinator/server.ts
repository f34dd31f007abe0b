/** Serving the coordinator's HTTP API on a TCP address. */
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Coordinator } from './coordinator.js';
import { createHttpApi, type HttpApiOptions } from './api/http.js';

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

/** Listens on `host:port` (port 0 picks a free one); resolves once listening. */
export function startHttpServer(coordinator: Coordinator, host: string, port: number, options: HttpApiOptions = {}): Promise<RunningServer> {
  const app = createHttpApi(coordinator, options);
  return new Promise((resolve, reject) => {
    let server: ServerType;
    try {
      server = serve({ fetch: app.fetch, hostname: host, port }, (info: AddressInfo) => {
        const shownHost = info.family === 'IPv6' ? `[${info.address}]` : info.address;
        resolve({
          url: `http://${shownHost}:${info.port}`,
          close: () => new Promise<void>((done) => server.close(() => done())),
        });
      });
      server.on('error', reject);
    } catch (error) {
      reject(error);
    }
  });
}
