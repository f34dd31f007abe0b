/**
 * Viewer logins, in memory: a short-lived one-time login token (obtained by
 * a signed API call, `ferry audit view`) is exchanged once for a session,
 * kept in an HttpOnly cookie. Only hashes of tokens and session ids are
 * stored; everything expires and is forgotten on restart.
 */
import { createHash, randomBytes } from 'node:crypto';

/** Who a session belongs to: the key that asked for the login, and its role then. */
export interface ViewerPrincipal {
  keyId: string;
  role: string;
}

export interface ViewerSessionOptions {
  /** How long a login token can be redeemed (default 2 minutes). */
  loginTtlMs?: number;
  /** How long a session lasts (default 8 hours). */
  sessionTtlMs?: number;
  now?: () => number;
}

export const SESSION_COOKIE = 'ferry_viewer_session';

/**
 * Login tokens waiting to be redeemed, and sessions, that one key may hold
 * at once; one more ends its oldest. Each costs only a signed request (a
 * session one more GET) and lived for its whole ttl: a viewer key could
 * fill the coordinator's memory at ~500 sessions a second, each kept 8 hours.
 * The offline viewer's logins all share one principal ('offline').
 */
export const MAX_LOGINS_PER_KEY = 16;
export const MAX_SESSIONS_PER_KEY = 16;

interface Entry {
  principal: ViewerPrincipal;
  expiresAt: number;
}

/** Makes room for one more entry of `keyId`: deletes its oldest ones (Maps keep insertion order) beyond `limit - 1`. */
function makeRoom(map: Map<string, Entry>, keyId: string, limit: number): void {
  const own = [...map].filter(([, entry]) => entry.principal.keyId === keyId);
  for (const [key] of own.slice(0, Math.max(0, own.length - limit + 1))) map.delete(key);
}

const digest = (secret: string): string => createHash('sha256').update(secret).digest('hex');
const newSecret = (): string => randomBytes(32).toString('base64url');

export class ViewerSessions {
  private readonly logins = new Map<string, Entry>();
  private readonly sessions = new Map<string, Entry>();
  readonly loginTtlMs: number;
  readonly sessionTtlMs: number;
  private readonly now: () => number;

  constructor(options: ViewerSessionOptions = {}) {
    this.loginTtlMs = options.loginTtlMs ?? 2 * 60_000;
    this.sessionTtlMs = options.sessionTtlMs ?? 8 * 3600_000;
    this.now = options.now ?? Date.now;
  }

  private prune(): void {
    const now = this.now();
    for (const [key, login] of this.logins) if (login.expiresAt <= now) this.logins.delete(key);
    for (const [key, session] of this.sessions) if (session.expiresAt <= now) this.sessions.delete(key);
  }

  /** A new one-time login token for `principal`, valid for loginTtlMs; the key's oldest pending one goes beyond MAX_LOGINS_PER_KEY. */
  issueLoginToken(principal: ViewerPrincipal): { token: string; expiresAt: number } {
    this.prune();
    const token = newSecret();
    const expiresAt = this.now() + this.loginTtlMs;
    makeRoom(this.logins, principal.keyId, MAX_LOGINS_PER_KEY);
    this.logins.set(digest(token), { principal, expiresAt });
    return { token, expiresAt };
  }

  /** Exchanges a login token (once) for a session, ending the key's oldest beyond MAX_SESSIONS_PER_KEY; undefined if unknown, used or expired. */
  redeem(token: string): { sessionId: string; principal: ViewerPrincipal; expiresAt: number } | undefined {
    this.prune();
    const key = digest(token);
    const login = this.logins.get(key);
    if (!login) return undefined;
    this.logins.delete(key);
    const sessionId = newSecret();
    const expiresAt = this.now() + this.sessionTtlMs;
    makeRoom(this.sessions, login.principal.keyId, MAX_SESSIONS_PER_KEY);
    this.sessions.set(digest(sessionId), { principal: login.principal, expiresAt });
    return { sessionId, principal: login.principal, expiresAt };
  }

  /** The principal of a live session, or undefined. */
  session(sessionId: string | undefined): ViewerPrincipal | undefined {
    if (!sessionId) return undefined;
    const session = this.sessions.get(digest(sessionId));
    if (!session || session.expiresAt <= this.now()) return undefined;
    return session.principal;
  }

  /** A name for the session `sessionId` that is not its secret (what its live streams are filed under). */
  keyOf(sessionId: string): string {
    return digest(sessionId);
  }

  /** Ends a session (logout, or its key was revoked). */
  end(sessionId: string): void {
    this.sessions.delete(digest(sessionId));
  }
}
