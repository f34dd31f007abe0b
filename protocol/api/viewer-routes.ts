/**
 * The audit viewer's JSON API, described as the coordinator's is
 * (routes.ts): one table of routes under VIEWER_PATH, each with its method
 * and path, who may call it, its input and output schemas, and the error
 * codes it answers beyond those of any request.
 *
 * Participants: the viewer's browser script (with a session cookie) and the
 * CLI (`ferry audit show|replay|view`, signed requests). Served by a live
 * coordinator (mounted on its HTTP API) and by `ferry audit view --file`
 * offline, where only the login link gets in (no keys to check signatures
 * against). Routes the page, its assets and the login exchange are not
 * JSON and are not described here (coordinator/viewer/routes.ts).
 *
 * Requests: the input is one object, the path parameters and the query
 * merged (and the JSON body of the POST), validated strictly with the
 * schemas below, which the server uses as they are: parameters arrive as
 * strings, so numbers are decimal digits only (not z.coerce.number(), which
 * took '0x10', '1e3', ' 7 ' and '' for numbers). Replies: JSON, `201` for
 * the POST, else `200`; an error is ErrorBodySchema with its code's status.
 * Access, as in routes.ts, documents what the viewer enforces.
 *
 * The coordinator's viewer routes this table (coordinator/viewer/routes.ts)
 * and checks its replies against `output` in tests (FERRY_CHECK_REPLIES);
 * the client calls it by name, `client.call('viewer.state', { at: '42' })`,
 * and checks each reply (http-client.ts). A test checks that the viewer
 * mounts exactly these.
 *
 * Example: `GET /viewer/api/state?at=42&full=1` →
 * `{"seq":42,"position":{…},"lastSeq":97,…,"state":{"counts":{…},"agents":{…},…}}`.
 */
import { z } from 'zod';
import type { ErrorCode } from '../errors.js';
import { ConfigDiffInput, ConfigDiffSchema } from './config-diff.js';
import type { Role } from './fleet.js';
import { EventDetailSchema, LiveFleetSchema, StateResultSchema, TimelinePageSchema, VerificationStatusSchema, ViewerInfoSchema } from './viewer-views.js';

/** Where the viewer lives on the coordinator (and on the offline server). */
export const VIEWER_PATH = '/viewer';

export interface ViewerRoute<I extends z.ZodType = z.ZodType, O extends z.ZodType = z.ZodType> {
  method: 'GET' | 'POST';
  path: `${typeof VIEWER_PATH}/api/${string}`;
  /** The roles whose signed requests are answered. */
  access: readonly Role[];
  /** Whether a browser's session cookie (from a login link) is answered too. */
  session: boolean;
  input: I;
  output: O;
  /** The codes this route answers beyond those of any request. */
  errors: readonly ErrorCode[];
}

function route<I extends z.ZodType, O extends z.ZodType>(description: ViewerRoute<I, O>): ViewerRoute<I, O> {
  return description;
}

/** The roles that may read the audit log. */
export const VIEWER_ROLES = ['admin', 'operator', 'viewer'] as const satisfies readonly Role[];

const text = z.string().max(256).optional();
const DECIMAL = /^\d{1,16}$/;
/** A decimal integer parameter in [min, max]: digits only. */
const int = (min: number, max: number) =>
  z
    .string()
    .regex(DECIMAL, 'expected a decimal integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
/** A time parameter: ms since the epoch, or an ISO time. */
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
const flag = z.enum(['0', '1', 'true', 'false']).optional();

/** The timeline's filters (every given one must match) and which page of it. */
export const EventsQuery = z.strictObject({
  /** An actor key (or its first characters), or a role. */
  actor: text,
  /** An action, or a family (`agent`: every agent.* action). */
  action: text,
  /** An agent id (or its first characters) or an agent name. */
  agent: text,
  graph: text,
  /** Wall time range, inclusive. */
  from: time.optional(),
  to: time.optional(),
  /** Case-insensitive text the payload JSON must contain. */
  q: text,
  before: int(0, Number.MAX_SAFE_INTEGER).optional(),
  after: int(0, Number.MAX_SAFE_INTEGER).optional(),
  around: int(0, Number.MAX_SAFE_INTEGER).optional(),
  limit: int(1, 1000).optional(),
});

/**
 * A position in the log, in the forms the viewer's resolvePosition reads:
 * `end` (or `latest`), a seq number, or an ISO time. Anything else is
 * refused here (400 INVALID), so OUT_OF_RANGE (404) means what it says: a
 * position outside the log.
 */
export const PositionParam = z
  .string()
  .max(64)
  .refine((value) => {
    const at = value.trim();
    if (at === '' || at === 'end' || at === 'latest') return true;
    if (/^\d+$/.test(at)) return Number.isSafeInteger(Number(at));
    return /^\d{4}-\d{2}-\d{2}/.test(at) && Number.isFinite(Date.parse(at));
  }, "expected 'end', a seq number or an ISO time");

/** Where, and how much: a page of agents with short histories, or everything (`full`). */
export const StateQuery = z.strictObject({
  at: PositionParam.default('end'),
  agentOffset: int(0, 10_000_000).optional(),
  agentLimit: int(1, 1000).optional(),
  agentQuery: text,
  full: flag,
});

/** Agents the live page shows per page, at most: ~0.5 KiB of JSON an agent, so a message stays under ~260 KiB whatever the fleet's size. */
export const MAX_LIVE_AGENT_LIMIT = 500;

/**
 * Which agents of the live fleet (GET /viewer/api/live, and the live
 * stream, which takes the same query): a page, and a filter (a name part,
 * an id prefix, or a status, phase, graph, presence or health).
 */
export const LiveQuery = z.strictObject({
  agentOffset: int(0, 10_000_000).optional(),
  agentLimit: int(1, MAX_LIVE_AGENT_LIMIT).optional(),
  agentQuery: text,
});

/** `refresh`: re-verify the chain now rather than when the viewer would. */
export const VerifyQuery = z.strictObject({ refresh: flag });

export const EventQuery = z.strictObject({ seq: int(1, Number.MAX_SAFE_INTEGER) });

/** `POST /viewer/api/session`: a one-time login link, relative to the coordinator's URL. */
export const LoginLinkSchema = z.strictObject({
  loginPath: z.string().startsWith(`${VIEWER_PATH}/login?token=`),
  expiresAt: z.number().int(),
  lastSeq: z.number().int().nonnegative(),
});

const noInput = z.strictObject({});

export const VIEWER_ROUTES = {
  /** Signed only: a login link is what a session starts from. Indexes the log, so the page it opens is fast. */
  'viewer.session': route({ method: 'POST', path: '/viewer/api/session', access: VIEWER_ROLES, session: false, input: noInput, output: LoginLinkSchema, errors: [] }),
  'viewer.info': route({ method: 'GET', path: '/viewer/api/info', access: VIEWER_ROLES, session: true, input: noInput, output: ViewerInfoSchema, errors: [] }),
  'viewer.events': route({ method: 'GET', path: '/viewer/api/events', access: VIEWER_ROLES, session: true, input: EventsQuery, output: TimelinePageSchema, errors: [] }),
  'viewer.event': route({ method: 'GET', path: '/viewer/api/events/:seq', access: VIEWER_ROLES, session: true, input: EventQuery, output: EventDetailSchema, errors: ['OUT_OF_RANGE', 'NOT_REPLAYABLE'] }),
  'viewer.state': route({ method: 'GET', path: '/viewer/api/state', access: VIEWER_ROLES, session: true, input: StateQuery, output: StateResultSchema, errors: ['OUT_OF_RANGE', 'NOT_REPLAYABLE'] }),
  'viewer.verify': route({ method: 'GET', path: '/viewer/api/verify', access: VIEWER_ROLES, session: true, input: VerifyQuery, output: VerificationStatusSchema, errors: [] }),
  /** The fleet now (live coordinator only: NOT_FOUND offline); the live page's stream sends the same, as it changes. */
  /** A closure diff between two configs (live coordinator only: NOT_FOUND offline, which has no castore): the API's `configs.diff`, one handler. */
  'viewer.configDiff': route({ method: 'GET', path: '/viewer/api/configs/:configId/diff', access: VIEWER_ROLES, session: true, input: ConfigDiffInput, output: ConfigDiffSchema, errors: ['NOT_FOUND', 'STORE_PATH_NOT_FOUND'] }),
  'viewer.live': route({ method: 'GET', path: '/viewer/api/live', access: VIEWER_ROLES, session: true, input: LiveQuery, output: LiveFleetSchema, errors: [] }),
} satisfies Record<`viewer.${string}`, ViewerRoute>;

export type ViewerRouteName = keyof typeof VIEWER_ROUTES;
export type ViewerInput<N extends ViewerRouteName> = z.input<(typeof VIEWER_ROUTES)[N]['input']>;
export type ViewerOutput<N extends ViewerRouteName> = z.output<(typeof VIEWER_ROUTES)[N]['output']>;
