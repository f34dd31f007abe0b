/**
 * relay: a site relay (docs/relays.md). Fetches each object of the
 * closures its agents are granted once from the coordinator, verified, and
 * serves the site's agents over the same data-plane protocol; it imports
 * protocol/ and castore/ only, never coordinator/ or agent/.
 */
export { enrollRelay, type EnrollRelayOptions } from './enroll.js';
export { RelayServer, type RelayServerOptions } from './relay-server.js';
export { RelayCache, type ClosureIndex, type RelayCounters } from './relay-cache.js';
export { readRelayState, relayPaths, DEFAULT_RELAY_CACHE_BYTES, type RelayState } from './relay-state.js';
