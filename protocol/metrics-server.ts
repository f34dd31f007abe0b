/**
 * A metrics endpoint on an address of its own (`ferry coordinator serve
 * --metrics-listen HOST:PORT`, `ferry relay run --metrics-listen …`):
 * `GET /metrics` in Prometheus's text format, to anyone who can reach that
 * address — so bind it where only the monitoring system can (a private
 * interface, 127.0.0.1 behind an agent). It reads no request body and
 * serves nothing else; what it shows is counts, never keys, names or
 * configs' contents.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a metrics endpoint serves: a prom-client registry's text, read at each scrape. */
export interface MetricsSource {
  scrape(): Promise<{ text: string; contentType: string }>;
}

export interface RunningMetricsServer {
  /** e.g. `http://127.0.0.1:9464/metrics`. */
  url: string;
  close(): Promise<void>;
}

/** Serves `metrics` on `host:port` (0 picks a port); resolves once listening, rejects if it cannot listen. */
export function startMetricsServer(metrics: MetricsSource, host: string, port: number): Promise<RunningMetricsServer> {
  const server = http.createServer((request, response) => {
    const path = (request.url ?? '').split('?', 1)[0];
    if (path !== '/metrics') return void response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
    if (request.method !== 'GET' && request.method !== 'HEAD') return void response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('only GET\n');
    metrics.scrape().then(
      ({ text, contentType }) => response.writeHead(200, { 'content-type': contentType }).end(request.method === 'HEAD' ? undefined : text),
      (error: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${error instanceof Error ? error.message : String(error)}\n`),
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      const info = server.address() as AddressInfo;
      const shownHost = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${shownHost}:${info.port}/metrics`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
