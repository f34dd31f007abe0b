import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { COORDINATOR_TLS_NAME } from './data-protocol.js';
import { createSelfSignedCertificate } from './self-signed-certificate.js';

describe('createSelfSignedCertificate', () => {
  it('always produces DER that OpenSSL parses (random serials and signatures included)', () => {
    // Serial and signature are random: a non-minimal INTEGER shows up about once in 256 certificates,
    // so make enough of them that such a bug cannot hide.
    for (let i = 0; i < 1500; i++) {
      const { certificatePem, fingerprint } = createSelfSignedCertificate();
      const certificate = new X509Certificate(certificatePem);
      expect(createHash('sha256').update(certificate.raw).digest('hex')).toBe(fingerprint);
      expect(certificate.serialNumber).toMatch(/^[0-7][0-9A-F]{31}$/);
    }
  });

  it('names the coordinator, is self-signed with its own key, and is valid now', () => {
    const now = new Date();
    const { certificatePem, privateKeyPem } = createSelfSignedCertificate(20, now);
    const certificate = new X509Certificate(certificatePem);
    expect(certificate.subjectAltName).toBe(`DNS:${COORDINATOR_TLS_NAME}`);
    expect(certificate.checkIssued(certificate)).toBe(true);
    expect(certificate.verify(certificate.publicKey)).toBe(true);
    expect(certificate.checkPrivateKey(createPrivateKey(privateKeyPem))).toBe(true);
    expect(new Date(certificate.validFrom).getTime()).toBeLessThan(now.getTime());
    expect(new Date(certificate.validTo).getUTCFullYear()).toBe(now.getUTCFullYear() + 20);
  });
});

