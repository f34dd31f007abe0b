/**
 * A generation's secrets on this machine (docs/secrets.md, "On the agent").
 *
 * At rest: the ciphertexts the desired answer delivered are kept in the
 * generation's directory (`secrets.json`: name, version, path, mode, owner,
 * ciphertext), so any generation can be activated again (a rollback) with
 * the values it ran with, and nothing in the state dir is in clear.
 *
 * At activation: each one is decrypted with the agent's key into the
 * generation's runtime dir, `<root>/<generation>/<path>`, where root is
 * `/run/ferry/secrets/<agent id, 16 hex>` when /run is a tmpfs the agent
 * may write (values never reach a disk), else `<state dir>/secrets`. The
 * generation dir is 0700, or 0711 when a secret is owned by another user
 * (who must traverse it to reach the file; listing stays refused); files
 * are written 0600, then set to their mode (default 0400) and, when the
 * agent runs as root, their owner. The commands get paths, never values.
 * When another generation becomes active, the others' runtime dirs are
 * removed.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, accessSync, constants } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { decryptSecret, SecretError } from '../protocol/secrets.js';
import { CiphertextSchema, DEFAULT_SECRET_MODE, SecretModeSchema, SecretNameSchema, SecretOwnerSchema, SecretPathSchema, SecretRefSchema, secretsStamp, secretVariable, type DeliveredSecret, type SecretRef } from '../protocol/secret-refs.js';

/** TMPFS_MAGIC (linux/magic.h): what statfs says of a tmpfs. */
const TMPFS_MAGIC = 0x01021994;

export const StoredSecretSchema = z.strictObject({
  name: SecretNameSchema,
  version: z.number().int().min(1),
  path: SecretPathSchema,
  mode: SecretModeSchema,
  owner: SecretOwnerSchema.nullable(),
  ciphertext: CiphertextSchema,
  /** The variable its value is exposed as (SecretRef.env), when the config asked for one. */
  env: SecretRefSchema.shape.env,
});
export type StoredSecret = z.infer<typeof StoredSecretSchema>;

const SECRETS_FILE = 'secrets.json';

/**
 * A bundle's secrets (castore/bundle.ts BundledSecretSchema) as the desired
 * answer would deliver them to agent `agentId`: the ciphertext when it is
 * among the recipients, else null (so it fails as it would online).
 */
export function bundledDelivery(secrets: readonly { name: string; version: number; recipients: readonly string[]; ciphertext: string }[] | undefined, agentId: string): DeliveredSecret[] {
  return (secrets ?? []).map((secret) => ({ name: secret.name, version: secret.version, ciphertext: secret.recipients.includes(agentId) ? secret.ciphertext : null }));
}

/**
 * The secrets a config's `refs` get from `delivered` (the desired answer's,
 * or a bundle's as bundledDelivery makes them), to keep with its
 * generation. Refuses (SecretError SECRET_NOT_DELIVERED, naming the secret
 * and what to do) a reference with no ciphertext for this agent: not set
 * (not carried by the bundle), or not encrypted to this agent.
 */
export function secretsToKeep(refs: readonly SecretRef[], delivered: readonly DeliveredSecret[] | undefined, agentId: string, source: 'answer' | 'bundle'): StoredSecret[] {
  return refs.map((ref) => {
    const found = delivered?.find((secret) => secret.name === ref.name);
    if (!found || found.version === null) {
      throw new SecretError(
        'SECRET_NOT_DELIVERED',
        source === 'bundle'
          ? `secret '${ref.name}' is not in the bundle (made before bundles carried secrets, or without it): make a new one with ferry bundle create`
          : `secret '${ref.name}' is not set on the coordinator (ferry secrets set ${ref.name} …)`,
      );
    }
    if (found.ciphertext === null) {
      throw new SecretError(
        'SECRET_NOT_DELIVERED',
        `secret '${ref.name}' (version ${found.version}) is not encrypted to this agent ${agentId}: add it with ferry secrets rekey ${ref.name} (its selector must match this agent)`,
      );
    }
    return { name: ref.name, version: found.version, path: ref.path ?? ref.name, mode: ref.mode ?? DEFAULT_SECRET_MODE, owner: ref.owner ?? null, ciphertext: found.ciphertext, ...(ref.env ? { env: ref.env } : {}) };
  });
}

/** The stamp of the secrets kept for a generation (secret-refs.ts secretsStamp), as the answer that brought them had it. */
export function stampOfKept(secrets: readonly StoredSecret[]): string {
  return secretsStamp(secrets.map((secret) => ({ name: secret.name, version: secret.version, ciphertext: secret.ciphertext })));
}

/** Writes `secrets` into a generation directory being made (Generations.create's `write`). */
export function keepSecrets(generationDir: string, secrets: readonly StoredSecret[]): void {
  if (secrets.length > 0) writeFileSync(path.join(generationDir, SECRETS_FILE), `${JSON.stringify(secrets)}\n`, { mode: 0o600 });
}

/** The secrets kept with the generation in `generationDir` (none for a generation without). Refuses (SecretError SECRET_INVALID) a file that does not parse. */
export function keptSecrets(generationDir: string): StoredSecret[] {
  const file = path.join(generationDir, SECRETS_FILE);
  if (!existsSync(file)) return [];
  const parsed = z.array(StoredSecretSchema).safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new SecretError('SECRET_INVALID', `${file} is not a valid list of secrets: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

/** Where this agent's generations' secrets are decrypted: a tmpfs /run when it may write there, else the state dir. */
export function secretsRoot(stateDir: string, agentId: string): string {
  try {
    if (statfsSync('/run').type === TMPFS_MAGIC) {
      accessSync('/run', constants.W_OK);
      return path.join('/run', 'ferry', 'secrets', agentId.slice(0, 16));
    }
  } catch {
    // No /run, or not ours to write: the state dir (0700) holds them.
  }
  return path.join(stateDir, 'secrets');
}

/** What a command is told of its generation's secrets: the dir, and each secret's file by name. */
export interface DecryptedSecrets {
  dir: string;
  files: Record<string, string>;
}

/** FERRY_SECRETS_DIR and FERRY_SECRET_<NAME> for `secrets`. */
export function secretsEnvironment(secrets: DecryptedSecrets): Record<string, string> {
  const variables: Record<string, string> = { FERRY_SECRETS_DIR: secrets.dir };
  for (const [name, file] of Object.entries(secrets.files)) variables[secretVariable(name)] = file;
  return variables;
}

/** The uid and gid of `owner` (a user name from /etc/passwd, or a numeric uid with the same gid). Refuses (SecretError SECRET_INVALID) an unknown user. */
function ownerIds(owner: string): { uid: number; gid: number } {
  if (/^[0-9]+$/.test(owner)) return { uid: Number(owner), gid: Number(owner) };
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.split(':')[0] === owner);
  const fields = line?.split(':');
  if (!fields || fields.length < 4) throw new SecretError('SECRET_INVALID', `owner '${owner}' is no user of this machine (/etc/passwd)`);
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/**
 * Decrypts `secrets` with the agent's key (`seed`) into `<root>/<generation>`,
 * replacing what was there. Refuses (SecretError, naming the secret) one
 * that is not for this key or does not decrypt, and an owner this machine
 * does not know; the half-written dir is removed then. `note` hears of an
 * owner not applied (the agent does not run as root).
 */
export async function decryptSecrets(root: string, generation: number, secrets: readonly StoredSecret[], seed: Uint8Array, note: (message: string) => void): Promise<DecryptedSecrets> {
  const dir = path.join(root, String(generation));
  const asRoot = process.getuid?.() === 0;
  const foreignOwner = secrets.some((secret) => secret.owner !== null);
  const dirMode = foreignOwner ? 0o711 : 0o700;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(root, { recursive: true, mode: 0o711 });
  chmodSync(root, 0o711);
  mkdirSync(dir, { mode: dirMode });
  chmodSync(dir, dirMode);
  const files: Record<string, string> = {};
  try {
    for (const secret of secrets) {
      let value: Uint8Array;
      try {
        value = await decryptSecret(new Uint8Array(Buffer.from(secret.ciphertext, 'base64')), seed);
      } catch (error) {
        if (!(error instanceof SecretError)) throw error;
        throw new SecretError(error.code, `secret '${secret.name}' (version ${secret.version}): ${error.message}`);
      }
      const file = path.join(dir, secret.path);
      // SecretPathSchema allows no `..` and no absolute path: the file is inside `dir`. Checked again, cheaply.
      if (!file.startsWith(`${dir}${path.sep}`)) throw new SecretError('SECRET_INVALID', `secret '${secret.name}': path '${secret.path}' leaves the secrets dir`);
      mkdirSync(path.dirname(file), { recursive: true, mode: dirMode });
      writeFileSync(file, value, { mode: 0o600, flag: 'wx' });
      value.fill(0);
      if (secret.owner !== null) {
        if (asRoot) {
          const { uid, gid } = ownerIds(secret.owner);
          chownSync(file, uid, gid);
        } else {
          note(`secret '${secret.name}': owner '${secret.owner}' not applied (the agent does not run as root)`);
        }
      }
      chmodSync(file, Number.parseInt(secret.mode, 8));
      files[secret.name] = file;
    }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return { dir, files };
}

/** Removes the runtime dirs of every generation but `keep` (the active one). */
export function removeOtherSecrets(root: string, keep: number): void {
  if (!existsSync(root)) return;
  for (const entry of readdirSync(root)) {
    if (/^\d+$/.test(entry) && Number(entry) !== keep) rmSync(path.join(root, entry), { recursive: true, force: true });
  }
}
