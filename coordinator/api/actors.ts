/**
 * Who is calling: maps a verified key id to an actor with a role, refusing
 * revoked keys, unknown keys, agents that are not (or no longer) enrolled,
 * and roles the operation does not admit. Shared by the HTTP API and the
 * QUIC server so both refuse exactly the same requests.
 */
import type { Coordinator } from '../coordinator.js';
import type { Actor } from '../domain/commands.js';
import type { Role } from '../domain/events.js';

/** Who may call an operation: roles, anyone whose request is signed by any key (enrollment), or anyone. */
export type Access = readonly Role[] | 'self-signed' | 'public';

export class AuthError extends Error {
  override readonly name = 'AuthError';
  constructor(
    readonly status: 401 | 403,
    readonly code: 'UNAUTHENTICATED' | 'STALE_REQUEST' | 'REPLAYED_NONCE' | 'REVOKED' | 'UNKNOWN_KEY' | 'NOT_APPROVED' | 'FORBIDDEN',
    message: string,
  ) {
    super(message);
  }
}

/**
 * The actor behind `keyId` (whose signature the caller has verified), if
 * `access` admits it. `allowEnrolling` lets an agent waiting for approval
 * ask about itself. Throws AuthError otherwise; never changes state.
 */
export function resolveActor(coordinator: Coordinator, keyId: string, signature: string, access: Access, what: string, allowEnrolling = false): Actor {
  if (access === 'self-signed') return { keyId, role: 'agent', requestSignature: signature };
  const key = coordinator.state.get('keys', keyId);
  const agent = key ? undefined : coordinator.state.get('agents', keyId);
  if (key?.revoked) throw new AuthError(403, 'REVOKED', 'this key was revoked');
  if (!key && !agent) throw new AuthError(401, 'UNKNOWN_KEY', 'this key is not registered with the coordinator');
  if (agent && (agent.status === 'revoked' || agent.status === 'rejected')) throw new AuthError(403, 'REVOKED', `agent is ${agent.status}`);
  if (agent?.status === 'enrolling' && !allowEnrolling) throw new AuthError(403, 'NOT_APPROVED', 'agent is waiting for approval');
  const role = key ? (key.role as Role) : 'agent';
  if (access !== 'public' && !access.includes(role)) throw new AuthError(403, 'FORBIDDEN', `role '${role}' may not call ${what}`);
  return { keyId, role, requestSignature: signature };
}
