/**
 * The coordinator's Prometheus metrics (prom-client), one registry per
 * coordinator. Counters and histograms are fed where things happen (each
 * HTTP request, each data-plane byte); gauges of the fleet are read from
 * the coordinator's state when scraped, so an idle coordinator does no
 * work for them. Names and labels are described in docs/coordinator.md,
 * "Metrics". Labels take only values the coordinator chose (route
 * patterns, not paths; transports; states), never a client's strings, so
 * a client cannot grow the series without bound.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Coordinator } from '../coordinator.js';
import { configOutcome } from '../api/queries.js';
import { readFleetAgents, type AgentReading } from '../api/fleet-reading.js';
import { processRegistry } from './process-metrics.js';

/** Where a request or a data-plane byte travelled. */
export type MetricsTransport = 'http' | 'https' | 'quic';

/**
 * Request durations, in seconds: from a few ms (a signed request) to a
 * held watch's 240 s (MAX_WATCH_SECONDS).
 */
const REQUEST_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 240];

export class CoordinatorMetrics {
  private readonly ownRegistry = new Registry();
  /** What a scrape exposes: this coordinator's metrics and the process's (process-metrics.ts). */
  readonly registry: Registry;
  private readonly requestSeconds: Histogram<'route' | 'method' | 'status' | 'transport'>;
  private readonly dataBytes: Counter<'transport' | 'direction'>;
  /** Open HTTP and HTTPS connections, when a server tells (setConnectionsOpen). */
  private connectionsOpen: () => number = () => 0;

  constructor(coordinator: Coordinator) {
    const registry = this.ownRegistry;
    // One reading of the fleet per scrape, shared by both fleet gauges (prom-client collects them in
    // turn): reused while no event committed, for at most a second (presence moves with time).
    let reading: { seq: number; at: number; agents: AgentReading[] } | undefined;
    const fleet = (): AgentReading[] => {
      const now = performance.now();
      if (!reading || reading.seq !== coordinator.lastSeq || now - reading.at > 1000) reading = { seq: coordinator.lastSeq, at: now, agents: readFleetAgents(coordinator) };
      return reading.agents;
    };
    this.requestSeconds = new Histogram({
      name: 'ferry_http_request_duration_seconds',
      help: 'HTTP API requests by route pattern, method, status and transport, from headers read to reply written (held watches included)',
      labelNames: ['route', 'method', 'status', 'transport'],
      buckets: REQUEST_SECONDS_BUCKETS,
      registers: [registry],
    });
    this.dataBytes = new Counter({
      name: 'ferry_data_plane_bytes_total',
      help: 'Data-plane bytes by transport and direction (sent: replies, received: requests), framed and before wire compression',
      labelNames: ['transport', 'direction'],
      registers: [registry],
    });
    new Gauge({
      name: 'ferry_agents',
      help: 'Agents by enrollment status, presence (online, stale, offline), the phase of their last report (none: never reported) and the health of the config they run (unknown: not checked periodically, or not yet)',
      labelNames: ['status', 'presence', 'phase', 'health'],
      registers: [registry],
      collect() {
        this.reset();
        const counts = new Map<string, { labels: { status: string; presence: string; phase: string; health: string }; count: number }>();
        for (const { row: agent, presence } of fleet()) {
          const labels = { status: agent.status, presence, phase: agent.phase ?? 'none', health: agent.health ?? 'unknown' };
          const key = `${labels.status} ${labels.presence} ${labels.phase} ${labels.health}`;
          const entry = counts.get(key);
          if (entry) entry.count++;
          else counts.set(key, { labels, count: 1 });
        }
        for (const { labels, count } of counts.values()) this.set(labels, count);
      },
    });
    new Gauge({
      name: 'ferry_config_agents',
      help: 'Enrolled agents by the config they should run (their graph head or pin) and where they stand with it, as ferry graph log summarizes: succeeded, failed, pending, unreported',
      labelNames: ['config', 'outcome'],
      registers: [registry],
      collect() {
        this.reset();
        const counts = new Map<string, { labels: { config: string; outcome: string }; count: number }>();
        for (const { row: agent, desired: config } of fleet()) {
          if (agent.status !== 'enrolled' || !config) continue;
          const labels = { config, outcome: configOutcome(agent, config) };
          const key = `${labels.config} ${labels.outcome}`;
          const entry = counts.get(key);
          if (entry) entry.count++;
          else counts.set(key, { labels, count: 1 });
        }
        for (const { labels, count } of counts.values()) this.set(labels, count);
      },
    });
    new Gauge({
      name: 'ferry_audit_head_seq',
      help: 'Sequence number of the last audit event',
      registers: [registry],
      collect() {
        this.set(coordinator.lastSeq);
      },
    });
    const castore = new Gauge({
      name: 'ferry_castore',
      help: "The coordinator's castore: blobs, blob bytes (as stored) and store paths",
      labelNames: ['what'],
      registers: [registry],
      collect() {
        const stats = coordinator.castore.stats();
        castore.set({ what: 'blobs' }, stats.blobs);
        castore.set({ what: 'blob_bytes' }, stats.blobBytes ?? 0);
        castore.set({ what: 'store_paths' }, stats.storePaths);
      },
    });
    const metrics = this;
    new Gauge({
      name: 'ferry_http_connections_open',
      help: 'HTTP and HTTPS connections open on the API port',
      registers: [registry],
      collect() {
        this.set(metrics.connectionsOpen());
      },
    });
    this.registry = Registry.merge([registry, processRegistry()]);
  }

  /** One HTTP API request answered: `route` is the pattern it matched (`unmatched` when none did). */
  observeRequest(route: string, method: string, status: number, transport: MetricsTransport, seconds: number): void {
    this.requestSeconds.observe({ route, method, status: String(status), transport }, seconds);
  }

  /** Counts data-plane bytes as they pass. */
  countData(transport: MetricsTransport, direction: 'sent' | 'received', bytes: number): void {
    this.dataBytes.inc({ transport, direction }, bytes);
  }

  /** Where the gauge of open connections reads from (the API server's own count). */
  setConnectionsOpen(count: () => number): void {
    this.connectionsOpen = count;
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}

/** `source`, with each chunk's length handed to `count` as it passes. */
export async function* countedChunks(source: AsyncIterable<Uint8Array>, count: (bytes: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    count(chunk.length);
    yield chunk;
  }
}
