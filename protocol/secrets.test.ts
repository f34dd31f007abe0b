import { identityToRecipient } from 'age-encryption';
import { describe, expect, it } from 'vitest';
import { Identity } from './identity.js';
import { ciphertextProblem, decryptSecret, encryptSecret, identityOfSeed, MAX_SECRET_BYTES, recipientOfKey, SecretError, SecretPathSchema, SecretRefsSchema, SecretNameSchema } from './secrets.js';

describe('secrets encrypted to ed25519 keys', () => {
  it("derives an age X25519 recipient from the key id alone that age's own identity of the seed matches", async () => {
    for (let i = 0; i < 5; i++) {
      const key = Identity.generate();
      const recipient = recipientOfKey(key.keyId);
      expect(recipient).toMatch(/^age1[02-9ac-hj-np-z]{58}$/);
      expect(await identityToRecipient(identityOfSeed(key.seedForDecryption()))).toBe(recipient);
    }
  });

  it('decrypts for each recipient and refuses any other key, naming why', async () => {
    const [a, b, other] = [Identity.generate(), Identity.generate(), Identity.generate()];
    const ciphertext = await encryptSecret(new TextEncoder().encode('s3cret'), [recipientOfKey(a.keyId), recipientOfKey(b.keyId)]);
    expect(ciphertextProblem(ciphertext)).toBeUndefined();
    expect(Buffer.from(ciphertext).includes('s3cret')).toBe(false);
    for (const key of [a, b]) expect(new TextDecoder().decode(await decryptSecret(ciphertext, key.seedForDecryption()))).toBe('s3cret');
    await expect(decryptSecret(ciphertext, other.seedForDecryption())).rejects.toMatchObject({ code: 'SECRET_NOT_FOR_THIS_KEY' });
    const tampered = new Uint8Array(ciphertext);
    tampered[tampered.length - 1]! ^= 1;
    await expect(decryptSecret(tampered, a.seedForDecryption())).rejects.toMatchObject({ code: 'SECRET_INVALID' });
    await expect(decryptSecret(new TextEncoder().encode('not age'), a.seedForDecryption())).rejects.toBeInstanceOf(SecretError);
  });

  it('bounds values, recipients and ciphertexts', async () => {
    const key = Identity.generate();
    await expect(encryptSecret(new Uint8Array(MAX_SECRET_BYTES + 1), [recipientOfKey(key.keyId)])).rejects.toMatchObject({ code: 'SECRET_TOO_LARGE' });
    await expect(encryptSecret(new Uint8Array(1), [])).rejects.toMatchObject({ code: 'SECRET_INVALID' });
    await expect(encryptSecret(new Uint8Array(1), Array.from({ length: 1001 }, () => recipientOfKey(key.keyId)))).rejects.toMatchObject({ code: 'SECRET_TOO_LARGE' });
    await expect(encryptSecret(new Uint8Array(1), ['age1pq1notarecipient'])).rejects.toMatchObject({ code: 'SECRET_INVALID' });
    expect(ciphertextProblem(new Uint8Array(256 * 1024 + 1))).toMatch(/over/);
    // A full value to the most recipients fits the ciphertext bound.
    const many = Array.from({ length: 1000 }, () => recipientOfKey(Identity.generate().keyId));
    expect((await encryptSecret(new Uint8Array(MAX_SECRET_BYTES), many)).length).toBeLessThan(256 * 1024);
  }, 30_000);

  it('refuses names and paths that could leave the secrets dir, and references that collide', () => {
    for (const bad of ['', '.', '..', 'a/b', 'a b', 'x'.repeat(129), 'é']) expect(SecretNameSchema.safeParse(bad).success, bad).toBe(false);
    for (const bad of ['/etc/passwd', '../x', 'a/../b', 'a/./b', 'a//b', 'a/', '', 'a\\b']) expect(SecretPathSchema.safeParse(bad).success, bad).toBe(false);
    expect(SecretPathSchema.safeParse('tls/key.pem').success).toBe(true);
    expect(SecretRefsSchema.safeParse([{ name: 'a' }, { name: 'a', path: 'b' }]).success).toBe(false);
    expect(SecretRefsSchema.safeParse([{ name: 'a', path: 'x' }, { name: 'b', path: 'x' }]).success).toBe(false);
    expect(SecretRefsSchema.safeParse([{ name: 'a', path: 'x' }, { name: 'b', path: 'x/y' }]).success).toBe(false);
    expect(SecretRefsSchema.safeParse([{ name: 'db.pass' }, { name: 'db_pass' }]).success).toBe(false);
    expect(SecretRefsSchema.safeParse([{ name: 'a', mode: '4755' }]).success).toBe(false);
    expect(SecretRefsSchema.safeParse([{ name: 'a', owner: 'root;rm' }]).success).toBe(false);
  });
});
