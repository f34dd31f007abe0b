/**
 * Secrets on the wire and in configs (docs/secrets.md): names, the
 * references a config makes (path, mode, owner, each validated so it can
 * name no place outside the secrets dir), the ciphertexts the desired
 * answer delivers, and the bounds. No cryptography here (protocol/secrets.ts
 * has it), so what loads configs does not load age.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { environmentKeyRefusal } from './activation-environment.js';

/** The largest secret value, in bytes. */
export const MAX_SECRET_BYTES = 64 * 1024;
/** The most recipients one ciphertext may have (agents and the setter). */
export const MAX_SECRET_RECIPIENTS = 1000;
/**
 * The largest ciphertext: a full value (age adds 16 bytes per 64 KiB
 * chunk) and MAX_SECRET_RECIPIENTS X25519 stanzas (~100 bytes each) fit
 * well under it.
 */
export const MAX_SECRET_CIPHERTEXT_BYTES = 256 * 1024;
/** The most secrets one config may reference. */
export const MAX_CONFIG_SECRETS = 64;

export const SecretNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,128}$/, 'a secret name is 1-128 of [A-Za-z0-9_.-]')
  .refine((name) => name !== '.' && name !== '..', 'a secret name is not . or ..');

/**
 * Where a secret's file goes, relative to the generation's secrets dir:
 * segments of [A-Za-z0-9_.@+-] separated by `/`, none `.` or `..`, no
 * leading `/`, at most 255 characters. It can name no place outside.
 */
export const SecretPathSchema = z
  .string()
  .max(255)
  .regex(/^[A-Za-z0-9_.@+-]+(\/[A-Za-z0-9_.@+-]+)*$/, 'a secret path is relative: segments of [A-Za-z0-9_.@+-] separated by /')
  .refine((value) => value.split('/').every((segment) => segment !== '.' && segment !== '..'), 'a secret path has no . or .. segment');

/** A file mode for a secret: three octal digits, optionally after a 0 (no setuid, setgid or sticky bits). */
export const SecretModeSchema = z.string().regex(/^0?[0-7]{3}$/, 'a mode is three octal digits, e.g. 0400 or 440');

/** Who owns a secret's file (when the agent runs as root): a user name or a numeric uid. */
export const SecretOwnerSchema = z.string().regex(/^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$/, 'an owner is a user name or a numeric uid');

/** The default mode of a secret's file. */
export const DEFAULT_SECRET_MODE = '0400';

/**
 * A config's reference to a secret (`config submit --secret
 * NAME[:PATH][:MODE][:OWNER]`): path defaults to the name, mode to
 * DEFAULT_SECRET_MODE, owner to the agent's own user.
 */
export const SecretRefSchema = z.strictObject({
  name: SecretNameSchema,
  path: SecretPathSchema.optional(),
  mode: SecretModeSchema.optional(),
  owner: SecretOwnerSchema.optional(),
  /**
   * Also expose the decrypted value as this environment variable of the
   * config's commands (`config submit --env-secret K=V`, docs/secrets.md):
   * a name an activation environment may carry (no FERRY_*, PATH, LD_*…).
   */
  env: z
    .string()
    .regex(/^[A-Z_][A-Z0-9_]{0,63}$/, 'an env name is [A-Z_][A-Z0-9_]{0,63}')
    .superRefine((key, context) => {
      const refusal = environmentKeyRefusal(key);
      if (refusal) context.addIssue({ code: 'custom', message: `${key} is refused: ${refusal}` });
    })
    .optional(),
});
export type SecretRef = z.infer<typeof SecretRefSchema>;

/** The variable naming one secret's file in the command environment: FERRY_SECRET_ and the name, upper case, other characters as `_`. */
export function secretVariable(name: string): string {
  return `FERRY_SECRET_${name.toUpperCase().replace(/[^A-Z0-9_]/g, '_')}`;
}

/** Refusals of a config's list of references beyond each one's shape: a name, a path or a variable used twice. */
export function secretRefsProblem(refs: readonly SecretRef[]): string | undefined {
  const names = new Set<string>();
  const paths = new Set<string>();
  const variables = new Set<string>();
  for (const ref of refs) {
    const target = ref.path ?? ref.name;
    if (names.has(ref.name)) return `secret '${ref.name}' is referenced twice`;
    if (paths.has(target)) return `two secrets go to the path '${target}'`;
    if (variables.has(secretVariable(ref.name))) return `secrets '${ref.name}' and another both make ${secretVariable(ref.name)}`;
    if (ref.env !== undefined && variables.has(ref.env)) return `two secrets are exposed as ${ref.env}`;
    if (ref.env !== undefined) variables.add(ref.env);
    // A file at `a` and another at `a/b` cannot both exist.
    for (const other of paths) if (other.startsWith(`${target}/`) || target.startsWith(`${other}/`)) return `the secret paths '${other}' and '${target}' overlap`;
    names.add(ref.name);
    paths.add(target);
    variables.add(secretVariable(ref.name));
  }
  return undefined;
}

export const SecretRefsSchema = z
  .array(SecretRefSchema)
  .max(MAX_CONFIG_SECRETS)
  .superRefine((refs, context) => {
    const problem = secretRefsProblem(refs);
    if (problem) context.addIssue({ code: 'custom', message: problem });
  });

/** A ciphertext on the wire: base64 of the age file. */
export const CiphertextSchema = z
  .string()
  .max(Math.ceil(MAX_SECRET_CIPHERTEXT_BYTES / 3) * 4, `a ciphertext is at most ${MAX_SECRET_CIPHERTEXT_BYTES} bytes`)
  .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'a ciphertext is base64');

/**
 * One referenced secret as the desired answer delivers it to one agent:
 * its latest version's ciphertext, or null when this agent is not among
 * its recipients (`version` null: no such secret is set).
 */
export const DeliveredSecretSchema = z.strictObject({
  name: SecretNameSchema,
  version: z.number().int().min(1).nullable(),
  ciphertext: CiphertextSchema.nullable(),
});
export type DeliveredSecret = z.infer<typeof DeliveredSecretSchema>;

/**
 * What says whether an agent's secrets changed: a digest of each
 * delivered secret's name, version and whether it came for this agent
 * (not the ciphertext: the version names it). The agent sends it with its
 * watch; the coordinator answers when its own differs (a rotation, a
 * rekey that added the agent).
 */
export function secretsStamp(secrets: readonly DeliveredSecret[]): string {
  const summary = secrets.map((secret) => ({ name: secret.name, version: secret.version, delivered: secret.ciphertext !== null }));
  return createHash('sha256').update(canonicalJson(summary)).digest('hex');
}

export const SecretsStampSchema = z.string().regex(/^[0-9a-f]{64}$/, 'a secrets stamp is 64 hex digits');

/** Every age file starts with this line. */
const AGE_HEADER = 'age-encryption.org/v1\n';

/** Whether `bytes` look like an age file within the bounds (the coordinator's check: it cannot decrypt). */
export function ciphertextProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length > MAX_SECRET_CIPHERTEXT_BYTES) return `the ciphertext is ${bytes.length} bytes, over ${MAX_SECRET_CIPHERTEXT_BYTES}`;
  if (Buffer.from(bytes.subarray(0, AGE_HEADER.length)).toString('latin1') !== AGE_HEADER) return 'the ciphertext is not an age file (age-encryption.org/v1)';
  return undefined;
}

/** The SHA-256 (hex) of a ciphertext: what the audit log records of it. */
export function ciphertextDigest(ciphertext: Uint8Array): string {
  return createHash('sha256').update(ciphertext).digest('hex');
}
