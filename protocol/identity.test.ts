import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { ed25519PublicKey, ed25519PublicKeyNoble, ed25519Sign, ed25519SignNoble, ed25519Verify, ed25519VerifyNoble } from './ed25519.js';
import { createIdentityFile, Identity, IdentityError, loadIdentity, sshEd25519PublicKey } from './identity.js';
import { signRequest, verifyRequestSignature } from './request-signing.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-identity-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sshKeygen = ['/usr/bin/ssh-keygen', '/bin/ssh-keygen'].find((p) => existsSync(p));

describe('identities', () => {
  it('writes key files 0600 and loads them back', () => {
    const file = path.join(dir, 'admin.key');
    const identity = createIdentityFile(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadIdentity(file).keyId).toBe(identity.keyId);
    expect(() => createIdentityFile(file)).toThrow();
  });

  it('signs and derives public keys with node:crypto exactly as noble does (RFC 8032 is deterministic)', () => {
    for (let i = 0; i < 20; i++) {
      const seed = new Uint8Array(randomBytes(32));
      const message = new Uint8Array(randomBytes(i * 7));
      expect(Buffer.from(ed25519PublicKey(seed))).toEqual(Buffer.from(ed25519PublicKeyNoble(seed)));
      expect(Buffer.from(ed25519Sign(seed, message))).toEqual(Buffer.from(ed25519SignNoble(seed, message)));
    }
  });

  it('signs with node:crypto and verifies with node:crypto and noble alike', () => {
    const identity = Identity.generate();
    const message = new TextEncoder().encode('hello');
    const signature = identity.sign(message);
    expect(ed25519Verify(identity.publicKey, message, signature)).toBe(true);
    expect(ed25519VerifyNoble(identity.publicKey, message, signature)).toBe(true);
    signature[0]! ^= 1;
    expect(ed25519Verify(identity.publicKey, message, signature)).toBe(false);
    expect(ed25519VerifyNoble(identity.publicKey, message, signature)).toBe(false);
  });

  it.skipIf(!sshKeygen)('loads an unencrypted OpenSSH ed25519 key and refuses an encrypted one', () => {
    const plain = path.join(dir, 'id_plain');
    execFileSync(sshKeygen!, ['-q', '-t', 'ed25519', '-N', '', '-f', plain]);
    const identity = loadIdentity(plain);
    const publicLine = execFileSync(sshKeygen!, ['-y', '-f', plain]).toString();
    const blob = Buffer.from(publicLine.split(' ')[1]!, 'base64');
    expect(Buffer.from(blob.subarray(blob.length - 32)).toString('hex')).toBe(identity.keyId);
    expect(Buffer.from(sshEd25519PublicKey(publicLine)!).toString('hex')).toBe(identity.keyId);
    const encrypted = path.join(dir, 'id_encrypted');
    execFileSync(sshKeygen!, ['-q', '-t', 'ed25519', '-N', 'secret', '-f', encrypted]);
    expect(() => loadIdentity(encrypted)).toThrow(/encrypted/);
  });

  it('reads an ssh-ed25519 public key line, and nothing else', () => {
    const identity = Identity.generate();
    const field = (bytes: Uint8Array) => {
      const length = Buffer.alloc(4);
      length.writeUInt32BE(bytes.length);
      return Buffer.concat([length, bytes]);
    };
    const blobOf = (type: string, key: Uint8Array) => Buffer.concat([field(Buffer.from(type)), field(key)]).toString('base64');
    const line = `ssh-ed25519 ${blobOf('ssh-ed25519', identity.publicKey)} admin@host\n`;
    expect(Buffer.from(sshEd25519PublicKey(`# a comment\n${line}`)!).toString('hex')).toBe(identity.keyId);
    expect(sshEd25519PublicKey(`ssh-ed25519 ${blobOf('ssh-rsa', identity.publicKey)}`)).toBeUndefined();
    expect(sshEd25519PublicKey(`ssh-ed25519 ${blobOf('ssh-ed25519', identity.publicKey.subarray(1))}`)).toBeUndefined();
    expect(sshEd25519PublicKey(`ssh-ed25519 ${Buffer.from(blobOf('ssh-ed25519', identity.publicKey), 'base64').subarray(0, 30).toString('base64')}`)).toBeUndefined();
    expect(sshEd25519PublicKey('ssh-ed25519 AAAA')).toBeUndefined();
    expect(sshEd25519PublicKey(identity.keyId)).toBeUndefined();
  });

  it('refuses files that are not keys', () => {
    const junk = path.join(dir, 'junk');
    writeFileSync(junk, 'hello');
    expect(() => loadIdentity(junk)).toThrow(IdentityError);
    expect(() => loadIdentity(path.join(dir, 'missing'))).toThrow(/cannot read/);
  });
});

describe('signed requests', () => {
  const identity = Identity.generate();
  const body = '{"x":1}';
  const headersOf = (h: Record<string, string>) => (name: string) => h[name];

  it('verifies what was signed and nothing else', () => {
    const headers = signRequest(identity, 'POST', '/api/v1/things?x=1', body, 1_000_000);
    const verdict = verifyRequestSignature(headersOf(headers), 'POST', '/api/v1/things?x=1', body, 1_000_500);
    expect(verdict).toMatchObject({ ok: true, keyId: identity.keyId });
    expect(verifyRequestSignature(headersOf(headers), 'PUT', '/api/v1/things?x=1', body, 1_000_500)).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(verifyRequestSignature(headersOf(headers), 'POST', '/api/v1/things?x=2', body, 1_000_500)).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(verifyRequestSignature(headersOf(headers), 'POST', '/api/v1/things?x=1', '{"x":2}', 1_000_500)).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(verifyRequestSignature(headersOf(headers), 'POST', '/api/v1/things?x=1', body, 1_000_000 + 3_600_000)).toMatchObject({ ok: false, reason: 'stale' });
    expect(verifyRequestSignature(headersOf({}), 'POST', '/', body)).toMatchObject({ ok: false, reason: 'missing' });
    expect(verifyRequestSignature(headersOf({ ...headers, 'x-ferry-nonce': 'zz' }), 'POST', '/api/v1/things?x=1', body, 1_000_000)).toMatchObject({
      ok: false,
      reason: 'malformed',
    });
  });
});
