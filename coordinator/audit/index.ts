/**
 * The audit log: append with its contract (audit-log.ts), the hash chain
 * and checkpoints (chain.ts), exports (export.ts), and the bus committed
 * events are told on (event-bus.ts).
 */
export { SqliteAuditLog, type Appended, type AuditLog, type Decision } from './audit-log.js';
export { ChainVerifier, eventHash, verifyChain, GENESIS_HASH, type ChainPosition, type ChainReport, type Checkpoint } from './chain.js';
export { EXPORT_FORMAT, exportLines, parseAuditExport, verifyAuditExport, type ParsedExport } from './export.js';
export { EventBus, type CommitListener } from './event-bus.js';
