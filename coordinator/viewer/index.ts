/**
 * The audit-log viewer: replay of the log to any event with the
 * coordinator's reducer (snapshots, timeline, filters, search, per-event
 * diffs and verification status), the web viewer's routes, and the offline
 * server for exported logs. See docs/viewer.md.
 */
export { liveViewerRoutes, VIEWER_ACCESS, type LiveViewerOptions } from './live.js';
export { serveOfflineViewer, type OfflineViewer } from './offline-server.js';
export { exportLogSource, readExportLogSource } from './file-source.js';
export { liveLogSource } from './live-source.js';
export type { LogSource } from './log-source.js';
export { ReplayIndex, type ReplayStop, type TimelinePage } from './replay-index.js';
export { Viewer, type EventDetail, type StateResult, type ViewerInfo } from './viewer.js';
export { VIEWER_PATH } from './routes.js';
export type { FleetView, AgentView, ConfigAggregate, GraphView } from './fleet-view.js';
export type { RowChange, FieldChange } from './event-diff.js';
export type { TimelineEntry, TimelineFilter } from './timeline.js';
export type { VerificationStatus, EventVerification } from './verification.js';
