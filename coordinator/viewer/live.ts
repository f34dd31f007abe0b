/**
 * The viewer on a running coordinator: its log as the source, in-memory
 * sessions, and the coordinator API's own request authentication for the
 * CLI's signed calls (`ferry audit view|show|replay`), and the live
 * fleet page's readings and streams (live-fleet.ts, live-streams.ts).
 * Mounted by coordinator/api/http.ts.
 */
import type { Context } from 'hono';
import type { Hono } from 'hono';
import type { Coordinator } from '../coordinator.js';
import type { Actor } from '../domain/commands.js';
import { VIEWER_ROLES } from '../../protocol/api/viewer-routes.js';
import { isAuthRefusal, resolveActor, type Access } from '../api/actors.js';
import { checkReply, checkRepliesByDefault } from '../api/reply-check.js';
import { configDiff } from '../api/config-diff.js';
import { LiveFleetSchema } from '../../protocol/api/viewer-views.js';
import { fleetNow, liveFleetPage } from './live-fleet.js';
import { liveLogSource } from './live-source.js';
import { LiveStreams, type LiveStreamTimings } from './live-streams.js';
import { viewerRoutes } from './routes.js';
import { ViewerSessions, type ViewerSessionOptions } from './sessions.js';
import { Viewer, type ViewerOptions } from './viewer.js';

/** Who may use the viewer: the roles that may read the audit log (VIEWER_ROUTES' access). */
export const VIEWER_ACCESS: Access = VIEWER_ROLES;

export interface LiveViewerOptions extends ViewerOptions {
  /** The HTTP API's check of a signed request (signature, nonce, key, role); throws its FerryError (401/403). */
  authenticate: (c: Context, body: Uint8Array, operation: string, access: Access) => Promise<Actor>;
  log?: (line: string) => void;
  sessions?: ViewerSessionOptions;
  /** Check replies against VIEWER_ROUTES (routes.ts ViewerRoutesOptions); the HTTP API passes its own setting. */
  checkReplies?: boolean;
  /** Aborted when the server stops: the live page's streams close at once rather than hold the server's close. */
  stopping?: AbortSignal;
  /** The live streams' pace (live-streams.ts; tests shorten it). */
  liveTimings?: Partial<LiveStreamTimings>;
}

/**
 * The viewer's routes for `coordinator` (paths under /viewer; mount at the
 * app's root). The replay index is built on first use (the login-link call
 * builds it, so the page it opens is fast) and follows the log as it grows.
 */
export function liveViewerRoutes(coordinator: Coordinator, options: LiveViewerOptions): Hono {
  const viewer = new Viewer(liveLogSource(coordinator), options);
  const checkReplies = options.checkReplies ?? checkRepliesByDefault();
  const live = new LiveStreams(
    {
      read: () => fleetNow(coordinator),
      page: (now, query) => {
        const page = liveFleetPage(now, query);
        if (checkReplies) checkReply('viewer.live', LiveFleetSchema, page);
        return page;
      },
      onCommit: (listener) => coordinator.commits.subscribe(listener),
      now: coordinator.now,
    },
    options.liveTimings,
    options.log,
  );
  coordinator.onClose(() => live.stop('the coordinator stopped'));
  options.stopping?.addEventListener('abort', () => live.stop('the coordinator is stopping'), { once: true });
  return viewerRoutes({
    viewer,
    live,
    configDiff: (input) => configDiff(coordinator, input),
    sessions: new ViewerSessions(options.sessions),
    authenticateSigned: async (c, body) => {
      const actor = await options.authenticate(c, body, 'viewer', VIEWER_ACCESS);
      return { keyId: actor.keyId, role: actor.role };
    },
    stillAllowed: (principal) => {
      try {
        resolveActor(coordinator, principal.keyId, '', VIEWER_ACCESS, 'the viewer');
        return true;
      } catch (error) {
        if (isAuthRefusal(error)) return false;
        throw error;
      }
    },
    ...(options.log ? { log: options.log } : {}),
    ...(options.checkReplies !== undefined ? { checkReplies: options.checkReplies } : {}),
  });
}
