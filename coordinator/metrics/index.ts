/** The coordinator's Prometheus metrics: what is counted (coordinator-metrics.ts) and where it is served (protocol/metrics-server.ts, shared with relays). */
export { CoordinatorMetrics, countedChunks, type MetricsTransport } from './coordinator-metrics.js';
export { startMetricsServer, type RunningMetricsServer } from '../../protocol/metrics-server.js';
