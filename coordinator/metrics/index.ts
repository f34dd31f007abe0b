/** The coordinator's Prometheus metrics: what is counted (coordinator-metrics.ts) and where it is served (metrics-server.ts). */
export { CoordinatorMetrics, countedChunks, type MetricsTransport } from './coordinator-metrics.js';
export { startMetricsServer, type RunningMetricsServer } from './metrics-server.js';
