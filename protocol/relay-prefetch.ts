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
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { ConfigIdSchema, MAX_WATCH_SECONDS, SystemSchema } from './config.js';

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

export const RelayPrefetchAnswerSchema = z.strictObject({
  /** relayPrefetchDigest of `configs`: the relay's `known` next time. */
  digest: PrefetchDigestSchema,
  /** Sorted by config id, then system. */
  configs: z.array(PrefetchTargetSchema).max(MAX_RELAY_PREFETCH_CONFIGS),
  truncated: z.boolean(),
});
export type RelayPrefetchAnswer = z.infer<typeof RelayPrefetchAnswerSchema>;

/** The digest of a prefetch set (sorted as the answer sorts it): the SHA-256 of its canonical JSON. */
export function relayPrefetchDigest(configs: readonly PrefetchTarget[]): string {
  return createHash('sha256').update(canonicalJson(configs)).digest('hex');
}
