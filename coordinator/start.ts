/**
 * The composition root: `startCoordinator` opens a data directory (the
 * Coordinator builds its parts: database, castore, audit log, presence,
 * event bus, storage maintenance, TLS material), builds what its servers
 * share (ClosureAccess: one per coordinator, for the data plane on both
 * transports and the Nix cache) and its presence events (agents going
 * offline and coming back) and its alert dispatcher (webhooks, from the
 * log and the audit chain's checks), then serves it: HTTP and HTTPS on one
 * port (server.ts), and the QUIC data plane (quic-server.ts) unless it is
 * disabled, and the metrics (metrics/) on an address of their own when
 * asked. `ferry coordinator serve` and the tests' coordinators start
 * here.
 */
import { ClosureAccess } from './api/data-operations.js';
import { RolloutDriver } from './api/rollout-driver.js';
import { PresenceEvents } from './api/presence-events.js';
import { AlertDispatcher } from './api/alert-dispatcher.js';
import { Coordinator, type CoordinatorOptions } from './coordinator.js';
import { startQuicServer, type RunningQuicServer } from './quic-server.js';
import { startHttpServer, type RunningServer, type ServeOptions } from './server.js';
import { CoordinatorMetrics, startMetricsServer, type RunningMetricsServer } from './metrics/index.js';

/** A host and a port (0 picks a free one). */
export interface ListenAddress {
  host: string;
  port: number;
}

export interface StartCoordinatorOptions {
  /** The data directory: opened, and created with a new key and database if it holds none. */
  dataDir: string;
  /** The HTTP API's address (plain HTTP and HTTPS on one port). */
  listen: ListenAddress;
  /** The QUIC data plane's UDP address (default: the HTTP API's host and port), or false: the data plane over HTTP only. */
  quic?: ListenAddress | false;
  /** Where refusals and internal errors of both servers are logged (default: stderr). */
  log?: (line: string) => void;
  /** The HTTP API's other options (body limit, Nix cache, connection limit). */
  http?: Omit<ServeOptions, 'log' | 'stopping' | 'closureAccess' | 'metrics'>;
  /** Where `GET /metrics` is served to anyone who can reach it (default: nowhere; the counting happens anyway). */
  metricsListen?: ListenAddress;
  coordinator?: Omit<CoordinatorOptions, 'quicPort'>;
  /** How often staged rollouts are stepped by the clock (ms; default 1 s): pauses end on these ticks. */
  rolloutTickMs?: number;
}

export interface RunningCoordinator {
  readonly coordinator: Coordinator;
  /** The HTTP API, e.g. `http://127.0.0.1:7070` (HTTPS on the same port). */
  readonly url: string;
  readonly http: RunningServer;
  /** The QUIC data plane, undefined when disabled. */
  readonly quic: RunningQuicServer | undefined;
  /** The QUIC data plane's UDP port (what `info` advertises), null when disabled. */
  readonly quicPort: number | null;
  /** The metrics' own server, when `metricsListen` was given. */
  readonly metrics: RunningMetricsServer | undefined;
  /** Alerts to webhooks: queued from the log, delivered with retries. */
  readonly alerts: AlertDispatcher;
  /**
   * Stops the servers (held watches are answered first), signs a checkpoint
   * of the log's head and closes the coordinator. Later calls return the
   * first one's promise.
   */
  close(): Promise<void>;
}

/**
 * Opens `options.dataDir` and serves it; resolves once every listener
 * listens. If a listener fails to start, what was started is stopped and
 * the coordinator closed before the error reaches the caller.
 */
export async function startCoordinator(options: StartCoordinatorOptions): Promise<RunningCoordinator> {
  let quic: RunningQuicServer | undefined;
  let metricsServer: RunningMetricsServer | undefined;
  const coordinator = Coordinator.open(options.dataDir, { ...options.coordinator, quicPort: () => quic?.port ?? null });
  const closureAccess = new ClosureAccess(coordinator);
  new PresenceEvents(coordinator);
  new RolloutDriver(coordinator, options.rolloutTickMs);
  const alerts = new AlertDispatcher(coordinator);
  const metrics = new CoordinatorMetrics(coordinator);
  const log = options.log;
  const http = await startHttpServer(coordinator, options.listen.host, options.listen.port, { ...options.http, log, closureAccess, metrics }).catch((error: unknown) => {
    coordinator.close();
    throw error;
  });
  try {
    if (options.quic !== false) {
      const at = options.quic ?? { host: options.listen.host, port: Number(new URL(http.url).port) };
      const { certificatePem, privateKeyPem } = coordinator.tls;
      quic = await startQuicServer(coordinator, at.host, at.port, { certificatePem, privateKeyPem, closureAccess, log, metrics });
    }
    if (options.metricsListen) metricsServer = await startMetricsServer(metrics, options.metricsListen.host, options.metricsListen.port);
  } catch (error) {
    await quic?.close();
    await http.close();
    coordinator.close();
    throw error;
  }
  const quicServer = quic;
  let closing: Promise<void> | undefined;
  return {
    coordinator,
    url: http.url,
    http,
    quic: quicServer,
    quicPort: quicServer?.port ?? null,
    metrics: metricsServer,
    alerts,
    close() {
      closing ??= (async () => {
        await metricsServer?.close();
        await quicServer?.close();
        await http.close();
        // A caller may have closed the coordinator itself already (a test stopping it mid-way).
        if (!coordinator.closed) coordinator.checkpoint();
        coordinator.close();
      })();
      return closing;
    },
  };
}
