/**
 * Where a relay fetches a config's objects from (docs/relays.md, "Upstream
 * relays"): its upstream relay when the coordinator gave it one and a grant
 * there for that config, the coordinator otherwise and whenever the
 * upstream relay fails.
 *
 * The coordinator decides: the relay's prefetch answer names the upstream
 * relay ({id, url, fingerprint}) and carries a grant per config naming
 * this relay's own key, under a proof bound to this relay and the query's
 * challenge (protocol/relay-prefetch.ts). An offer whose proof does not
 * verify is ignored. The upstream relay checks each grant as an agent's.
 *
 * The upstream relay is untrusted for integrity, as this relay is for its
 * agents: everything it sends is verified by the caller's task (manifests
 * against the pinned coordinator key, objects against their BLAKE3 ids), and
 * a task that fails against it — connection refused or cut, no reply within
 * UPSTREAM_REPLY_TIMEOUT_MS, a refusal, bytes that fail verification — runs
 * again against the coordinator. As agents do with a relay, after
 * UPSTREAM_DROP_AFTER failures in a row it is not used for UPSTREAM_DROP_MS.
 */
import { openRelayDataClient } from '../protocol/connect.js';
import { verifyProof } from '../protocol/coordinator-proofs.js';
import type { DataClient } from '../protocol/data-client.js';
import type { Identity, KeyId } from '../protocol/identity.js';
import { upstreamOfferMessage, type UpstreamOffer } from '../protocol/relay-prefetch.js';
import { encodeRelayGrant, RELAY_GRANT_HEADER, type RelayEndpoint, type RelayGrant, type RelayUpstreamStatus } from '../protocol/relays.js';

/** How long the upstream relay may keep a request waiting for its reply header: as an agent allows a relay (it may be fetching a segment itself). */
export const UPSTREAM_REPLY_TIMEOUT_MS = 15_000;
/** Failures in a row after which the upstream relay is not used for UPSTREAM_DROP_MS (the coordinator serves meanwhile). */
export const UPSTREAM_DROP_AFTER = 3;
export const UPSTREAM_DROP_MS = 10 * 60 * 1000;

/** Which source a task ran against. */
export type FetchSourceKind = 'relay' | 'coordinator';

export interface FetchSourcesOptions {
  log?: (line: string) => void;
  /** Tests shorten it. */
  replyTimeoutMs?: number;
  /**
   * Called once per client opened to the upstream relay for a config,
   * before its first task: asks it for the config's manifest when this
   * relay holds one already (so the upstream relay knows the closure it
   * then serves objects of).
   */
  prime?: (client: DataClient, configId: string) => Promise<void>;
}

/** The upstream relay as the last verified offer named it, with its grants by config. */
interface Upstream {
  relay: RelayEndpoint;
  grants: Map<string, RelayGrant>;
  /** One client per config (each carries that config's grant, read at each request: renewed offers apply at once). */
  clients: Map<string, Promise<DataClient>>;
}

export class FetchSources {
  private upstream: Upstream | undefined;
  private consecutiveFailures = 0;
  private droppedUntil = 0;
  private failures = 0;
  private lastFailure: string | null = null;
  private tasksServed = 0;

  constructor(
    /** The relay's client to its coordinator (its own key). */
    readonly coordinator: DataClient,
    private readonly identity: Identity,
    private readonly coordinatorKey: KeyId,
    private readonly options: FetchSourcesOptions = {},
  ) {}

  /**
   * Takes what a prefetch answer says of the upstream relay (asked with
   * `challenge`): the offer when its proof verifies (for this relay and
   * that challenge) and its grants name this relay's key; no upstream when
   * the answer has none. An offer that does not verify leaves the relay on
   * the coordinator, and says why (false).
   */
  accept(offer: UpstreamOffer | undefined, challenge: string): boolean {
    if (offer === undefined) {
      this.setUpstream(undefined);
      return true;
    }
    const self = this.identity.keyId;
    if (!verifyProof(this.coordinatorKey, upstreamOfferMessage(self, challenge, offer), offer.proof) || offer.grants.some((grant) => grant.agentId !== self)) {
      this.options.log?.(`ferry relay: the upstream relay offer (${offer.relay.url}) is not signed by the coordinator for this relay: ignored, fetching from the coordinator`);
      this.setUpstream(undefined);
      return false;
    }
    this.setUpstream(offer.relay, offer.grants);
    return true;
  }

  private setUpstream(relay: RelayEndpoint | undefined, grants: readonly RelayGrant[] = []): void {
    const current = this.upstream;
    const same = current && relay && current.relay.id === relay.id && current.relay.url === relay.url && current.relay.fingerprint === relay.fingerprint;
    if (!same) {
      if (current) void this.closeClients(current);
      this.upstream = relay && { relay, grants: new Map(), clients: new Map() };
      this.consecutiveFailures = 0;
      this.droppedUntil = 0;
      if (relay) this.options.log?.(`ferry relay: fetching from the upstream relay ${relay.url} (${relay.id}) first`);
      else if (current) this.options.log?.('ferry relay: no upstream relay: fetching from the coordinator');
    }
    if (this.upstream) this.upstream.grants = new Map(grants.map((grant) => [grant.configId, grant]));
  }

  /**
   * Runs `task` against the upstream relay for `configId` when there is one
   * (not dropped, with an unexpired grant for that config), and against the
   * coordinator otherwise or when it fails there (counted, logged with
   * `what`). A failure against the coordinator is the caller's.
   */
  async through<T>(configId: string | undefined, what: string, task: (client: DataClient, from: FetchSourceKind) => Promise<T>): Promise<T> {
    const upstream = configId === undefined ? undefined : this.usable(configId);
    if (upstream && configId !== undefined) {
      try {
        const client = await this.clientFor(upstream, configId);
        const result = await task(client, 'relay');
        this.consecutiveFailures = 0;
        this.tasksServed++;
        return result;
      } catch (error) {
        this.failed(upstream, configId, what, error as Error);
      }
    }
    return task(this.coordinator, 'coordinator');
  }

  /** The upstream relay when it may be used for `configId` now. */
  private usable(configId: string): Upstream | undefined {
    const upstream = this.upstream;
    if (!upstream || Date.now() < this.droppedUntil) return undefined;
    const grant = upstream.grants.get(configId);
    return grant && grant.expiresAt > Date.now() ? upstream : undefined;
  }

  private clientFor(upstream: Upstream, configId: string): Promise<DataClient> {
    let client = upstream.clients.get(configId);
    if (!client) {
      client = (async () => {
        const opened = await openRelayDataClient(upstream.relay, this.identity, {
          retries: 1,
          replyTimeoutMs: this.options.replyTimeoutMs ?? UPSTREAM_REPLY_TIMEOUT_MS,
          // The grant of the latest verified offer (renewed with each prefetch answer), read at each request.
          headers: (): Record<string, string> => {
            const grant = upstream.grants.get(configId);
            return grant ? { [RELAY_GRANT_HEADER]: encodeRelayGrant(grant) } : {};
          },
          onNotice: (message) => this.options.log?.(`ferry relay: upstream relay ${upstream.relay.url}: ${message}`),
        });
        await this.options.prime?.(opened, configId);
        return opened;
      })();
      upstream.clients.set(configId, client);
      // A client that could not open (or prime) is opened again next time.
      client.catch(() => upstream.clients.delete(configId));
    }
    return client;
  }

  private failed(upstream: Upstream, configId: string, what: string, error: Error): void {
    this.failures++;
    this.consecutiveFailures++;
    this.lastFailure = `${what}: ${error.message}`.slice(0, 300);
    // Its session may be the broken part: the next task opens a new one.
    const client = upstream.clients.get(configId);
    upstream.clients.delete(configId);
    void client?.then((opened) => this.closeClient(opened), () => undefined);
    const dropped = this.consecutiveFailures >= UPSTREAM_DROP_AFTER;
    if (dropped) {
      this.droppedUntil = Date.now() + UPSTREAM_DROP_MS;
      this.consecutiveFailures = 0;
    }
    this.options.log?.(
      `ferry relay: the upstream relay ${upstream.relay.url} failed (${this.lastFailure}); fetching from the coordinator${dropped ? `, and not using it for ${UPSTREAM_DROP_MS / 60_000} min (${UPSTREAM_DROP_AFTER} failures in a row)` : ''}`,
    );
  }

  /** What `ferry relay status` says of where the relay fetches from. */
  status(): RelayUpstreamStatus {
    const upstream = this.upstream;
    const dropped = upstream !== undefined && Date.now() < this.droppedUntil;
    return {
      relay: upstream ? { id: upstream.relay.id, url: upstream.relay.url } : null,
      fetchingFrom: upstream && !dropped ? 'relay' : 'coordinator',
      grants: upstream?.grants.size ?? 0,
      droppedUntil: dropped ? this.droppedUntil : null,
      tasks: this.tasksServed,
      failures: this.failures,
      lastFailure: this.lastFailure,
    };
  }

  private async closeClient(client: DataClient): Promise<void> {
    await client.close().catch(() => undefined);
  }

  private async closeClients(upstream: Upstream): Promise<void> {
    const clients = [...upstream.clients.values()];
    upstream.clients.clear();
    await Promise.all(clients.map((client) => client.then((opened) => this.closeClient(opened), () => undefined)));
  }

  /** Closes the clients to the upstream relay (the coordinator's is its owner's). */
  async close(): Promise<void> {
    if (this.upstream) await this.closeClients(this.upstream);
  }
}
