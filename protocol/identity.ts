/**
 * Actor identities: an ed25519 key pair whose id is the lowercase hex of the
 * public key (64 characters), used for admins, pushers, agents and the
 * coordinator alike. Identities load from Ferry's key file
 * (`ferry-ed25519-secret:<base64 seed>`, mode 0600) or from an unencrypted
 * OpenSSH ed25519 private key (`~/.ssh/id_ed25519`).
 */
import { chmodSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { KeyObject } from 'node:crypto';
import { ed25519PrivateKey, ed25519PublicKey, ed25519Sign, generateEd25519KeyPair } from './ed25519.js';

declare const keyIdBrand: unique symbol;
/** Lowercase hex of an ed25519 public key: the id of an actor. */
export type KeyId = string & { readonly [keyIdBrand]: true };

export const KeyIdSchema = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'expected a key id: 64 lowercase hex characters (an ed25519 public key)')
  .transform((value) => value as KeyId);

export function keyIdOf(publicKey: Uint8Array): KeyId {
  return Buffer.from(publicKey).toString('hex') as KeyId;
}

export function publicKeyOf(keyId: KeyId): Uint8Array {
  return new Uint8Array(Buffer.from(keyId, 'hex'));
}

export class Identity {
  readonly publicKey: Uint8Array;
  readonly keyId: KeyId;
  /** The seed as a node:crypto key, made once: every request an agent or the CLI sends is signed. */
  private readonly privateKey: KeyObject;

  constructor(private readonly seed: Uint8Array) {
    if (seed.length !== 32) throw new RangeError('an ed25519 seed is 32 bytes');
    this.privateKey = ed25519PrivateKey(seed);
    this.publicKey = ed25519PublicKey(this.privateKey);
    this.keyId = keyIdOf(this.publicKey);
  }

  static generate(): Identity {
    return new Identity(generateEd25519KeyPair().seed);
  }

  sign(message: Uint8Array): Uint8Array {
    return ed25519Sign(this.privateKey, message);
  }

  /** The key file text; write it with mode 0600. */
  toKeyFile(): string {
    return `ferry-ed25519-secret:${Buffer.from(this.seed).toString('base64')}\n`;
  }
}

export class IdentityError extends Error {
  override readonly name = 'IdentityError';
  readonly code = 'BAD_KEY_FILE';
}

const OPENSSH_MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');

/** Reads the seed of an unencrypted OpenSSH ed25519 private key (PEM-armoured `openssh-key-v1`). */
export function parseOpenSshEd25519(text: string, where = 'key'): Uint8Array {
  const body = text
    .replace(/-----BEGIN OPENSSH PRIVATE KEY-----/, '')
    .replace(/-----END OPENSSH PRIVATE KEY-----/, '')
    .replace(/\s+/g, '');
  const bytes = Buffer.from(body, 'base64');
  let at = 0;
  const fail = (why: string): never => {
    throw new IdentityError(`${where} is not a usable OpenSSH ed25519 key: ${why}`);
  };
  const u32 = (): number => {
    if (at + 4 > bytes.length) fail('truncated');
    const value = bytes.readUInt32BE(at);
    at += 4;
    return value;
  };
  const string = (): Buffer => {
    const length = u32();
    if (at + length > bytes.length) fail('truncated');
    const value = bytes.subarray(at, at + length);
    at += length;
    return value;
  };
  if (!bytes.subarray(0, OPENSSH_MAGIC.length).equals(OPENSSH_MAGIC)) fail('missing openssh-key-v1 header');
  at = OPENSSH_MAGIC.length;
  const cipher = string().toString();
  const kdf = string().toString();
  string(); // kdf options
  if (cipher !== 'none' || kdf !== 'none') fail('it is encrypted (decrypt a copy with ssh-keygen -p, or let Ferry generate a key)');
  if (u32() !== 1) fail('it holds more than one key');
  string(); // public key blob
  const privateBlock = string();
  at = 0;
  const block = privateBlock;
  const read32 = (): number => {
    if (at + 4 > block.length) fail('truncated private section');
    const value = block.readUInt32BE(at);
    at += 4;
    return value;
  };
  const readString = (): Buffer => {
    const length = read32();
    if (at + length > block.length) fail('truncated private section');
    const value = block.subarray(at, at + length);
    at += length;
    return value;
  };
  if (read32() !== read32()) fail('check integers differ (corrupt or encrypted)');
  const type = readString().toString();
  if (type !== 'ssh-ed25519') fail(`it is a ${type} key, Ferry needs ssh-ed25519`);
  const publicKey = readString();
  const secret = readString();
  if (publicKey.length !== 32 || secret.length !== 64) fail('unexpected ed25519 key lengths');
  const seed = new Uint8Array(secret.subarray(0, 32));
  if (!Buffer.from(ed25519PublicKey(seed)).equals(publicKey)) fail('public and private halves do not match');
  return seed;
}

/**
 * Loads an identity from a Ferry key file or an OpenSSH ed25519 key.
 * Refuses (IdentityError, naming the file) anything else, including
 * encrypted OpenSSH keys.
 */
export function loadIdentity(file: string): Identity {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new IdentityError(`cannot read key file ${file}: ${(error as Error).message}`);
  }
  const ferry = /^ferry-ed25519-secret:([A-Za-z0-9+/=]+)\s*$/.exec(text);
  if (ferry) {
    const seed = Buffer.from(ferry[1]!, 'base64');
    if (seed.length !== 32) throw new IdentityError(`${file}: a Ferry key holds a 32-byte seed, this one ${seed.length} bytes`);
    return new Identity(new Uint8Array(seed));
  }
  if (text.includes('BEGIN OPENSSH PRIVATE KEY')) return new Identity(parseOpenSshEd25519(text, file));
  throw new IdentityError(`${file} is neither a Ferry key file nor an OpenSSH ed25519 private key`);
}

/** Writes a new identity to `file` (mode 0600, refusing to overwrite) and returns it. */
export function createIdentityFile(file: string): Identity {
  const identity = Identity.generate();
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, identity.toKeyFile(), { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return identity;
}
