/**
 * The coordinator's HTTP API described: its routes (API_ROUTES: method,
 * path, access, input and output schemas, error codes; API_STREAMS for the
 * replies that are not JSON), and the schemas they are made of: the
 * fleet's vocabulary, the audit log's envelope, inputs and views; and the
 * audit viewer's JSON API beside it (VIEWER_ROUTES, viewer-routes.ts).
 */
export { API_ROUTES, API_STREAMS, fillPath, firstIssue, type ApiAccess, type ApiInput, type ApiOutput, type ApiRoute, type ApiRouteName, type ApiStream, type ApiStreamName } from './routes.js';
export * from './views.js';
export * from './inputs.js';
export * from './fleet.js';
export * from './audit.js';
export * from './config-diff.js';
export * from './secrets.js';
export * from './params.js';
export {
  VIEWER_PATH,
  VIEWER_ROLES,
  VIEWER_ROUTES,
  EventQuery,
  EventsQuery,
  LoginLinkSchema,
  PositionParam,
  StateQuery,
  VerifyQuery,
  type ViewerInput,
  type ViewerOutput,
  type ViewerRoute,
  type ViewerRouteName,
} from './viewer-routes.js';
export * from './viewer-views.js';
