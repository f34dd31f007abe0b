/**
 * coordinator: the fleet's state in SQLite, every change an event of the
 * hash-chained audit log, served over HTTP (hono) and QUIC, with a Nix
 * binary cache and the audit viewer. This is the package's
 * `ferry/coordinator` entry; the CLI imports the modules behind it one by
 * one, when a command needs them (its start-up time).
 */
export { Coordinator, type CoordinatorOptions } from './coordinator.js';
export { startCoordinator, type RunningCoordinator, type StartCoordinatorOptions } from './start.js';
export { startHttpServer, type RunningServer } from './server.js';
export type { HttpApiOptions } from './api/http.js';
export { AlertDispatcher } from './api/alert-dispatcher.js';
export { DEFAULT_ALERT_DELIVERY, type AlertDeliveryOptions } from './api/alert-delivery.js';
export { startQuicServer, type QuicServerOptions, type RunningQuicServer } from './quic-server.js';
export {
  ChainVerifier,
  eventHash,
  verifyChain,
  GENESIS_HASH,
  EXPORT_FORMAT,
  exportLines,
  parseAuditExport,
  type AuditLog,
  type ChainPosition,
  type ChainReport,
  type Checkpoint,
  type Decision,
  type ParsedExport,
} from './audit/index.js';
export { configSigningMessage } from '../protocol/config.js';
export { configId } from '../castore/config-id.js';
