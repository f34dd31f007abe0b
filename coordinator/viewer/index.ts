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
export { ReplayIndex } from './replay-index.js';
export { Viewer } from './viewer.js';
export { VIEWER_PATH } from './routes.js';
export type { TimelineFilter } from './timeline.js';
// What the viewer answers (EventDetail, StateResult, ViewerInfo, TimelinePage, …) is described
// with its routes: protocol/api/viewer-views.ts and viewer-routes.ts.
