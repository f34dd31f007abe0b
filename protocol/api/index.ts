/**
 * The coordinator's HTTP API described: its routes (API_ROUTES: method,
 * path, access, input and output schemas, error codes; API_STREAMS for the
 * replies that are not JSON), and the schemas they are made of: the
 * fleet's vocabulary, the audit log's envelope, inputs and views.
 */
export { API_ROUTES, API_STREAMS, fillPath, firstIssue, type ApiAccess, type ApiInput, type ApiOutput, type ApiRoute, type ApiRouteName, type ApiStream, type ApiStreamName } from './routes.js';
export * from './views.js';
export * from './inputs.js';
export * from './fleet.js';
export * from './audit.js';
