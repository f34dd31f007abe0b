/**
 * The HTTP API's secrets routes, their inputs and outputs (docs/secrets.md).
 * Only ciphertext ever travels here: the CLI encrypts on the admin's
 * machine (`ferry secrets set`) and decrypts there (`ferry secrets rekey`).
 */
import { z } from 'zod';
import { KeyIdSchema } from '../identity.js';
import { MAX_ALERT_WHERE, MAX_ALERT_WHERE_LENGTH } from '../alerts.js';
import { CiphertextSchema, MAX_SECRET_RECIPIENTS, SecretNameSchema } from '../secret-refs.js';

/** How a secret's agents were chosen: `--where` clauses (rekey resolves them again) or a fixed list (`--agents`). */
export const SecretSelectorSchema = z.union([
  z.strictObject({ where: z.array(z.string().max(MAX_ALERT_WHERE_LENGTH)).min(1).max(MAX_ALERT_WHERE) }),
  z.strictObject({ agents: z.array(KeyIdSchema).min(1).max(MAX_SECRET_RECIPIENTS) }),
]);
export type SecretSelector = z.infer<typeof SecretSelectorSchema>;

/**
 * A new version of a secret: its ciphertext (base64 age file), the agents
 * it is encrypted to (the setter's own key is a recipient too, and is the
 * request's signer: not listed), and how they were selected. The
 * coordinator cannot check what the ciphertext is encrypted to; it checks
 * that each agent exists and is enrolled, and records what the admin said.
 */
export const SetSecretInput = z.strictObject({
  name: SecretNameSchema,
  ciphertext: CiphertextSchema.min(1),
  recipients: z
    .array(KeyIdSchema)
    .max(MAX_SECRET_RECIPIENTS - 1)
    .refine((ids) => new Set(ids).size === ids.length, 'an agent is listed twice'),
  selector: SecretSelectorSchema,
});

export const SecretRefInput = z.strictObject({ name: SecretNameSchema });

/** A secret as `ferry secrets ls` shows it: metadata only. */
export const SecretViewSchema = z.strictObject({
  name: SecretNameSchema,
  version: z.number().int().min(1),
  recipients: z.array(KeyIdSchema),
  setter: KeyIdSchema,
  selector: SecretSelectorSchema,
  ciphertextSha256: z.string(),
  ciphertextBytes: z.number().int(),
  updatedSeq: z.number().int(),
  /** Enrolled agents the selector matches now that are not recipients: `ferry secrets rekey` adds them. */
  needsRekey: z.array(KeyIdSchema),
  /** Recipients revoked (or rejected) since: the next rekey drops them (they may still hold what they had). */
  revokedRecipients: z.array(KeyIdSchema),
});

/** One secret with its latest ciphertext (base64; null: the coordinator lacks it, e.g. a database rebuilt from an export). */
export const SecretDetailSchema = SecretViewSchema.extend({ ciphertext: CiphertextSchema.nullable() });

export const SecretSetSchema = z.strictObject({ name: SecretNameSchema, version: z.number().int().min(1), seq: z.number().int() });
