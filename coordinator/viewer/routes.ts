/**
 * The web viewer's HTTP routes (hono), under VIEWER_PATH: the page, its two
 * static assets, the login exchange, and the JSON endpoints under `api/`,
 * which are the routes VIEWER_ROUTES describes (protocol/api/viewer-routes.ts:
 * their inputs are validated, and with `checkReplies` their replies checked,
 * with its schemas). Every endpoint but the login exchange needs a session
 * cookie or, for the CLI, a signed request (when the host provides
 * `authenticateSigned`). On a live coordinator (`live`) also the live
 * fleet page, `live`, and its server-sent events, `live/stream`
 * (live-streams.ts), which take a session only. Everything is read-only:
 * GET only, but for the signed call that mints a login link. Handlers throw
 * FerryError; errors are answered by the one JSON mapping
 * (api/error-replies.ts), registered with `onError` on these routes, so
 * they answer alike mounted on the coordinator's API or served offline.
 */
import { Hono, type Context } from 'hono';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import type { z } from 'zod';
import { FerryError } from '../../protocol/errors.js';
import { VIEWER_PATH, VIEWER_ROUTES, type ViewerOutput, type ViewerRoute, type ViewerRouteName } from '../../protocol/api/viewer-routes.js';
import { jsonErrorHandler } from '../api/error-replies.js';
import { checkReply, checkRepliesByDefault } from '../api/reply-check.js';
import { readBoundedBody, requestInput } from '../api/request-body.js';
import { clientScript, liveClientScript } from './assets/client-script.js';
import { STYLES } from './assets/styles.js';
import type { LiveFleetService } from './live-streams.js';
import { livePage, loggedOutPage, viewerPage } from './page.js';
import { SESSION_COOKIE, type ViewerPrincipal, type ViewerSessions } from './sessions.js';
import type { TimelineFilter } from './timeline.js';
import type { Viewer } from './viewer.js';

export { VIEWER_PATH };

export interface ViewerRoutesOptions {
  viewer: Viewer;
  sessions: ViewerSessions;
  /**
   * Authenticates a signed request (the coordinator API's own check: signature,
   * nonce, key, role) or throws its FerryError.
   * Absent offline: there, only the login link printed at start-up gets in.
   */
  authenticateSigned?: (c: Context, body: Uint8Array) => Promise<ViewerPrincipal>;
  /** Whether a session's key may still read (not revoked since); default: always. */
  stillAllowed?: (principal: ViewerPrincipal) => boolean;
  /** The fleet now and its live streams (a live coordinator's); absent offline, where the live page is NOT_FOUND. */
  live?: LiveFleetService;
  /** Closure diffs between configs (a live coordinator's castore: api/config-diff.ts); absent offline, where they are NOT_FOUND. */
  configDiff?: (input: z.output<(typeof VIEWER_ROUTES)['viewer.configDiff']['input']>) => ViewerOutput<'viewer.configDiff'>;
  /** Where internal errors are logged (default: stderr). */
  log?: (line: string) => void;
  /** Check each JSON reply against its route's output (VIEWER_ROUTES) before sending it; default: FERRY_CHECK_REPLIES=1 (api/reply-check.ts). */
  checkReplies?: boolean;
}

/** Signed viewer requests carry no more than a small JSON body. */
const MAX_SIGNED_BODY_BYTES = 64 * 1024;

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const truthy = (value: string | undefined): boolean => value === '1' || value === 'true';

/** The viewer's routes, to mount at the root of an app (they carry VIEWER_PATH themselves). */
export function viewerRoutes(options: ViewerRoutesOptions): Hono {
  const { viewer, sessions } = options;
  const app = new Hono();
  app.onError(jsonErrorHandler(options.log ?? ((line: string) => process.stderr.write(`${line}\n`))));
  const base = VIEWER_PATH;
  const checkReplies = options.checkReplies ?? checkRepliesByDefault();

  const secure = async (c: Context, next: () => Promise<void>): Promise<void> => {
    await next();
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) if (!c.res.headers.has(name)) c.res.headers.set(name, value);
  };
  app.use(base, secure);
  app.use(`${base}/*`, secure);

  /** The principal of session `sessionId` while it lasts and its key may still read; a revoked key's session is ended. */
  function principalOf(sessionId: string | undefined): ViewerPrincipal | undefined {
    const principal = sessions.session(sessionId);
    if (principal && options.stillAllowed && !options.stillAllowed(principal)) {
      sessions.end(sessionId!);
      return undefined;
    }
    return principal;
  }
  const sessionPrincipal = (c: Context): ViewerPrincipal | undefined => principalOf(getCookie(c, SESSION_COOKIE));

  /**
   * The caller of `route`, and the body it sent: a signed request (CLI), or
   * a session cookie (browser) where the route takes one. Refuses
   * (UNAUTHENTICATED) anyone else, and signed requests offline.
   */
  async function callerOf(c: Context, route: ViewerRoute): Promise<{ principal: ViewerPrincipal; body: Uint8Array }> {
    const signed = c.req.header('x-ferry-key') !== undefined;
    if (!route.session && (!signed || !options.authenticateSigned)) throw new FerryError('UNAUTHENTICATED', 'a login link needs a signed request (ferry audit view)');
    if (signed) {
      if (!options.authenticateSigned) throw new FerryError('UNAUTHENTICATED', 'this viewer takes no signed requests (offline mode: use the printed login link)');
      const body = await readBoundedBody(c, MAX_SIGNED_BODY_BYTES);
      return { principal: await options.authenticateSigned(c, body), body };
    }
    const principal = sessionPrincipal(c);
    if (!principal) throw new FerryError('UNAUTHENTICATED', 'not logged in to the viewer: run `ferry audit view` for a login link');
    return { principal, body: new Uint8Array(0) };
  }

  /**
   * Routes `name` as VIEWER_ROUTES describes it: the caller authenticated,
   * the input (path parameters, query, body) validated with the route's
   * schema (a zod error is answered 400 INVALID, naming the field), then
   * the handler's result, checked against the route's output first when
   * checkReplies is on (api/reply-check.ts). Handlers bring the index up to
   * date themselves (`viewer.ready`), after the input is known to be good.
   */
  function api<N extends ViewerRouteName>(name: N, handler: (input: z.output<(typeof VIEWER_ROUTES)[N]['input']>, principal: ViewerPrincipal) => Promise<unknown>): void {
    const route: ViewerRoute = VIEWER_ROUTES[name];
    app.on(route.method, route.path, async (c) => {
      const { principal, body } = await callerOf(c, route);
      const input = route.input.safeParse(requestInput(c, body));
      if (!input.success) throw input.error;
      const result = await handler(input.data as z.output<(typeof VIEWER_ROUTES)[N]['input']>, principal);
      if (checkReplies) checkReply(name, route.output, result);
      // JSON.stringify: the viewer clips what it answers to MAX_VIEWER_JSON_DEPTH (viewer.ts).
      return c.body(JSON.stringify(result), route.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
    });
  }

  const page = async (c: Context): Promise<Response> => {
    if (!sessionPrincipal(c)) return c.html(loggedOutPage(base, viewer.source.mode), 401);
    return c.html(viewerPage(base, viewer.source.name, viewer.source.mode));
  };
  app.get(base, page);
  app.get(`${base}/`, page);

  app.get(`${base}/assets/viewer.js`, (c) => c.body(clientScript(), 200, { 'content-type': 'text/javascript; charset=utf-8' }));
  app.get(`${base}/assets/live.js`, (c) => c.body(liveClientScript(), 200, { 'content-type': 'text/javascript; charset=utf-8' }));
  app.get(`${base}/assets/viewer.css`, (c) => c.body(STYLES, 200, { 'content-type': 'text/css; charset=utf-8' }));

  app.get(`${base}/login`, (c) => {
    const token = c.req.query('token');
    const redeemed = token && token.length <= 128 ? sessions.redeem(token) : undefined;
    if (!redeemed) return c.html(loggedOutPage(base, viewer.source.mode, 'This login link is unknown, expired or already used.'), 401);
    setCookie(c, SESSION_COOKIE, redeemed.sessionId, { path: base, httpOnly: true, sameSite: 'Strict', maxAge: Math.floor(sessions.sessionTtlMs / 1000) });
    return c.redirect(`${base}/`, 303);
  });

  app.get(`${base}/logout`, (c) => {
    const sessionId = getCookie(c, SESSION_COOKIE);
    if (sessionId) {
      sessions.end(sessionId);
      options.live?.closeSession(sessions.keyOf(sessionId), 'logged out');
    }
    deleteCookie(c, SESSION_COOKIE, { path: base });
    return c.html(loggedOutPage(base, viewer.source.mode, 'Logged out.'), 200);
  });

  // A signed call (viewer role and up) that mints a one-time login link: `ferry audit view`.
  api('viewer.session', async (_input, principal) => {
    const { token, expiresAt } = sessions.issueLoginToken(principal);
    // Index the log (and read the browser script: compiled, from the sources) now, so the page the link opens is fast.
    await viewer.ready();
    clientScript();
    return { loginPath: `${base}/login?token=${token}`, expiresAt, lastSeq: viewer.replayIndex.lastSeq };
  });

  api('viewer.info', async () => {
    await viewer.ready();
    return viewer.info();
  });

  api('viewer.events', async (query) => {
    await viewer.ready();
    const filter: TimelineFilter = {};
    if (query.actor) filter.actor = query.actor;
    if (query.action) filter.action = query.action;
    if (query.agent) filter.agent = query.agent;
    if (query.graph) filter.graph = query.graph;
    if (query.from !== undefined) filter.from = query.from;
    if (query.to !== undefined) filter.to = query.to;
    if (query.q) filter.text = query.q;
    return viewer.timeline(filter, { limit: query.limit, before: query.before, after: query.after, around: query.around });
  });

  api('viewer.event', async ({ seq }) => {
    await viewer.ready();
    return viewer.event(seq);
  });

  api('viewer.state', async (query) => {
    await viewer.ready();
    const seq = viewer.resolvePosition(query.at);
    return viewer.state(seq, {
      full: truthy(query.full),
      ...(query.agentOffset !== undefined ? { agentOffset: query.agentOffset } : {}),
      ...(query.agentLimit !== undefined ? { agentLimit: query.agentLimit } : {}),
      ...(query.agentQuery ? { agentQuery: query.agentQuery } : {}),
    });
  });

  api('viewer.verify', (query) => viewer.ready(truthy(query.refresh)));

  const liveService = (): LiveFleetService => {
    if (!options.live) throw new FerryError('NOT_FOUND', 'the live fleet is shown by a running coordinator, not from an export');
    return options.live;
  };

  api('viewer.live', async (query) => liveService().snapshot(query));

  // The API's configs.diff, for the page (a session cannot sign): the same handler, given by the host.
  api('viewer.configDiff', async (input) => {
    if (!options.configDiff) throw new FerryError('NOT_FOUND', 'closure diffs are computed by a running coordinator (from its castore), not from an export');
    return options.configDiff(input);
  });

  app.get(`${base}/live`, (c) => {
    liveService();
    if (!sessionPrincipal(c)) return c.html(loggedOutPage(base, viewer.source.mode), 401);
    return c.html(livePage(base, viewer.source.name));
  });

  /**
   * The live page's server-sent events: the input of `viewer.live`, and
   * its reply as each `fleet` message (live-streams.ts), for a session only
   * (an EventSource cannot sign). Refused: no session (UNAUTHENTICATED), a
   * bad query (INVALID), too many streams (TOO_MANY_STREAMS), offline
   * (NOT_FOUND).
   */
  app.get(`${base}/live/stream`, (c) => {
    const live = liveService();
    const sessionId = getCookie(c, SESSION_COOKIE);
    const principal = principalOf(sessionId);
    if (!principal || !sessionId) throw new FerryError('UNAUTHENTICATED', 'not logged in to the viewer: run `ferry audit view` for a login link');
    const route = VIEWER_ROUTES['viewer.live'];
    // As the JSON routes read their input (a repeated key is an array, which the schema refuses); no body.
    const query = route.input.safeParse(requestInput(c, new Uint8Array(0)));
    if (!query.success) throw query.error;
    const owner = {
      session: sessions.keyOf(sessionId),
      keyId: principal.keyId,
      stillValid: () => principalOf(sessionId) !== undefined,
    };
    const body = live.open(owner, query.data, c.req.raw.signal);
    const headers: Record<string, string> = {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      // Proxies that buffer (nginx) would hold the messages back.
      'x-accel-buffering': 'no',
    };
    // Over HTTP/1.1 the connection was the stream's alone: kept alive after it, it held a stopping
    // server's close until the client dropped it (undici: 3 s). HTTP/2 forbids the header (and needs it not).
    if ((c.env as { incoming?: { httpVersionMajor?: number } } | undefined)?.incoming?.httpVersionMajor === 1) headers.connection = 'close';
    return new Response(body, { headers });
  });

  return app;
}
