/**
 * The web viewer's HTTP routes (hono), under VIEWER_PATH: the page, its two
 * static assets, the login exchange, and JSON endpoints under `api/`. Every
 * endpoint but the login exchange needs a session cookie or, for the CLI, a
 * signed request (when the host provides `authenticateSigned`). Everything is
 * read-only; query parameters are validated with zod. Handlers throw
 * FerryError; errors are answered by the one JSON mapping
 * (api/error-replies.ts), registered with `onError` on these routes, so
 * they answer alike mounted on the coordinator's API or served offline.
 */
import { Hono, type Context } from 'hono';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import { z } from 'zod';
import { FerryError } from '../../protocol/errors.js';
import { jsonErrorHandler } from '../api/error-replies.js';
import { readBoundedBody } from '../api/request-body.js';
import { clientScript } from './assets/client-script.js';
import { STYLES } from './assets/styles.js';
import { loggedOutPage, viewerPage } from './page.js';
import { SESSION_COOKIE, type ViewerPrincipal, type ViewerSessions } from './sessions.js';
import type { TimelineFilter } from './timeline.js';
import type { Viewer } from './viewer.js';
import { VIEWER_PATH } from './viewer-path.js';

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
  /** Where internal errors are logged (default: stderr). */
  log?: (line: string) => void;
}

/** Signed viewer requests carry no more than a small JSON body. */
const MAX_SIGNED_BODY_BYTES = 64 * 1024;

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const text = z.string().max(256).optional();
/**
 * A decimal integer parameter: digits only. Not z.coerce.number(), which
 * took '0x10', '1e3', ' 7 ' and '' (as 0) for numbers.
 */
const DECIMAL = /^\d{1,16}$/;
const int = (min: number, max: number) =>
  z
    .string()
    .regex(DECIMAL, 'expected a decimal integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
const time = z
  .string()
  .max(64)
  .transform((value, context) => {
    const ms = DECIMAL.test(value) ? Number(value) : Date.parse(value);
    if (!Number.isFinite(ms)) {
      context.addIssue({ code: 'custom', message: 'expected ms since the epoch or an ISO time' });
      return z.NEVER;
    }
    return ms;
  });

const EventsQuery = z.strictObject({
  actor: text,
  action: text,
  agent: text,
  graph: text,
  from: time.optional(),
  to: time.optional(),
  q: text,
  before: int(0, Number.MAX_SAFE_INTEGER).optional(),
  after: int(0, Number.MAX_SAFE_INTEGER).optional(),
  around: int(0, Number.MAX_SAFE_INTEGER).optional(),
  limit: int(1, 1000).optional(),
});
/**
 * A position in the log, in the forms Viewer.resolvePosition reads: `end`
 * (or `latest`), a seq number, or an ISO time. Anything else is refused
 * here (400 INVALID), so resolvePosition's OUT_OF_RANGE (404) means what it
 * says: a position outside the log.
 */
const position = z
  .string()
  .max(64)
  .refine((value) => {
    const at = value.trim();
    if (at === '' || at === 'end' || at === 'latest') return true;
    if (/^\d+$/.test(at)) return Number.isSafeInteger(Number(at));
    return /^\d{4}-\d{2}-\d{2}/.test(at) && Number.isFinite(Date.parse(at));
  }, "expected 'end', a seq number or an ISO time");
const StateQuery = z.strictObject({
  at: position.default('end'),
  agentOffset: int(0, 10_000_000).optional(),
  agentLimit: int(1, 1000).optional(),
  agentQuery: text,
  full: z.enum(['0', '1', 'true', 'false']).optional(),
});
const VerifyQuery = z.strictObject({ refresh: z.enum(['0', '1', 'true', 'false']).optional() });
const SeqParam = int(1, Number.MAX_SAFE_INTEGER);

function queryOf<S extends z.ZodType>(c: Context, schema: S): z.infer<S> {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new FerryError('INVALID', `${issue.path.join('.') || 'query'}: ${issue.message}`);
  }
  return parsed.data;
}

const truthy = (value: string | undefined): boolean => value === '1' || value === 'true';

/** The viewer's routes, to mount at the root of an app (they carry VIEWER_PATH themselves). */
export function viewerRoutes(options: ViewerRoutesOptions): Hono {
  const { viewer, sessions } = options;
  const app = new Hono();
  app.onError(jsonErrorHandler(options.log ?? ((line: string) => process.stderr.write(`${line}\n`))));
  const base = VIEWER_PATH;

  const secure = async (c: Context, next: () => Promise<void>): Promise<void> => {
    await next();
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) if (!c.res.headers.has(name)) c.res.headers.set(name, value);
  };
  app.use(base, secure);
  app.use(`${base}/*`, secure);

  function sessionPrincipal(c: Context): ViewerPrincipal | undefined {
    const sessionId = getCookie(c, SESSION_COOKIE);
    const principal = sessions.session(sessionId);
    if (principal && options.stillAllowed && !options.stillAllowed(principal)) {
      sessions.end(sessionId!);
      return undefined;
    }
    return principal;
  }

  /** The caller: a signed request (CLI) or a session cookie (browser). */
  async function principalOf(c: Context): Promise<ViewerPrincipal> {
    if (c.req.header('x-ferry-key') !== undefined) {
      if (!options.authenticateSigned) throw new FerryError('UNAUTHENTICATED', 'this viewer takes no signed requests (offline mode: use the printed login link)');
      return options.authenticateSigned(c, await readBoundedBody(c, MAX_SIGNED_BODY_BYTES));
    }
    const principal = sessionPrincipal(c);
    if (!principal) throw new FerryError('UNAUTHENTICATED', 'not logged in to the viewer: run `ferry audit view` for a login link');
    return principal;
  }

  /** A JSON endpoint: authenticated, the index brought up to date. */
  function api(path: string, handler: (c: Context, principal: ViewerPrincipal) => unknown): void {
    app.get(`${base}/api/${path}`, async (c) => {
      const principal = await principalOf(c);
      await viewer.ready();
      return c.json(handler(c, principal) as object);
    });
  }

  const page = async (c: Context): Promise<Response> => {
    if (!sessionPrincipal(c)) return c.html(loggedOutPage(base, viewer.source.mode), 401);
    return c.html(viewerPage(base, viewer.source.name, viewer.source.mode));
  };
  app.get(base, page);
  app.get(`${base}/`, page);

  app.get(`${base}/assets/viewer.js`, (c) => c.body(clientScript(), 200, { 'content-type': 'text/javascript; charset=utf-8' }));
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
    if (sessionId) sessions.end(sessionId);
    deleteCookie(c, SESSION_COOKIE, { path: base });
    return c.html(loggedOutPage(base, viewer.source.mode, 'Logged out.'), 200);
  });

  // A signed call (viewer role and up) that mints a one-time login link: `ferry audit view`.
  app.post(`${base}/api/session`, async (c) => {
    if (!options.authenticateSigned || c.req.header('x-ferry-key') === undefined) throw new FerryError('UNAUTHENTICATED', 'a login link needs a signed request (ferry audit view)');
    const principal = await options.authenticateSigned(c, await readBoundedBody(c, MAX_SIGNED_BODY_BYTES));
    const { token, expiresAt } = sessions.issueLoginToken(principal);
    // Index the log (and read the browser script: compiled, from the sources) now, so the page the link opens is fast.
    await viewer.ready();
    clientScript();
    return c.json({ loginPath: `${base}/login?token=${token}`, expiresAt, lastSeq: viewer.replayIndex.lastSeq }, 201);
  });

  api('info', () => viewer.info());

  api('events', (c) => {
    const query = queryOf(c, EventsQuery);
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

  api('events/:seq', (c) => {
    const seq = SeqParam.safeParse(c.req.param('seq'));
    if (!seq.success) throw new FerryError('INVALID', 'seq: expected a positive integer');
    return viewer.event(seq.data);
  });

  api('state', (c) => {
    const query = queryOf(c, StateQuery);
    const seq = viewer.resolvePosition(query.at);
    return viewer.state(seq, {
      full: truthy(query.full),
      ...(query.agentOffset !== undefined ? { agentOffset: query.agentOffset } : {}),
      ...(query.agentLimit !== undefined ? { agentLimit: query.agentLimit } : {}),
      ...(query.agentQuery ? { agentQuery: query.agentQuery } : {}),
    });
  });

  app.get(`${base}/api/verify`, async (c) => {
    await principalOf(c);
    const query = queryOf(c, VerifyQuery);
    return c.json(await viewer.ready(truthy(query.refresh)));
  });

  return app;
}
