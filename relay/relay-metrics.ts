/**
 * A relay's Prometheus metrics (`ferry relay run --metrics-listen
 * HOST:PORT`, served by protocol/metrics-server.ts as the coordinator's
 * are): the counters of its status (RelayStatus), read when scraped, so
 * an idle relay does no work for them. Names are described in
 * docs/relays.md, "Metrics". Labels take only values the relay chose
 * (closure states, prefetch outcomes, transports), never a client's strings.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import type { RelayStatus } from '../protocol/relays.js';
import type { MetricsSource } from '../protocol/metrics-server.js';

/** A counter whose value is read from `read` at each scrape (the relay keeps the count; prom-client only shows it). */
function readCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A counter per value of `label`, each read from `read` at each scrape (values the relay chose, never a client's). */
function readLabelledCounter(registry: Registry, name: string, help: string, label: string, read: () => Record<string, number>): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [value, count] of Object.entries(read())) this.inc({ [label]: value }, count);
    },
  });
}

function readGauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

export class RelayMetrics implements MetricsSource {
  readonly registry = new Registry();
  /** The status of one scrape, shared by every metric of it (prom-client collects them in turn). */
  private current: RelayStatus | undefined;

  constructor(private readonly status: () => RelayStatus) {
    const registry = this.registry;
    const now = (): RelayStatus => (this.current ??= this.status());
    readGauge(registry, 'ferry_relay_cache_bytes', 'Bytes the cache holds (blobs and directory encodings)', () => now().cache.bytes);
    readGauge(registry, 'ferry_relay_cache_limit_bytes', "The cache's limit (--cache-size); past it, least recently used closures are evicted", () => now().cache.limitBytes);
    readGauge(registry, 'ferry_relay_cache_blobs', 'Blobs the cache holds', () => now().cache.blobs);
    readCounter(registry, 'ferry_relay_evicted_blobs_total', 'Blobs evicted to bring the cache under its limit', () => now().cache.evictions);
    readCounter(registry, 'ferry_relay_hits_total', "Objects (blobs and directories) agents' requests found in the cache", () => now().hits);
    readCounter(registry, 'ferry_relay_misses_total', "Objects agents' requests had fetched from the coordinator first", () => now().misses);
    readCounter(registry, 'ferry_relay_served_bytes_total', 'Blob bytes served to agents', () => now().bytesServed);
    readCounter(registry, 'ferry_relay_fetched_bytes_total', 'Bytes fetched from the coordinator (for agents and for the prefetch)', () => now().bytesFetched);
    readCounter(registry, 'ferry_relay_refused_requests_total', 'Requests refused (no or a bad grant, an object outside the granted closure, an operation a relay does not serve, a replay)', () => now().refused);
    readGauge(registry, 'ferry_relay_agents_served', 'Agents served since the relay started', () => now().agentsServed);
    readGauge(registry, 'ferry_relay_stream_bytes', 'Bytes of the upstream streams kept to serve agents as they are', () => now().streams?.bytes ?? 0);
    readCounter(registry, 'ferry_relay_streams_served_total', 'Replies served from a kept upstream stream', () => now().streams?.served ?? 0);
    readCounter(registry, 'ferry_relay_stream_served_wire_bytes_total', 'Wire (compressed) bytes of the replies served from kept streams', () => now().streams?.servedWireBytes ?? 0);
    readCounter(registry, 'ferry_relay_prefetches_total', 'Closures prefetched whole into the cache since the relay started', () => now().prefetch?.prefetches ?? 0);
    readCounter(registry, 'ferry_relay_prefetch_fetched_bytes_total', 'Bytes fetched from the coordinator for the prefetch (part of ferry_relay_fetched_bytes_total)', () => now().prefetch?.bytesFetched ?? 0);
    new Gauge({
      name: 'ferry_relay_prefetch_closures',
      help: "Closures of the coordinator's last prefetch answer by state: wanted (all), ready (fetched whole), skipped (over the cache's limit), failed",
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const prefetch = now().prefetch;
        this.set({ state: 'wanted' }, prefetch?.wanted ?? 0);
        this.set({ state: 'ready' }, prefetch?.ready.length ?? 0);
        this.set({ state: 'skipped' }, prefetch?.skipped.length ?? 0);
        this.set({ state: 'failed' }, prefetch?.failed.length ?? 0);
      },
    });
    readLabelledCounter(registry, 'ferry_relay_requests_total', 'Data requests agents made of the relay, by transport (quic: one per stream; https: one per POST /v1/data)', 'transport', () => ({
      quic: now().requests?.quic ?? 0,
      https: now().requests?.https ?? 0,
    }));
    readLabelledCounter(registry, 'ferry_relay_prefetch_objects_total', 'Objects the prefetch fetched from the coordinator, and found in the cache already', 'result', () => ({
      fetched: now().prefetch?.objectsFetched ?? 0,
      cached: now().prefetch?.objectsCached ?? 0,
    }));
  }

  /** The metrics in Prometheus's text format, read from the relay's status now. */
  async scrape(): Promise<{ text: string; contentType: string }> {
    this.current = undefined;
    try {
      return { text: await this.registry.metrics(), contentType: this.registry.contentType };
    } finally {
      this.current = undefined;
    }
  }
}
