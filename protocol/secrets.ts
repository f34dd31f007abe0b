/**
 * Secrets encrypted to the machines (docs/secrets.md): values an admin
 * encrypts on their own machine, in age format, to the agents that need
 * them (and to themselves); the coordinator stores and serves only the
 * ciphertext, and each agent decrypts at activation.
 *
 * Recipients are derived from keys Ferry already has: an agent's id is its
 * ed25519 public key, and the standard birational map (RFC 7748 section
 * 4.1, as age's ssh-ed25519 recipients and libsodium's
 * crypto_sign_ed25519_pk_to_curve25519 use it) turns it into an X25519
 * public key, written as a native age recipient (`age1…`). The matching
 * X25519 secret is the clamped first half of SHA-512(seed), which is what
 * ed25519 itself signs with; the agent derives it from its identity seed.
 * So the admin's CLI computes every recipient from agent ids alone and a
 * coordinator cannot substitute a key of its own. The encryption itself is
 * the `age-encryption` package's (X25519 stanzas, ChaCha20-Poly1305
 * payload): nothing here is hand-written cryptography.
 *
 * Bounds: a value is at most MAX_SECRET_BYTES, a ciphertext has at most
 * MAX_SECRET_RECIPIENTS recipients and MAX_SECRET_CIPHERTEXT_BYTES, a name
 * is SecretNameSchema, a config references at most MAX_CONFIG_SECRETS
 * (protocol/secret-refs.ts, re-exported here).
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { bech32 } from '@scure/base';
import { Decrypter, Encrypter } from 'age-encryption';
import { ciphertextProblem, MAX_SECRET_BYTES, MAX_SECRET_CIPHERTEXT_BYTES, MAX_SECRET_RECIPIENTS } from './secret-refs.js';
import { publicKeyOf, type KeyId } from './identity.js';

export * from './secret-refs.js';

/** A refusal of a secret operation, with its code. */
export class SecretError extends Error {
  override readonly name = 'SecretError';
  constructor(
    readonly code: 'SECRET_INVALID' | 'SECRET_TOO_LARGE' | 'SECRET_NOT_FOR_THIS_KEY' | 'SECRET_NOT_DELIVERED',
    message: string,
  ) {
    super(message);
  }
}

/** The age X25519 recipient (`age1…`) of the ed25519 key `keyId`: its public key under the birational map. */
export function recipientOfKey(keyId: KeyId): string {
  const montgomery = ed25519.utils.toMontgomery(publicKeyOf(keyId));
  return bech32.encode('age', bech32.toWords(montgomery));
}

/** The age X25519 identity (`AGE-SECRET-KEY-1…`) of the ed25519 seed `seed` (32 bytes): what decrypts for recipientOfKey of its key. */
export function identityOfSeed(seed: Uint8Array): string {
  if (seed.length !== 32) throw new RangeError('an ed25519 seed is 32 bytes');
  return bech32.encode('age-secret-key-', bech32.toWords(ed25519.utils.toMontgomerySecret(seed))).toUpperCase();
}

/**
 * Encrypts `value` to `recipients` (age X25519 recipients). Refuses
 * (SecretError SECRET_TOO_LARGE) a value over MAX_SECRET_BYTES or more
 * than MAX_SECRET_RECIPIENTS recipients, (SECRET_INVALID) none, or one
 * that is not an age X25519 recipient.
 */
export async function encryptSecret(value: Uint8Array, recipients: readonly string[]): Promise<Uint8Array> {
  if (value.length > MAX_SECRET_BYTES) throw new SecretError('SECRET_TOO_LARGE', `a secret is at most ${MAX_SECRET_BYTES} bytes; this one is ${value.length}`);
  if (recipients.length === 0) throw new SecretError('SECRET_INVALID', 'a secret needs at least one recipient');
  if (recipients.length > MAX_SECRET_RECIPIENTS) throw new SecretError('SECRET_TOO_LARGE', `a secret has at most ${MAX_SECRET_RECIPIENTS} recipients; this one would have ${recipients.length}`);
  const encrypter = new Encrypter();
  for (const recipient of new Set(recipients)) {
    if (!/^age1[02-9ac-hj-np-z]{58}$/.test(recipient)) throw new SecretError('SECRET_INVALID', `${JSON.stringify(recipient.slice(0, 80))} is not an age X25519 recipient`);
    encrypter.addRecipient(recipient);
  }
  const ciphertext = await encrypter.encrypt(value);
  if (ciphertext.length > MAX_SECRET_CIPHERTEXT_BYTES) throw new SecretError('SECRET_TOO_LARGE', `the ciphertext would be ${ciphertext.length} bytes, over ${MAX_SECRET_CIPHERTEXT_BYTES}`);
  return ciphertext;
}

/**
 * Decrypts `ciphertext` with the X25519 key of the ed25519 `seed`. Refuses
 * (SecretError SECRET_NOT_FOR_THIS_KEY) a ciphertext not encrypted to it,
 * (SECRET_INVALID) one that is no age file or fails authentication, and
 * (SECRET_TOO_LARGE) one over the bounds or a value over MAX_SECRET_BYTES.
 */
export async function decryptSecret(ciphertext: Uint8Array, seed: Uint8Array): Promise<Uint8Array> {
  const problem = ciphertextProblem(ciphertext);
  if (problem) throw new SecretError(ciphertext.length > MAX_SECRET_CIPHERTEXT_BYTES ? 'SECRET_TOO_LARGE' : 'SECRET_INVALID', problem);
  const decrypter = new Decrypter();
  decrypter.addIdentity(identityOfSeed(seed));
  let value: Uint8Array;
  try {
    value = await decrypter.decrypt(ciphertext);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (/no identity matched/.test(message)) throw new SecretError('SECRET_NOT_FOR_THIS_KEY', 'the ciphertext is not encrypted to this key');
    throw new SecretError('SECRET_INVALID', `the ciphertext does not decrypt: ${message}`);
  }
  if (value.length > MAX_SECRET_BYTES) throw new SecretError('SECRET_TOO_LARGE', `the secret is ${value.length} bytes, over ${MAX_SECRET_BYTES}`);
  return value;
}
