/**
 * Site relays on the wire (docs/relays.md): what the coordinator tells an
 * agent about its relays, and the grant the agent shows a relay.
 *
 * - A **grant** is the coordinator's signature over
 *   `ferry-relay-grant-v1\n<agentId>\n<configId>\n<expiresAt>`: this agent
 *   may read this config's closure until then. A relay checks it against
 *   the coordinator key it pinned at enrollment, together with the agent's
 *   own request signature (the grant names the key that must have signed),
 *   so a grant copied off the wire is worth nothing to anyone else.
 * - A **relay offer** rides on the desired-config answer (`relays`): the
 *   relays assigned to this agent, the grant for its desired config, and
 *   the coordinator's proof over both, bound to the agent and the answer's
 *   challenge like the answer's own proof. It is a field of its own with a
 *   proof of its own, so agents from before relays (which strip unknown
 *   fields) verify the answer as they always did.
 *
 * Relays are untrusted for integrity: every object an agent gets from one
 * is verified against its BLAKE3 id exactly as from the coordinator.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { verifyProof } from './coordinator-proofs.js';
import { KeyIdSchema, type KeyId } from './identity.js';

/** How long a grant is good for: longer than a deploy, shorter than a key would need to be revoked by. The watch hands out fresh ones. */
export const RELAY_GRANT_TTL_MS = 60 * 60 * 1000;
/** Relays named to one agent at most (it tries the first; more is for later sessions). */
export const MAX_RELAYS_PER_AGENT = 4;
/**
 * Relays in one chain at most, from the one agents use to the one that
 * fetches from the coordinator (a site, a depot, a region, one more):
 * each hop is a fetch-through, and a deeper chain adds latency and a
 * reach computed through every level.
 */
export const MAX_RELAY_CHAIN = 4;
/** The HTTP header an agent's data requests to a relay carry their grant in (base64url of its JSON). */
export const RELAY_GRANT_HEADER = 'x-ferry-relay-grant';

/** Where a relay that serves QUIC says so over HTTPS (RelayQuicInfoSchema); 404 when it does not. */
export const RELAY_QUIC_INFO_PATH = '/v1/quic';

/**
 * What a relay's RELAY_QUIC_INFO_PATH answers: the UDP port of its QUIC
 * listener and its certificate (which the agent checks against the
 * fingerprint the coordinator gave before trusting it for QUIC).
 */
export const RelayQuicInfoSchema = z.strictObject({ port: z.number().int().min(1).max(65535), certificatePem: z.string().max(8192) });
export type RelayQuicInfo = z.infer<typeof RelayQuicInfoSchema>;

/** Bytes of the headers frame that starts each QUIC stream to a relay, at most. */
export const MAX_RELAY_HEADERS_FRAME_BYTES = 8 * 1024;

/**
 * The frame that starts each QUIC stream to a relay (ALPN RELAY_ALPN): the
 * headers the same request carries over HTTPS (the request signature, the
 * grant), so the relay checks both transports' requests in one place.
 * Bounded: 16 headers, names and values of HTTP-like size.
 */
export const RelayRequestHeadersSchema = z.strictObject({
  headers: z
    .record(z.string().regex(/^[a-z0-9-]{1,64}$/, 'a lowercase header name'), z.string().max(4096))
    .refine((headers) => Object.keys(headers).length <= 16, 'at most 16 headers'),
});

/** A relay's address as the agent reaches it: an https URL, no path, query or credentials. */
export const RelayUrlSchema = z
  .string()
  .max(512)
  .refine((text) => {
    try {
      const url = new URL(text);
      return url.protocol === 'https:' && !url.username && !url.password && (url.pathname === '/' || url.pathname === '') && !url.search && !url.hash;
    } catch {
      return false;
    }
  }, 'a relay URL is https://host:port, without path, query or credentials');

export const FingerprintSchema = z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 certificate fingerprint (64 lowercase hex digits)');

/** One relay as an agent is told of it: its key, where it listens, its certificate's fingerprint to pin. */
export const RelayEndpointSchema = z.strictObject({ id: KeyIdSchema, url: RelayUrlSchema, fingerprint: FingerprintSchema });
export type RelayEndpoint = z.infer<typeof RelayEndpointSchema>;

export const RelayGrantSchema = z.strictObject({
  agentId: KeyIdSchema,
  /** A config id (as config.ts ConfigIdSchema, which is not imported: config.ts imports this file for the desired answer). */
  configId: z.string().regex(/^[0-9a-f]{64}$/, 'a config id (64 hex characters)'),
  /** ms since the epoch, on the coordinator's clock. */
  expiresAt: z.number().int().nonnegative(),
  /** The coordinator's signature of relayGrantMessage (base64 ed25519). */
  proof: z.string().max(128),
});
export type RelayGrant = z.infer<typeof RelayGrantSchema>;

export const RelayOfferSchema = z.strictObject({
  relays: z.array(RelayEndpointSchema).min(1).max(MAX_RELAYS_PER_AGENT),
  grant: RelayGrantSchema,
  /** The coordinator's signature of relayOfferMessage for the agent and the answer's challenge. */
  proof: z.string().max(128),
});
export type RelayOffer = z.infer<typeof RelayOfferSchema>;

/** What a grant signs. */
export function relayGrantMessage(agentId: string, configId: string, expiresAt: number): Uint8Array {
  return new TextEncoder().encode(`ferry-relay-grant-v1\n${agentId}\n${configId}\n${expiresAt}`);
}

/** What an offer's proof signs: the agent, the answer's challenge, and the digest of its relays and grant. */
export function relayOfferMessage(agentId: string, challenge: string, offer: { relays: unknown; grant: unknown }): Uint8Array {
  const digest = createHash('sha256').update(canonicalJson({ relays: offer.relays, grant: offer.grant })).digest('hex');
  return new TextEncoder().encode(`ferry-relays-v1\n${agentId}\n${challenge}\n${digest}`);
}

/**
 * Why `grant` does not let `agentId` read `configId` now (a sentence), or
 * undefined when it does: it must be signed by `coordinatorKey`, name that
 * agent and config, and not have expired.
 */
export function relayGrantProblem(coordinatorKey: KeyId, grant: RelayGrant, agentId: string, configId: string | undefined, now = Date.now()): string | undefined {
  if (grant.agentId !== agentId) return 'the grant is for another agent';
  if (configId !== undefined && grant.configId !== configId) return `the grant is for config ${grant.configId}, not ${configId}`;
  if (grant.expiresAt <= now) return 'the grant expired';
  if (!verifyProof(coordinatorKey, relayGrantMessage(grant.agentId, grant.configId, grant.expiresAt), grant.proof)) return 'the grant is not signed by the coordinator';
  return undefined;
}

/** A grant as the RELAY_GRANT_HEADER value. */
export function encodeRelayGrant(grant: RelayGrant): string {
  return Buffer.from(JSON.stringify(grant)).toString('base64url');
}

/** The grant a RELAY_GRANT_HEADER carries; undefined for anything that is not one (bounded: 2 KiB). */
export function decodeRelayGrant(header: string | undefined): RelayGrant | undefined {
  if (header === undefined || header.length > 2048 || !/^[A-Za-z0-9_-]+$/.test(header)) return undefined;
  try {
    const parsed = RelayGrantSchema.safeParse(JSON.parse(Buffer.from(header, 'base64url').toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** A closure as the relay's status names it: `<configId>.<system>`. */
const ClosureKeySchema = z.string().max(200);

/** The prefetch's part of the relay's status (relay/relay-prefetch.ts). */
export const RelayPrefetchStatusSchema = z.strictObject({
  /** Closures the coordinator's last prefetch answer named, and whether it named only the first of more. */
  wanted: z.number().int().nonnegative(),
  truncated: z.boolean(),
  /** Those fetched whole into the cache (as of their prefetch: eviction may have removed some since). */
  ready: z.array(ClosureKeySchema),
  /** The one being fetched, and its progress in blobs. */
  current: z.strictObject({ closure: ClosureKeySchema, objectsDone: z.number().int().nonnegative(), objectsTotal: z.number().int().nonnegative() }).nullable(),
  /** Not prefetched: the closures before them fill the cache's limit. */
  skipped: z.array(ClosureKeySchema),
  failed: z.array(z.strictObject({ closure: ClosureKeySchema, error: z.string().max(300) })),
  /**
   * Closures prefetched since the relay started, objects fetched from the
   * coordinator for it (by itself, or by the closure copy it started or
   * waited for) and found cached already, and the bytes fetched for it.
   */
  prefetches: z.number().int().nonnegative(),
  objectsFetched: z.number().int().nonnegative(),
  objectsCached: z.number().int().nonnegative(),
  bytesFetched: z.number().int().nonnegative(),
});
export type RelayPrefetchStatus = z.infer<typeof RelayPrefetchStatusSchema>;

/** Where the relay fetches from (relay/fetch-sources.ts): its upstream relay, or the coordinator. */
export const RelayUpstreamStatusSchema = z.strictObject({
  /** The upstream relay the coordinator named (null: none, the coordinator only). */
  relay: z.strictObject({ id: KeyIdSchema, url: z.string() }).nullable(),
  /** Where the next fetch goes: the coordinator when there is no upstream relay, or it is dropped after failures. */
  fetchingFrom: z.enum(['relay', 'coordinator']),
  /** Configs it holds a grant for at the upstream relay. */
  grants: z.number().int().nonnegative(),
  /** Until when (ms since the epoch) the upstream relay is not used, after failures in a row. */
  droppedUntil: z.number().int().nullable(),
  /** Fetches the upstream relay answered, and those it failed (each then went to the coordinator), and the last failure. */
  tasks: z.number().int().nonnegative(),
  failures: z.number().int().nonnegative(),
  lastFailure: z.string().max(300).nullable(),
});
export type RelayUpstreamStatus = z.infer<typeof RelayUpstreamStatusSchema>;

/** What `ferry relay status --json` prints (relay/relay-server.ts counts it). */
export const RelayStatusSchema = z.strictObject({
  relayId: KeyIdSchema,
  coordinator: z.string(),
  listening: z.string().nullable(),
  /** Where it listens for QUIC (UDP), null with --no-quic; absent from a relay from before QUIC. */
  quicListening: z.string().nullable().optional(),
  /** Requests answered (refusals included) by transport; absent from a relay from before QUIC. */
  requests: z.strictObject({ https: z.number().int().nonnegative(), quic: z.number().int().nonnegative() }).optional(),
  cache: z.strictObject({ bytes: z.number().int().nonnegative(), limitBytes: z.number().int().nonnegative(), blobs: z.number().int().nonnegative(), evictions: z.number().int().nonnegative() }),
  /** Objects (blobs and directories) served from the cache, and those fetched from the coordinator first. */
  hits: z.number().int().nonnegative(),
  misses: z.number().int().nonnegative(),
  /** Blob bytes served to agents (and downstream relays), and fetched upstream (the coordinator, or the upstream relay). */
  bytesServed: z.number().int().nonnegative(),
  bytesFetched: z.number().int().nonnegative(),
  /** Requests refused (no or a bad grant, an object outside the granted closure, an operation a relay does not serve). */
  refused: z.number().int().nonnegative(),
  agentsServed: z.number().int().nonnegative(),
  /** Absent from a status written by a relay from before prefetch. */
  prefetch: RelayPrefetchStatusSchema.optional(),
  /**
   * Upstream streams kept to serve agents as they are (relay/stream-recordings.ts): recordings
   * completed, their bytes on disk, replies served from them and their wire bytes. Absent from a
   * relay from before them.
   */
  streams: z
    .strictObject({
      recorded: z.number().int().nonnegative(),
      bytes: z.number().int().nonnegative(),
      served: z.number().int().nonnegative(),
      servedWireBytes: z.number().int().nonnegative(),
    })
    .optional(),
  /** Where it fetches from; absent from a relay from before upstream relays. */
  upstream: RelayUpstreamStatusSchema.optional(),
});
export type RelayStatus = z.infer<typeof RelayStatusSchema>;
