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

  /**
   * A copy of the seed, for one use only: deriving this key's X25519
   * identity to decrypt secrets encrypted to it (protocol/secrets.ts
   * identityOfSeed). Never send or log it.
   */
  seedForDecryption(): Uint8Array {
    return new Uint8Array(this.seed);
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

/**
 * Reads SSH's wire encoding (RFC 4251 section 5: big-endian uint32s and
 * uint32-length-prefixed strings), as OpenSSH key files and public key
 * blobs hold it. A read past the end calls `truncated`, which throws.
 */
class SshFieldReader {
  private at = 0;

  constructor(
    private readonly bytes: Buffer,
    private readonly truncated: () => never,
  ) {}

  uint32(): number {
    if (this.at + 4 > this.bytes.length) this.truncated();
    const value = this.bytes.readUInt32BE(this.at);
    this.at += 4;
    return value;
  }

  string(): Buffer {
    const length = this.uint32();
    if (this.at + length > this.bytes.length) this.truncated();
    const value = this.bytes.subarray(this.at, this.at + length);
    this.at += length;
    return value;
  }
}

/** Reads the seed of an unencrypted OpenSSH ed25519 private key (PEM-armoured `openssh-key-v1`). */
export function parseOpenSshEd25519(text: string, where = 'key'): Uint8Array {
  const body = text
    .replace(/-----BEGIN OPENSSH PRIVATE KEY-----/, '')
    .replace(/-----END OPENSSH PRIVATE KEY-----/, '')
    .replace(/\s+/g, '');
  const bytes = Buffer.from(body, 'base64');
  const fail = (why: string): never => {
    throw new IdentityError(`${where} is not a usable OpenSSH ed25519 key: ${why}`);
  };
  if (!bytes.subarray(0, OPENSSH_MAGIC.length).equals(OPENSSH_MAGIC)) fail('missing openssh-key-v1 header');
  const file = new SshFieldReader(bytes.subarray(OPENSSH_MAGIC.length), () => fail('truncated'));
  const cipher = file.string().toString();
  const kdf = file.string().toString();
  file.string(); // kdf options
  if (cipher !== 'none' || kdf !== 'none') fail('it is encrypted (decrypt a copy with ssh-keygen -p, or let Ferry generate a key)');
  if (file.uint32() !== 1) fail('it holds more than one key');
  file.string(); // public key blob
  const block = new SshFieldReader(file.string(), () => fail('truncated private section'));
  if (block.uint32() !== block.uint32()) fail('check integers differ (corrupt or encrypted)');
  const type = block.string().toString();
  if (type !== 'ssh-ed25519') fail(`it is a ${type} key, Ferry needs ssh-ed25519`);
  const publicKey = block.string();
  const secret = block.string();
  if (publicKey.length !== 32 || secret.length !== 64) fail('unexpected ed25519 key lengths');
  const seed = new Uint8Array(secret.subarray(0, 32));
  if (!Buffer.from(ed25519PublicKey(seed)).equals(publicKey)) fail('public and private halves do not match');
  return seed;
}

/**
 * The public key of the first OpenSSH ed25519 public key line
 * (`ssh-ed25519 AAAA… comment`, as in `id_ed25519.pub` or
 * `authorized_keys`) in `text`; undefined if there is none or its blob is
 * not a 32-byte ssh-ed25519 key.
 */
export function sshEd25519PublicKey(text: string): Uint8Array | undefined {
  const line = /ssh-ed25519 ([A-Za-z0-9+/=]+)/.exec(text);
  if (!line) return undefined;
  const blob = new SshFieldReader(Buffer.from(line[1]!, 'base64'), () => {
    throw new IdentityError('truncated ssh-ed25519 public key');
  });
  try {
    if (blob.string().toString() !== 'ssh-ed25519') return undefined;
    const key = blob.string();
    return key.length === 32 ? new Uint8Array(key) : undefined;
  } catch (error) {
    if (error instanceof IdentityError) return undefined;
    throw error;
  }
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
