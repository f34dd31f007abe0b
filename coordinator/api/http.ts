/**
 * The coordinator's HTTP API (hono): JSON in and out, every request signed
 * (see protocol/request-signing.ts) except `GET /v1/info`. The routes are
 * the API's description (protocol/api/routes.ts: API_ROUTES, API_STREAMS),
 * each mapped onto its transport-agnostic operation (operations.ts). Handlers throw; one error handler
 * (`app.onError`: error-replies.ts) answers every error in one shape,
 * `{ "error": { "code", "message" } }`, for the API and the viewer mounted on
 * it; the Nix cache has its own (text). Refused authentication is logged
 * and never changes state.
 */
import { Hono, type Context } from 'hono';
import type { z } from 'zod';
import { verifyRequestSignature, MAX_REQUEST_SKEW_MS, requestNonce } from '../../protocol/request-signing.js';
import type { Coordinator } from '../coordinator.js';
import type { Actor } from '../domain/commands.js';
import { exportLines } from '../audit/export.js';
import { DataRequestSchema, MAX_REQUEST_HEADER_BYTES } from '../../protocol/data-protocol.js';
import { FrameReader, parseHeaderJson } from '../../protocol/framing.js';
import { stringifyJson } from '../../protocol/json-bounds.js';
import { FerryError, type ErrorCode } from '../../protocol/errors.js';
import { isAuthRefusal, resolveActor, type Access } from './actors.js';
import { readBoundedBody, requestInput } from './request-body.js';
import { jsonErrorHandler, requestWhere } from './error-replies.js';
import { ClosureAccess, DATA_ACCESS, runDataOperation } from './data-operations.js';
import { replyFrames } from './data-replies.js';
import { RequestNonces } from './request-nonces.js';
import { OPERATIONS, type OperationName } from './operations.js';
import { API_ROUTES, API_STREAMS, type ApiRoute, type ApiRouteName } from '../../protocol/api/routes.js';
import { checkReply, checkRepliesByDefault } from './reply-check.js';
import { desiredConfigOf } from './queries.js';
import { DesiredWatches, MAX_WATCHES_PER_AGENT } from './desired-watches.js';
import { relayEndpointsKey, relayPrefetch, upstreamOffer } from './relay-access.js';
import { desiredParamsStamp, desiredSecretsStamp } from './signed-answers.js';
import type { WatchUnchanged } from '../../protocol/config.js';
import { liveViewerRoutes } from '../viewer/index.js';
import { createNixCacheApp } from '../nix-cache/index.js';
import { matchedRoutes } from 'hono/route';
import { countedChunks, type CoordinatorMetrics, type MetricsTransport } from '../metrics/index.js';
import { METRICS_CREDENTIAL_CONTEXT, verifyKeyCredential } from './key-credentials.js';

export interface HttpApiOptions {
  /** Largest request body accepted (default 1 MiB). */
  maxBodyBytes?: number;
  /** Where refusals and internal errors are logged (default: stderr). */
  log?: (line: string) => void;
  /** Aborted when the server stops: held watches are answered (503) at once instead of at their deadline. */
  stopping?: AbortSignal;
  /**
   * What each agent may read, for the data plane and the Nix cache: the
   * coordinator's one instance, shared with QUIC (startCoordinator builds it).
   * Default: one of this API's own.
   */
  closureAccess?: ClosureAccess;
  /**
   * Check every JSON reply against its route's output schema before it is
   * sent (the viewer's too: VIEWER_ROUTES), answering INTERNAL (logged, naming the field) for one that does
   * not match: a drift between the handlers and the description fails a
   * test rather than a client in the field. Default: on when the
   * environment sets FERRY_CHECK_REPLIES=1 (the test suite does:
   * vitest.config.ts), off otherwise — it costs a parse of every reply
   * (docs/coordinator.md, "The API's description").
   */
  checkReplies?: boolean;
  /** Where requests' durations and data-plane bytes are counted (startCoordinator's, served by --metrics-listen). */
  metrics?: CoordinatorMetrics;
}

/** The transport a request came over (@hono/node-server's bindings: node:http's or node:http2's request). */
function transportOf(c: Context): MetricsTransport {
  const incoming = (c.env as { incoming?: { httpVersionMajor?: number; socket?: { encrypted?: boolean } } } | undefined)?.incoming;
  return incoming?.httpVersionMajor === 2 || incoming?.socket?.encrypted ? 'https' : 'http';
}

export function createHttpApi(coordinator: Coordinator, options: HttpApiOptions = {}): Hono {
  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const nonces = new RequestNonces(coordinator.database.sqlite, coordinator.now);
  const closureAccess = options.closureAccess ?? new ClosureAccess(coordinator);
  const checkReplies = options.checkReplies ?? checkRepliesByDefault();

  /**
   * `result` as route `name`'s JSON reply; checked against its output
   * schema first when checkReplies is on. `encode`: stringifyJson, not
   * JSON.stringify, by default: results can hold stored facts and events,
   * and a log may hold some nested deeper than JSON.stringify survives.
   */
  function reply(c: Context, name: ApiRouteName, result: unknown, encode: (value: unknown) => string | undefined = stringifyJson): Response {
    const route: ApiRoute = API_ROUTES[name];
    if (checkReplies) checkReply(name, route.output, result);
    return c.body(encode(result) ?? 'null', route.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
  }

  const readBody = (c: Context): Promise<Uint8Array> => readBoundedBody(c, maxBody);

  /**
   * Verifies the signature, then the key and its role, then the nonce;
   * returns the actor, or throws FerryError 401/403 (logged). The nonce is
   * stored last, only for a request that passed every other check: a
   * signature proves nothing about who is calling until the key is known,
   * and anyone can generate keys, so nonces stored first let anyone add
   * rows at will.
   *
   * Enrollment (access `self-signed`: any key may ask) stores no nonce at
   * all. Storing one would reopen that hole, and it would protect nothing:
   * the enroll command refuses a replay by itself. After an enrollment that
   * succeeded, the key's agent exists (CONFLICT) and the token's use is
   * spent; an enrollment that was refused (bad, expired, revoked or used-up
   * token, a key already registered) is refused again for the same reason,
   * since none of those conditions can be undone. A replay can never do
   * more than what the key's owner signed, once.
   */
  async function authenticate(c: Context, body: Uint8Array, operation: string, access: Access): Promise<Actor> {
    const url = new URL(c.req.url);
    const refuse = (code: ErrorCode, message: string, keyId?: string): never => {
      log(`ferry coordinator: refused ${c.req.method} ${url.pathname}: ${code} ${message}${keyId ? ` (key ${keyId})` : ''}`);
      throw new FerryError(code, message);
    };
    const verdict = verifyRequestSignature((name) => c.req.header(name), c.req.method, url.pathname + url.search, body, coordinator.now());
    if (!verdict.ok) return refuse(verdict.reason === 'stale' ? 'STALE_REQUEST' : 'UNAUTHENTICATED', verdict.message, c.req.header('x-ferry-key'));
    let actor: Actor;
    try {
      actor = resolveActor(coordinator, verdict.keyId, verdict.signature, access, operation, operation === 'agents.show');
    } catch (error) {
      if (isAuthRefusal(error)) return refuse(error.code, error.message, verdict.keyId);
      throw error;
    }
    if (access === 'self-signed') return actor;
    const nonce = requestNonce((name) => c.req.header(name))!;
    if (!(await nonces.claim(`${verdict.keyId}:${nonce}`, coordinator.now() + 2 * MAX_REQUEST_SKEW_MS))) {
      return refuse('REPLAYED_NONCE', 'this request nonce was already used', verdict.keyId);
    }
    return actor;
  }

  const app = new Hono();
  const answerError = jsonErrorHandler(log);
  app.onError(answerError);
  const metrics = options.metrics;
  if (metrics) {
    app.use('*', async (c, next) => {
      const started = performance.now();
      await next();
      // The route pattern, not the path: a label's values stay the API's, whatever clients ask for.
      // Middleware (this one) is registered for ALL methods; a route for its own.
      const route = matchedRoutes(c).findLast((matched) => matched.method !== 'ALL');
      metrics.observeRequest(route?.path ?? 'unmatched', c.req.method, c.res.status, transportOf(c), (performance.now() - started) / 1000);
    });
  }
  for (const operation of Object.keys(OPERATIONS) as OperationName[]) {
    const route: ApiRoute = API_ROUTES[operation];
    // One signature for every handler: each is typed by its own route, which the description pairs it with.
    const run = OPERATIONS[operation] as (coordinator: Coordinator, actor: Actor, input: unknown) => unknown;
    app.on(route.method, route.path, async (c) => {
      const body = await readBody(c);
      const actor = route.access === 'public' ? { keyId: '', role: 'viewer' as const } : await authenticate(c, body, operation, route.access);
      const parsed = route.input.safeParse(requestInput(c, body));
      // A zod error is answered INVALID, naming the first field (error-replies.ts).
      if (!parsed.success) throw parsed.error;
      return reply(c, operation, await run(coordinator, actor, parsed.data));
    });
  }

  // An agent's watch: the desired-config answer, held until it differs from `known` or `wait`
  // seconds pass, so agents react within a fraction of a second without polling the network.
  const watches = new DesiredWatches(coordinator);
  options.stopping?.addEventListener('abort', () => watches.release(), { once: true });
  const watch = API_ROUTES['agent.watch'];
  app.on(watch.method, watch.path, async (c) => {
    const actor = await authenticate(c, await readBody(c), 'agent.desired', watch.access);
    const parsed = watch.input.safeParse(c.req.query());
    if (!parsed.success) throw parsed.error;
    const held = watches.hold(actor.keyId);
    if (!held) throw new FerryError('TOO_MANY_WATCHES', `this agent holds ${MAX_WATCHES_PER_AGENT} watches already; wait for one to be answered`);
    try {
      return await answerWatch(c, actor, parsed.data);
    } finally {
      held.release();
    }
  });

  async function answerWatch(c: Context, actor: Actor, { known, wait, challenge, retry, stop, secrets, params }: z.output<typeof watch.input>): Promise<Response> {
    const deadline = Date.now() + wait * 1000;
    // The relays the agent is told of as the watch starts (its last answer, near enough): a change answers at once.
    let relaysKnown: string | undefined;
    // Asked by the watches on a relay event only (the loop below uses the row it read).
    const relaysChanged = (): boolean => {
      const agent = coordinator.state.get('agents', actor.keyId);
      return agent !== undefined && relayEndpointsKey(coordinator, agent) !== relaysKnown;
    };
    for (;;) {
      // A coordinator shutting down answers its held watches at once (the agent asks again, elsewhere or later).
      if (coordinator.closed || watches.released) throw new FerryError('SHUTTING_DOWN', 'the coordinator is shutting down');
      const agent = coordinator.state.get('agents', actor.keyId);
      if (agent?.status !== 'enrolled') throw new FerryError('REVOKED', 'agent is no longer enrolled');
      // Only which config: the signed answer (and the agent's presence) once, when it is sent. Encoded
      // with JSON.stringify, as before: a config and a proof, shallow, and the agents' hottest reply.
      // A retry the agent has not taken up (it says which it has: agents from before retries do not) is news too.
      const retried = retry !== undefined && agent.retrySeq !== null && agent.retrySeq > retry;
      const desired = desiredConfigOf(coordinator.state, agent);
      const stopChanged = stop !== undefined && (stop === '1') !== (agent.stopRequested && desired === null);
      const relaysNow = relayEndpointsKey(coordinator, agent);
      relaysKnown ??= relaysNow;
      if (retried || stopChanged || (desired ?? 'none') !== known || relaysNow !== relaysKnown) {
        return reply(c, 'agent.watch', await OPERATIONS['agent.desired'](coordinator, actor, { challenge }), JSON.stringify);
      }
      // The same config with other secrets (a new version, a rekey that added this agent): answered too, for an agent
      // that said which it has (docs/secrets.md, "Rotation").
      const secretsNow = secrets === undefined ? undefined : desiredSecretsStamp(coordinator, agent);
      if (secretsNow && secretsNow.stamp !== secrets) return reply(c, 'agent.watch', await OPERATIONS['agent.desired'](coordinator, actor, { challenge }), JSON.stringify);
      // Likewise other effective parameters (a layer set or unset, a relabel into or out of a group), for an agent that said
      // which it has (docs/secrets.md, "Per-machine parameters").
      if (params !== undefined && desiredParamsStamp(coordinator, agent) !== params) return reply(c, 'agent.watch', await OPERATIONS['agent.desired'](coordinator, actor, { challenge }), JSON.stringify);
      if (Date.now() >= deadline) {
        coordinator.presence.touch(actor.keyId);
        const unchanged: WatchUnchanged = { unchanged: true, configId: known === 'none' ? null : known };
        return reply(c, 'agent.watch', unchanged, JSON.stringify);
      }
      // Asleep until an event concerning this agent or its graph (a config, a rollback, an assignment, a pin,
      // a revocation), its relays (a relay assigned or revoked) or its secrets (a new version), or the deadline: an idle watch costs nothing.
      await watches.wait(agent.id, agent.pinnedConfig ? null : agent.desiredGraph, Math.max(0, deadline - Date.now()), relaysChanged, secretsNow?.names, params !== undefined);
    }
  }

  // A relay's prefetch watch: the closures its agents are to run, held until they differ from `known` or `wait`
  // seconds pass (protocol/relay-prefetch.ts); the relay then fetches them before its agents ask.
  const prefetch = API_ROUTES['relay.prefetch'];
  app.on(prefetch.method, prefetch.path, async (c) => {
    const actor = await authenticate(c, await readBody(c), 'relay.prefetch', prefetch.access);
    const parsed = prefetch.input.safeParse(c.req.query());
    if (!parsed.success) throw parsed.error;
    const held = watches.hold(actor.keyId, 'relay');
    if (!held) throw new FerryError('TOO_MANY_WATCHES', `this relay holds ${MAX_WATCHES_PER_AGENT} watches already; wait for one to be answered`);
    try {
      const deadline = Date.now() + parsed.data.wait * 1000;
      const changed = (): boolean => relayPrefetch(coordinator, actor.keyId).digest !== parsed.data.known;
      for (;;) {
        if (coordinator.closed || watches.released) throw new FerryError('SHUTTING_DOWN', 'the coordinator is shutting down');
        if (coordinator.state.get('relays', actor.keyId)?.status !== 'enrolled') throw new FerryError('REVOKED', 'relay is revoked');
        if (changed() || Date.now() >= deadline) {
          // The upstream relay's grants are signed per answer (fresh for RELAY_GRANT_TTL_MS), bound to this query's challenge.
          const upstream = upstreamOffer(coordinator, actor.keyId, parsed.data.challenge ?? '');
          return reply(c, 'relay.prefetch', { ...relayPrefetch(coordinator, actor.keyId), ...(upstream ? { upstream } : {}) });
        }
        await watches.waitPrefetch(changed, Math.max(0, deadline - Date.now()));
      }
    } finally {
      held.release();
    }
  });

  // The export streams JSON lines rather than one JSON document.
  const auditExport = API_STREAMS['audit.export'];
  app.on(auditExport.method, auditExport.path, async (c) => {
    const body = await readBody(c);
    await authenticate(c, body, 'audit.export', auditExport.access);
    coordinator.checkpoint();
    const lines = exportLines({ coordinatorKey: coordinator.identity.keyId, name: coordinator.name, exportedAt: coordinator.now() }, coordinator.events(), coordinator.checkpoints());
    const encoder = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        let batch = '';
        for (let next = lines.next(); ; next = lines.next()) {
          if (next.done) {
            if (batch) controller.enqueue(encoder.encode(batch));
            controller.close();
            return;
          }
          batch += next.value;
          if (batch.length > 64 * 1024) break;
        }
        controller.enqueue(encoder.encode(batch));
      },
    });
    return new Response(stream, { headers: { 'content-type': 'application/x-ndjson' } });
  });

  // For scrapers, which send Basic credentials derived from a reader's key rather than signing.
  const metricsRoute = API_STREAMS.metrics;
  app.on(metricsRoute.method, metricsRoute.path, async (c) => {
    const verdict = verifyKeyCredential(c.req.header('authorization'), METRICS_CREDENTIAL_CONTEXT, 'see ferry metrics credentials');
    if (!verdict.ok) {
      log(`ferry coordinator: refused ${requestWhere(c)}: ${verdict.message}`);
      throw new FerryError(verdict.reason === 'missing' ? 'UNAUTHENTICATED' : 'BAD_CREDENTIALS', verdict.message);
    }
    try {
      resolveActor(coordinator, verdict.keyId, '', metricsRoute.access, 'metrics');
    } catch (error) {
      if (isAuthRefusal(error)) log(`ferry coordinator: refused ${requestWhere(c)}: ${error.code} ${error.message} (key ${verdict.keyId})`);
      throw error;
    }
    if (!metrics) throw new FerryError('NOT_FOUND', 'this server keeps no metrics');
    const { text, contentType } = await metrics.scrape();
    return c.body(text, 200, { 'content-type': contentType });
  });

  // Public: clients check it against the fingerprint they pinned before trusting it for QUIC.
  app.on(API_STREAMS['tls.certificate'].method, API_STREAMS['tls.certificate'].path, (c) => c.text(coordinator.tls.certificatePem, 200, { 'content-type': 'application/x-pem-file' }));

  // The data plane's HTTP fallback: the body is a request frame (see protocol/framing.ts) whose
  // header JSON the signature covers; object bytes are verified by their ids instead.
  app.on(API_STREAMS.data.method, API_STREAMS.data.path, (c) => {
    const body = (c.req.raw.body as AsyncIterable<Uint8Array> | null) ?? (async function* () {})();
    const transport = transportOf(c);
    const reader = new FrameReader(metrics ? countedChunks(body, (bytes) => metrics.countData(transport, 'received', bytes)) : body);
    const replied = replyFrames(async () => {
      const headerBytes = await reader.readHeaderBytes(MAX_REQUEST_HEADER_BYTES);
      const request = DataRequestSchema.parse(parseHeaderJson(headerBytes));
      if (request.op === 'hello' || request.op === 'auth') throw new FerryError('INVALID', `${request.op} is for QUIC sessions; HTTP requests are signed one by one`);
      const actor = await authenticate(c, headerBytes, request.op, DATA_ACCESS[request.op]);
      if (actor.role === 'agent') coordinator.presence.touch(actor.keyId);
      return runDataOperation(coordinator, closureAccess, actor, request, reader);
    }, log, requestWhere(c));
    const frames = metrics ? countedChunks(replied, (bytes) => metrics.countData(transport, 'sent', bytes)) : replied;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const next = await frames.next();
          if (next.done) controller.close();
          else controller.enqueue(next.value);
        } catch (error) {
          controller.error(error);
        }
      },
      cancel() {
        void frames.return(undefined);
      },
    });
    return new Response(stream, { headers: { 'content-type': 'application/x-ferry-frames' } });
  });

  app.route('/nix-cache', createNixCacheApp(coordinator, closureAccess, { log, ...options.nixCache }));

  app.route('/', liveViewerRoutes(coordinator, { authenticate, log, checkReplies, ...(options.stopping ? { stopping: options.stopping } : {}) })); // the audit-log viewer, under /viewer (coordinator/viewer/)
  // Answered, not thrown: hono hands a route's error to onError inside the middleware chain, but a
  // thrown not-found past it (and the metrics middleware would not see the request end).
  app.notFound((c) => answerError(new FerryError('NOT_FOUND', `no route ${requestWhere(c)}`), c));
  return app;
}
