/**
 * Configs on the wire: what an author signs (ConfigBodySchema; its id is
 * the BLAKE3 of its canonical JSON) and what an agent receives and runs
 * (AgentConfigSchema: the body with its id, from the desired answer or a
 * bundle). One schema for the coordinator, which records configs, and for
 * the agent, which re-validates what it receives even though the
 * coordinator signed it.
 *
 * The recorded schema checks activation environment keys only as variable
 * names: it also validates the audit log on replay, and a log recorded
 * before a key was refused must still replay. What a submission may set
 * and what an agent runs is checked further (activation-environment.ts).
 */
import { z } from 'zod';
import { HlcStringSchema } from './hlc.js';
import { KeyIdSchema } from './identity.js';
import { StorePathSchema } from './store-path-info.js';
import { DesiredChallengeSchema, DirectivesSchema } from './coordinator-proofs.js';
import { RelayOfferSchema } from './relays.js';
import { DesiredParamsSchema, ParamsStampSchema } from './params.js';
import { DeliveredSecretSchema, MAX_CONFIG_SECRETS, SecretRefsSchema, SecretsStampSchema } from './secret-refs.js';

export const SystemSchema = z.string().regex(/^[a-z0-9_]+-[a-z0-9]+$/, "a Nix system such as 'x86_64-linux'");
declare const configIdBrand: unique symbol;
/** A config's id: lowercase hex of the BLAKE3 of its body's canonical JSON. Only ConfigIdSchema (and configId) make one. */
export type ConfigId = string & { readonly [configIdBrand]: true };
export const ConfigIdSchema = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'a config id (64 hex characters)')
  .transform((value) => value as ConfigId);
/** `value` as a ConfigId; refuses (TypeError, quoting it) anything but 64 lowercase hex characters. */
export function asConfigId(value: string): ConfigId {
  const parsed = ConfigIdSchema.safeParse(value);
  if (!parsed.success) throw new TypeError(`${JSON.stringify(String(value).slice(0, 100))} is not a config id (64 lowercase hex characters)`);
  return parsed.data;
}

export const GraphNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'graph names are 1-63 of [a-z0-9._-]');

export const ActivationSchema = z.strictObject({
  command: z.string().min(1).max(1024),
  environment: z.record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/), z.string().max(4096)).default({}),
  timeoutSeconds: z.number().int().min(1).max(3600).default(300),
});
/**
 * A config's health check. At activation it runs until it passes, with
 * `retries`; a failure rolls back. With `intervalSeconds` it also runs
 * periodically while the config's generation is active: `unhealthyAfter`
 * failures in a row (default DEFAULT_UNHEALTHY_AFTER) make the agent
 * report `degraded`, a pass `healthy` again, and within `probationSeconds`
 * of activation `degraded` rolls back instead (docs/agent.md, "Continuous
 * health"). The periodic fields are optional and have no defaults here, so
 * configs signed before they existed keep their ids.
 */
export const HealthCheckSchema = z
  .strictObject({
    command: z.string().min(1).max(1024),
    timeoutSeconds: z.number().int().min(1).max(3600).default(60),
    retries: z.number().int().min(0).max(100).default(3),
    intervalSeconds: z.number().int().min(1).max(86_400).optional(),
    unhealthyAfter: z.number().int().min(1).max(100).optional(),
    probationSeconds: z.number().int().min(0).max(7 * 86_400).optional(),
  })
  .refine((check) => check.intervalSeconds !== undefined || (check.unhealthyAfter === undefined && check.probationSeconds === undefined), {
    message: 'unhealthyAfter and probationSeconds need intervalSeconds (a periodic check)',
  });
export type HealthCheck = z.infer<typeof HealthCheckSchema>;
/** Failures in a row of a periodic check before the agent reports degraded, when the config does not say. */
export const DEFAULT_UNHEALTHY_AFTER = 3;

/** What an author signs; the config id is the BLAKE3 of its canonical JSON. */
export const ConfigBodySchema = z.strictObject({
  graph: GraphNameSchema,
  parents: z.array(ConfigIdSchema).max(16),
  targets: z.record(SystemSchema, StorePathSchema).refine((t) => Object.keys(t).length > 0, 'at least one target'),
  activation: ActivationSchema,
  health: HealthCheckSchema.nullable(),
  message: z.string().max(4096),
  author: KeyIdSchema,
  hlc: HlcStringSchema,
  /**
   * Run (relative to the target, like the activation, with its environment
   * and timeout) when the agent is told to stop (`agents assign … --none
   * --stop`), before it leaves no generation active. Optional and without a
   * default, so configs signed before it existed keep their ids.
   */
  deactivate: z.string().min(1).max(1024).optional(),
  /**
   * Secrets the config's commands read (`--secret NAME[:PATH][:MODE][:OWNER]`,
   * docs/secrets.md): names, never values. Optional with no default, so
   * configs signed before secrets existed keep their ids.
   */
  secrets: SecretRefsSchema.optional(),
});
export type ConfigBody = z.infer<typeof ConfigBodySchema>;

/**
 * The bytes a config's author signs: its id (the BLAKE3 of the body's
 * canonical JSON, castore/config-id.ts), under a domain-separating prefix.
 */
export function configSigningMessage(id: string): Uint8Array {
  return new TextEncoder().encode(`ferry-config-v1\n${id}`);
}

/**
 * A config as agents receive it: its id, its body and its author's
 * signature (base64 ed25519 over "ferry-config-v1\n" + id, as recorded).
 * Structure and bounds only: the agent refuses a refused environment key
 * when it deploys (reporting the config failed), and a bundle refuses it
 * and checks that the id is the hash of the body before anything is
 * written; the desired answer is bound to its id by the coordinator's
 * signature.
 */
export const AgentConfigSchema = ConfigBodySchema.extend({
  id: ConfigIdSchema,
  signature: z.string().max(128).optional(),
});
export type AgentConfig = z.infer<typeof AgentConfigSchema>;

/**
 * The coordinator's answer to an agent's `GET /v1/agent/desired`: the
 * config it should run (none: keep what runs), signed over the agent's
 * id and challenge (coordinator-proofs.ts). The agent checks the proof on
 * the answer as received, then parses it with this. `relays`: the site
 * relays the coordinator assigned to this agent and its grant for the
 * config (relays.ts; absent when none is), under a proof of its own, so
 * agents from before relays verify the rest as they always did.
 */
export const DesiredAnswerSchema = z
  .object({
    configId: ConfigIdSchema.nullable(),
    config: AgentConfigSchema.nullable(),
    proof: z.string().max(128),
    relays: RelayOfferSchema.optional(),
    /** Retry and stop (coordinator-proofs.ts DirectivesSchema), under a proof of their own; absent when neither applies. */
    directives: DirectivesSchema.optional(),
    /**
     * Each secret the config references (in its order): its latest
     * version's ciphertext when this agent is a recipient (secret-refs.ts
     * DeliveredSecretSchema). Present only when the config references
     * secrets; covered by `proof` then.
     */
    secrets: z.array(DeliveredSecretSchema).max(MAX_CONFIG_SECRETS).optional(),
    /**
     * This agent's effective per-machine parameters (params.ts; key →
     * value), exposed to its commands as environment variables. Present
     * only when it has a config and any parameter; covered by `proof` then.
     */
    params: DesiredParamsSchema.optional(),
  })
  .refine((answer) => (answer.config?.id ?? null) === answer.configId, 'the answer names one config id and carries another');
export type DesiredAnswer = z.infer<typeof DesiredAnswerSchema>;

/**
 * The longest an agent's watch (`GET /v1/agent/watch`) is held before it
 * is answered unchanged; a longer `wait` is shortened to it. Each watch
 * answered costs the coordinator a verified request, so a fleet's idle
 * cost is its size over the watch length (10,000 agents at 240 s: ~42 a
 * second; bench/README.md, "Capacity"). Under the 300 s that HTTP clients
 * wait for a reply (undici's headersTimeout, the pinned client's idle
 * timeout).
 */
export const MAX_WATCH_SECONDS = 240;

/**
 * How long an agent's watch is held by default (`ferry agent run --poll`):
 * the longest the coordinator allows. A change reaches the agent at once
 * whatever the length (the watch is woken), so the length only sets the
 * fleet's idle cost (each watch answered is a verified request) and how
 * soon an agent notices a connection that died silently (TCP keepalives
 * keep NAT mappings of a held one open meanwhile).
 */
export const DEFAULT_WATCH_SECONDS = MAX_WATCH_SECONDS;

/**
 * `GET /v1/agent/watch`: answered once the desired config differs from
 * `known` ("none": no config), or its secrets from `secrets`, or its parameters from `params`, with the same signed answer as
 * `/v1/agent/desired` (for `challenge`), or after `wait` seconds with
 * WatchUnchangedSchema.
 */
export const WatchQuerySchema = z.strictObject({
  known: z.union([ConfigIdSchema, z.literal('none')]).default('none'),
  wait: z.coerce
    .number()
    .int()
    .min(0)
    .default(25)
    .transform((seconds) => Math.min(seconds, MAX_WATCH_SECONDS)),
  challenge: DesiredChallengeSchema.optional(),
  /**
   * The last retry (its audit seq) the agent took up: the watch also
   * answers once the coordinator holds a later one (`agents retry`), though
   * the desired config did not change. Absent (agents from before retries):
   * only the config counts.
   */
  retry: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  /** Whether the answer the agent holds tells it to stop ('1') or not ('0'): the watch also answers when that changes. Absent: only the config counts. */
  stop: z.enum(['0', '1']).optional(),
  /** The secretsStamp of the answer the agent runs (secret-refs.ts): answered also once the agent's secrets differ (a rotation). Absent: only the config counts. */
  secrets: SecretsStampSchema.optional(),
  /** The paramsStamp of the parameters the agent runs with (params.ts; of none too): answered also once its effective parameters differ. Absent: only the config counts. */
  params: ParamsStampSchema.optional(),
});

/**
 * A watch's answer when the desired config is still `known` at its
 * deadline. Unsigned, and it need not be: it changes nothing (the agent
 * goes on with the answer it verified last), so a forged one can only
 * delay an agent, as dropping the reply could. Signing it cost the
 * coordinator a signature per quiet watch, and the agent a verification.
 */
export const WatchUnchangedSchema = z.strictObject({ unchanged: z.literal(true), configId: ConfigIdSchema.nullable() });
export type WatchUnchanged = z.infer<typeof WatchUnchangedSchema>;
