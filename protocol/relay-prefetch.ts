/**
 * A relay's prefetch watch (`GET /v1/relay/prefetch`, docs/relays.md
 * "Prefetch"): the relay asks which closures its agents are to run, and
 * the coordinator holds the request until that set differs from the one
 * the relay knows (`known`, the digest of the last answer) or `wait`
 * seconds pass, as an agent's watch (config.ts WatchQuerySchema). The relay
 * then fetches those closures into its cache before any agent asks.
 *
 * The answer is not signed and need not be: it names configs, and what a
 * relay may read is decided again by the coordinator's data plane on every
 * request (the desired configs of the agents the relay serves, from its
 * own state), so a forged answer can make a relay ask for what it will be
 * refused, never read more. Every manifest it fetches is signed.
 *
 * Example: `GET /v1/relay/prefetch?known=none&wait=240` →
 * `{"digest":"…","configs":[{"configId":"…","system":"x86_64-linux"}],"truncated":false}`.
 *
 * **Upstream relay.** A relay the coordinator set to fetch from another
 * relay (`relays upstream R2 R1`) is told of it here: `upstream` names R1
 * ({id, url, fingerprint}) and carries a grant per config R2 may read
 * (the grants agents get, `ferry-relay-grant-v1\n<R2's key>\n<config>\n
 * <expiresAt>`, at most MAX_RELAY_PREFETCH_CONFIGS), under the
 * coordinator's proof of `ferry-relay-upstream-v1\n<R2's key>\n<challenge>
 * \n<sha256 of the canonical JSON of {relay, grants}>`, bound to the relay
 * and the challenge of its query as an agent's relay offer is
 * (relays.ts). R1 checks R2's grants exactly as an agent's: signed by the
 * coordinator, naming the key that signed the request. The digest covers
 * the upstream relay (not the grants, renewed at each answer), so setting
 * or changing it answers a held watch at once.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { ConfigIdSchema, MAX_WATCH_SECONDS, SystemSchema } from './config.js';
import { RelayEndpointSchema, RelayGrantSchema, type RelayEndpoint } from './relays.js';

/**
 * Configs (with a system) one answer names at most: a site's agents run a
 * few; past this many, the first by id are named and `truncated` says so
 * (agents of the others fetch through the relay as before: on demand).
 */
export const MAX_RELAY_PREFETCH_CONFIGS = 256;

/** A digest of a prefetch set (64 hex): what the relay says it knows. */
export const PrefetchDigestSchema = z.string().regex(/^[0-9a-f]{64}$/, 'a prefetch digest (64 lowercase hex digits)');

export const RelayPrefetchQuerySchema = z.strictObject({
  known: z.union([PrefetchDigestSchema, z.literal('none')]).default('none'),
  /** Fresh random hex from the relay: the upstream offer's proof is bound to it (a replayed answer does not verify). */
  challenge: z.string().regex(/^[0-9a-f]{32,128}$/, 'a challenge (32 to 128 lowercase hex digits)').optional(),
  wait: z.coerce
    .number()
    .int()
    .min(0)
    .default(25)
    .transform((seconds) => Math.min(seconds, MAX_WATCH_SECONDS)),
});

/** One closure to prefetch: a config, for the system an agent of the relay runs. */
export const PrefetchTargetSchema = z.strictObject({ configId: ConfigIdSchema, system: SystemSchema });
export type PrefetchTarget = z.infer<typeof PrefetchTargetSchema>;

/** The relay a relay fetches from before the coordinator, its grants there, and the coordinator's proof over both. */
export const UpstreamOfferSchema = z.strictObject({
  relay: RelayEndpointSchema,
  /** One per config the relay may read (sorted by config id), each naming the relay's own key. */
  grants: z.array(RelayGrantSchema).max(MAX_RELAY_PREFETCH_CONFIGS),
  /** The coordinator's signature of upstreamOfferMessage. */
  proof: z.string().max(128),
});
export type UpstreamOffer = z.infer<typeof UpstreamOfferSchema>;

export const RelayPrefetchAnswerSchema = z.strictObject({
  /** relayPrefetchDigest of `configs` (and the upstream relay): the relay's `known` next time. */
  digest: PrefetchDigestSchema,
  /** Sorted by config id, then system. */
  configs: z.array(PrefetchTargetSchema).max(MAX_RELAY_PREFETCH_CONFIGS),
  truncated: z.boolean(),
  /** Absent: the relay fetches from the coordinator only. */
  upstream: UpstreamOfferSchema.optional(),
});
export type RelayPrefetchAnswer = z.infer<typeof RelayPrefetchAnswerSchema>;

/**
 * The digest of a prefetch set (sorted as the answer sorts it) and of the
 * upstream relay: the SHA-256 of its canonical JSON (of the configs alone
 * when there is no upstream, as before upstream relays).
 */
export function relayPrefetchDigest(configs: readonly PrefetchTarget[], upstream?: RelayEndpoint): string {
  return createHash('sha256')
    .update(canonicalJson(upstream ? { configs, upstream } : configs))
    .digest('hex');
}

/** What an upstream offer's proof signs: the relay it is for, its query's challenge, and the digest of the upstream relay and grants. */
export function upstreamOfferMessage(relayId: string, challenge: string, offer: { relay: unknown; grants: unknown }): Uint8Array {
  const digest = createHash('sha256').update(canonicalJson({ relay: offer.relay, grants: offer.grants })).digest('hex');
  return new TextEncoder().encode(`ferry-relay-upstream-v1\n${relayId}\n${challenge}\n${digest}`);
}
