/**
 * protocol: what crosses the wire, shared by the coordinator, the agent and
 * the CLI — identities and request signing, wire schemas and framing of the
 * data plane, the typed clients (HTTP API; data plane over QUIC with HTTP
 * fallback), TLS pinning and join strings, the HTTP API's description
 * (api/: its routes and their input and output schemas, and the audit
 * viewer's beside them), and the error codes all of them share (errors.ts).
 */
export { Identity, IdentityError, KeyIdSchema, keyIdOf, publicKeyOf, loadIdentity, createIdentityFile, sshEd25519PublicKey, type KeyId } from './identity.js';
export { signRequest, verifyRequestSignature, MAX_REQUEST_SKEW_MS } from './request-signing.js';
export { ErrorCodeSchema, ERROR_CODES, ErrorBodySchema, FerryError, readErrorBody, httpStatusOf, type ErrorCode, type ErrorDetails, type ErrorStatus, type FerryErrorOptions, type ReceivedError } from './errors.js';
export { ApiError, CoordinatorHttpClient, type CallInput, type CallOptions, type CoordinatorHttpClientOptions, type RouteName } from './http-client.js';
export { API_ROUTES, API_STREAMS, type ApiAccess, type ApiInput, type ApiOutput, type ApiRoute, type ApiRouteName, type AgentView, type AuditEvent, type ChainReport, type ConfigView } from './api/index.js';
export { VIEWER_PATH, VIEWER_ROUTES, type ViewerInput, type ViewerOutput, type ViewerRoute, type ViewerRouteName, type EventDetail, type StateResult, type ViewerInfo } from './api/index.js';
export { DataClient, DataError, TransportError, type DataClientOptions } from './data-client.js';
export { openDataClient, type CoordinatorInfo } from './connect.js';
export * from './data-protocol.js';
export { FrameError, FrameReader, encodeHeaderFrame } from './framing.js';
export { certificateFingerprint, checkPinnedCertificate, PinningError } from './tls-pinning.js';
export { formatJoinString, parseJoinString, JoinStringError, type JoinString } from './join-string.js';
export { canonicalJson, canonicalJsonBytes } from './canonical-json.js';
export { configSigningMessage } from './config.js';
export { FERRY_VERSION } from './version.js';
export { StorePathSchema, StorePathInfoSchema, MAX_REFERENCES, type StorePathInfo } from './store-path-info.js';
export { desiredProofMessage, manifestProofMessage, signProof, verifyProof } from './coordinator-proofs.js';
export { ALERT_KINDS, AlertKindSchema, AlertPayloadSchema, ALERT_KEY_HEADER, ALERT_SIGNATURE_HEADER, alertSigningMessage, signAlert, verifyAlert, type AlertKind, type AlertPayload, type VerifyAlertOptions } from './alerts.js';
export { formatHlc, parseHlc, compareHlc, HlcClock, type Hlc } from './hlc.js';
