/**
 * The coordinator process's own health, under the names Node exporters use
 * (prom-client's default metrics), but only those whose collection costs
 * the same with 10 connections as with 10,000: prom-client's defaults also
 * list every open handle (`nodejs_active_handles`) and read /proc/self/fd
 * (`process_open_fds`) at each scrape, which with 10,000 held connections
 * stopped the event loop for a quarter of a second per scrape
 * (bench/README.md, "Capacity").
 *
 * A latency tail that the request histogram cannot show (its clock starts
 * once a request's headers are read) is usually a loop that did not turn
 * or a garbage collection: the loop's delay since the previous scrape
 * (sampled every 20 ms by a libuv timer, too cheap to show in an idle
 * coordinator's CPU) and the collections by kind are here for that.
 *
 * One set per process, whose samplers are never stopped (a test process
 * starts many coordinators): each coordinator's registry merges this one.
 */
import { constants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Garbage-collection pauses, in seconds: a minor one takes a millisecond, a major one of a big heap a tenth of a second or more. */
const GC_SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

let registry: Registry | undefined;

/** The process's metrics, created with their samplers on first use. */
export function processRegistry(): Registry {
  if (registry) return registry;
  registry = new Registry();
  const registers = [registry];

  const loop = monitorEventLoopDelay({ resolution: 20 });
  loop.enable();
  const seconds = (nanoseconds: number) => (loop.count > 0 ? nanoseconds / 1e9 : 0);
  // Gauges are collected in the order they were registered, so this first one reads the window for all three
  // and starts the next (Node's sampler skips the first 20 ms after a reset: it has no tick to measure from).
  let lagP50: Gauge | undefined;
  let lagP99: Gauge | undefined;
  new Gauge({
    name: 'nodejs_eventloop_lag_max_seconds',
    help: 'The longest event loop delay since the previous scrape (sampled every 20 ms)',
    registers,
    collect() {
      this.set(seconds(loop.max));
      lagP50!.set(seconds(loop.percentile(50)));
      lagP99!.set(seconds(loop.percentile(99)));
      loop.reset();
    },
  });
  lagP50 = new Gauge({ name: 'nodejs_eventloop_lag_p50_seconds', help: 'The median event loop delay since the previous scrape', registers });
  lagP99 = new Gauge({ name: 'nodejs_eventloop_lag_p99_seconds', help: 'The 99th percentile of the event loop delay since the previous scrape', registers });

  const gc = new Histogram({ name: 'nodejs_gc_duration_seconds', help: 'Garbage collections by kind: major, minor, incremental or weakcb', labelNames: ['kind'], buckets: GC_SECONDS_BUCKETS, registers });
  new PerformanceObserver((entries) => {
    for (const entry of entries.getEntries()) {
      const kind = GC_KINDS[(entry as { detail?: { kind?: number } }).detail?.kind ?? -1];
      if (kind) gc.observe({ kind }, entry.duration / 1000);
    }
  }).observe({ entryTypes: ['gc'] });

  let cpuAtLastScrape = { user: 0, system: 0 }; // counted from the process's start, as Node exporters count it
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'User and system CPU time of the process, in seconds',
    registers,
    collect() {
      const cpu = process.cpuUsage();
      this.inc((cpu.user - cpuAtLastScrape.user + cpu.system - cpuAtLastScrape.system) / 1e6);
      cpuAtLastScrape = cpu;
    },
  });
  new Gauge({
    name: 'process_resident_memory_bytes',
    help: 'Resident memory of the process, in bytes',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: 'nodejs_heap_size_used_bytes',
    help: 'JavaScript heap in use, in bytes',
    registers,
    collect() {
      this.set(process.memoryUsage().heapUsed);
    },
  });
  return registry;
}
