/**
 * Who is calling: maps a verified key id to an actor with a role, refusing
 * revoked keys, unknown keys, agents that are not (or no longer) enrolled,
 * and roles the operation does not admit. Shared by the HTTP API and the
 * QUIC server so both refuse exactly the same requests.
 */
import { FerryError, httpStatusOf, isSentErrorCode } from '../../protocol/errors.js';
import type { Coordinator } from '../coordinator.js';
import type { Actor } from '../domain/commands.js';
import type { Role } from '../domain/events.js';
import type { ApiAccess } from '../../protocol/api/routes.js';

/** Who may call an operation: roles, anyone whose request is signed by any key (enrollment), or anyone (the API's descriptions say which). */
export type Access = ApiAccess;

/** Whether `error` refuses who is calling (a FerryError answered 401 or 403: resolveActor's, a signature check's). */
export function isAuthRefusal(error: unknown): error is FerryError {
  if (!(error instanceof FerryError) || !isSentErrorCode(error.code)) return false;
  const status = httpStatusOf(error.code);
  return status === 401 || status === 403;
}

/**
 * The actor behind `keyId` (whose signature the caller has verified), if
 * `access` admits it. `allowEnrolling` lets an agent waiting for approval
 * ask about itself. Throws FerryError (401/403: isAuthRefusal) otherwise; never changes state.
 */
export function resolveActor(coordinator: Coordinator, keyId: string, signature: string, access: Access, what: string, allowEnrolling = false): Actor {
  if (access === 'self-signed') return { keyId, role: 'agent', requestSignature: signature };
  const key = coordinator.state.get('keys', keyId);
  const agent = key ? undefined : coordinator.state.get('agents', keyId);
  const relay = key || agent ? undefined : coordinator.state.get('relays', keyId);
  if (key?.revoked) throw new FerryError('REVOKED', 'this key was revoked');
  if (relay) {
    if (relay.status === 'revoked') throw new FerryError('REVOKED', 'relay is revoked');
    if (access !== 'public' && !access.includes('relay')) throw new FerryError('FORBIDDEN', `role 'relay' may not call ${what}`);
    return { keyId, role: 'relay', requestSignature: signature };
  }
  if (!key && !agent) throw new FerryError('UNKNOWN_KEY', 'this key is not registered with the coordinator');
  if (agent && (agent.status === 'revoked' || agent.status === 'rejected')) throw new FerryError('REVOKED', `agent is ${agent.status}`);
  if (agent?.status === 'enrolling' && !allowEnrolling) throw new FerryError('NOT_APPROVED', 'agent is waiting for approval');
  const role = key ? (key.role as Role) : 'agent';
  if (access !== 'public' && !access.includes(role)) throw new FerryError('FORBIDDEN', `role '${role}' may not call ${what}`);
  return { keyId, role, requestSignature: signature };
}
