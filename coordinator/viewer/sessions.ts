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

const digest = (secret: string): string => createHash('sha256').update(secret).digest('hex');
const newSecret = (): string => randomBytes(32).toString('base64url');

export class ViewerSessions {
  private readonly logins = new Map<string, { principal: ViewerPrincipal; expiresAt: number }>();
  private readonly sessions = new Map<string, { principal: ViewerPrincipal; expiresAt: number }>();
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

  /** A new one-time login token for `principal`, valid for loginTtlMs. */
  issueLoginToken(principal: ViewerPrincipal): { token: string; expiresAt: number } {
    this.prune();
    const token = newSecret();
    const expiresAt = this.now() + this.loginTtlMs;
    this.logins.set(digest(token), { principal, expiresAt });
    return { token, expiresAt };
  }

  /** Exchanges a login token (once) for a session; undefined if unknown, used or expired. */
  redeem(token: string): { sessionId: string; principal: ViewerPrincipal; expiresAt: number } | undefined {
    this.prune();
    const key = digest(token);
    const login = this.logins.get(key);
    if (!login) return undefined;
    this.logins.delete(key);
    const sessionId = newSecret();
    const expiresAt = this.now() + this.sessionTtlMs;
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

  /** Ends a session (logout, or its key was revoked). */
  end(sessionId: string): void {
    this.sessions.delete(digest(sessionId));
  }
}
