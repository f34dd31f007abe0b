/**
 * The viewer without a coordinator: `ferry audit view --file … --pubkey …`
 * serves an exported log, verified with a key obtained out of band, read-only
 * on a local address. The only way in is the one-time login link printed at
 * start-up (no signed requests: there are no keys to check them against).
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import { FerryError } from '../../protocol/errors.js';
import { jsonErrorHandler, requestWhere } from '../api/error-replies.js';
import type { LogSource } from './log-source.js';
import { VIEWER_PATH, viewerRoutes } from './routes.js';
import { ViewerSessions } from './sessions.js';
import { Viewer } from './viewer.js';

export interface OfflineViewer {
  /** The server's base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  /** A one-time login URL (valid for `loginTtlMs`); call again for another. */
  loginUrl(): string;
  viewer: Viewer;
  close(): Promise<void>;
}

/**
 * Indexes and verifies `source`, then serves the viewer on `host:port`
 * (port 0 picks one); resolves once listening.
 */
export async function serveOfflineViewer(source: LogSource, host: string, port: number, options: { loginTtlMs?: number } = {}): Promise<OfflineViewer> {
  const viewer = new Viewer(source);
  await viewer.ready();
  const sessions = new ViewerSessions({ loginTtlMs: options.loginTtlMs ?? 10 * 60_000 });
  const app = new Hono();
  app.route('/', viewerRoutes({ viewer, sessions }));
  app.get('/', (c) => c.redirect(`${VIEWER_PATH}/`));
  app.onError(jsonErrorHandler((line) => process.stderr.write(`${line}\n`)));
  app.notFound((c) => {
    throw new FerryError('NOT_FOUND', `no route ${requestWhere(c)}`);
  });
  return new Promise((resolve, reject) => {
    let server: ServerType;
    try {
      server = serve({ fetch: app.fetch, hostname: host, port }, (info: AddressInfo) => {
        const url = `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`;
        resolve({
          url,
          viewer,
          loginUrl: () => `${url}${VIEWER_PATH}/login?token=${sessions.issueLoginToken({ keyId: 'offline', role: 'viewer' }).token}`,
          close: () => new Promise<void>((done) => server.close(() => done())),
        });
      });
      server.on('error', reject);
    } catch (error) {
      reject(error);
    }
  });
}
