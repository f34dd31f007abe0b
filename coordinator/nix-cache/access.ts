/**
 * Who may read and write the Nix binary cache. Callers authenticate with
 * netrc credentials (see credentials.ts); their key is then looked up like
 * any request's (resolveActor: unknown, revoked, rejected or not yet
 * approved keys are refused), so revoking a key revokes its cache access.
 *
 * - write (PUT of NARs and narinfos): admin, operator, pusher;
 * - read (narinfos, NARs): admin, operator, pusher, viewer, and agents —
 *   an agent reads only the store paths in the closure of its desired config
 *   (ClosureAccess.configsOf, the same decision as on the data plane; never
 *   a config it merely reports running); any other path is "not found";
 * - reads need no credentials when the cache is configured public.
 */
import type { Coordinator } from '../coordinator.js';
import { FerryError } from '../../protocol/errors.js';
import { isAuthRefusal, resolveActor, type Access } from '../api/actors.js';
import type { ClosureAccess } from '../api/data-operations.js';
import type { Actor } from '../domain/commands.js';
import type { ConfigBody } from '../domain/events.js';
import { verifyNixCacheAuthorization } from './credentials.js';

export type NixCacheAccess = 'read' | 'write';

const ROLES: Record<NixCacheAccess, Access> = {
  read: ['admin', 'operator', 'pusher', 'viewer', 'agent'],
  write: ['admin', 'operator', 'pusher'],
};

/** Verified credentials are remembered (bounded), so a `nix copy` of thousands of paths verifies each key once. */
const VERIFIED_MAX = 1024;
/** An agent's readable store paths, per config (configs are immutable), bounded. */
const CLOSURES_MAX = 64;

export class NixCacheGate {
  private readonly verified = new Map<string, string>();
  private readonly closures = new Map<string, Set<string>>();

  /** `closureAccess`: the coordinator's one instance, shared with the data plane. */
  constructor(
    private readonly coordinator: Coordinator,
    private readonly closureAccess: ClosureAccess,
    private readonly publicRead: boolean,
  ) {}

  /**
   * The actor behind an `Authorization` header for `access`, or undefined
   * for an anonymous read of a public cache. Throws FerryError: 401 (no or
   * bad credentials) or 403 (the key may not do this), with the key id in
   * `details.keyId` once the credentials verified.
   * The actor carries no request signature: the password is a bearer
   * credential and must not be copied into the audit log.
   */
  authorize(header: string | undefined, access: NixCacheAccess): Actor | undefined {
    if (access === 'read' && this.publicRead) return undefined;
    let keyId = header === undefined ? undefined : this.verified.get(header);
    if (keyId === undefined) {
      const verdict = verifyNixCacheAuthorization(header);
      if (!verdict.ok) throw new FerryError(verdict.reason === 'missing' ? 'UNAUTHENTICATED' : 'BAD_CREDENTIALS', verdict.message);
      keyId = verdict.keyId;
      if (this.verified.size >= VERIFIED_MAX) this.verified.clear();
      this.verified.set(header!, keyId);
    }
    try {
      const actor = resolveActor(this.coordinator, keyId, '', ROLES[access], access === 'write' ? 'uploads to the Nix cache' : 'the Nix cache');
      return { keyId: actor.keyId, role: actor.role, requestSignature: null };
    } catch (error) {
      if (isAuthRefusal(error)) throw new FerryError(error.code, error.message, { details: { keyId } });
      throw error;
    }
  }

  /**
   * Whether `actor` (undefined: anonymous, public cache) may read
   * `storePath`. Which configs an agent may read is ClosureAccess.configsOf's
   * decision alone; this gate only maps them to store paths.
   */
  mayRead(actor: Actor | undefined, storePath: string): boolean {
    if (actor?.role !== 'agent') return true;
    return this.closureAccess.configsOf(actor.keyId).some((configId) => this.closureOf(configId).has(storePath));
  }

  private closureOf(configId: string): Set<string> {
    let paths = this.closures.get(configId);
    if (paths) return paths;
    const config = this.coordinator.state.get('configs', configId);
    paths = new Set();
    if (config) {
      try {
        for (const storePath of this.coordinator.castore.closure(Object.values((config.body as ConfigBody).targets))) paths.add(storePath);
      } catch {
        // Not (yet) fully pushed: nothing of it is readable; not cached, so a later push is seen.
        return paths;
      }
    }
    if (this.closures.size >= CLOSURES_MAX) this.closures.delete(this.closures.keys().next().value!);
    this.closures.set(configId, paths);
    return paths;
  }
}
