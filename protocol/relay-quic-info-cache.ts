/**
 * An agent's memory of what each relay answered to "do you serve QUIC?"
 * (RELAY_QUIC_INFO_PATH, protocol/connect.ts openRelayDataClient): asked
 * before every fetch, the answer costs a TLS handshake and a round trip to
 * the relay each deployment, for an answer that changes when the relay is
 * restarted with other flags. So the verified answer (the port, and the
 * certificate checked against the pinned fingerprint; or "no QUIC") is
 * kept for RELAY_QUIC_INFO_TTL_MS per relay id and fingerprint: a relay
 * that changes its certificate is a new key, asked again. A cached answer
 * whose QUIC does not connect is dropped (`drop`), so the next fetch asks
 * again rather than trying a stale port for ten minutes.
 */
import type { RelayEndpoint, RelayQuicInfo } from './relays.js';

/** How long a relay's answer is trusted without asking again. */
export const RELAY_QUIC_INFO_TTL_MS = 10 * 60_000;

/** Relays remembered at most (an agent is given a few; the oldest answer goes first). */
export const MAX_CACHED_RELAYS = 64;

/** A relay's answer as remembered: its QUIC port and certificate (checked), or null when it serves HTTPS only. */
export type CachedRelayQuic = RelayQuicInfo | null;

export class RelayQuicInfoCache {
  private readonly entries = new Map<string, { answer: CachedRelayQuic; until: number }>();

  constructor(
    private readonly ttlMs = RELAY_QUIC_INFO_TTL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** The answer `relay` gave within the TTL (null: HTTPS only), or undefined when it must be asked. */
  get(relay: Pick<RelayEndpoint, 'id' | 'fingerprint'>): CachedRelayQuic | undefined {
    const key = keyOf(relay);
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.until > this.now()) return entry.answer;
    this.entries.delete(key);
    return undefined;
  }

  /** Remembers `answer` of `relay`: its certificate must have been checked against `relay.fingerprint` already. */
  set(relay: Pick<RelayEndpoint, 'id' | 'fingerprint'>, answer: CachedRelayQuic): void {
    const key = keyOf(relay);
    this.entries.delete(key);
    if (this.entries.size >= MAX_CACHED_RELAYS) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { answer, until: this.now() + this.ttlMs });
  }

  /** Forgets what `relay` answered (its QUIC did not connect): the next fetch asks again. */
  drop(relay: Pick<RelayEndpoint, 'id' | 'fingerprint'>): void {
    this.entries.delete(keyOf(relay));
  }
}

const keyOf = (relay: Pick<RelayEndpoint, 'id' | 'fingerprint'>) => `${relay.id}\n${relay.fingerprint}`;
