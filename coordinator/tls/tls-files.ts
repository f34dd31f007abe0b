/**
 * The coordinator's TLS material in its data directory: the key and the
 * self-signed certificate (protocol/self-signed-certificate.ts) of its QUIC
 * listener and HTTPS port, and the fingerprint clients pin. Created on
 * first use, not at open: a one-off CLI command never needs it.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { certificateFingerprint } from '../../protocol/tls-pinning.js';
import { createSelfSignedCertificate, type TlsCertificate } from '../../protocol/self-signed-certificate.js';

export interface TlsFilePaths {
  certificate: string;
  key: string;
}

export class TlsFiles implements TlsCertificate {
  private loaded: TlsCertificate | undefined;

  constructor(private readonly paths: TlsFilePaths) {}

  get certificatePem(): string {
    return this.material().certificatePem;
  }

  get privateKeyPem(): string {
    return this.material().privateKeyPem;
  }

  get fingerprint(): string {
    return this.material().fingerprint;
  }

  /**
   * Reads the files, creating them first if the certificate is missing. The
   * key (0600, in a 0700 directory) and then the certificate are each written
   * to a temporary name and renamed, so a crash never leaves half a file.
   */
  private material(): TlsCertificate {
    if (this.loaded) return this.loaded;
    const { certificate, key } = this.paths;
    if (!existsSync(certificate)) {
      const created = createSelfSignedCertificate();
      mkdirSync(path.dirname(key), { recursive: true, mode: 0o700 });
      writeFileSync(`${key}.tmp`, created.privateKeyPem, { mode: 0o600 });
      renameSync(`${key}.tmp`, key);
      writeFileSync(`${certificate}.tmp`, created.certificatePem);
      renameSync(`${certificate}.tmp`, certificate);
    }
    const certificatePem = readFileSync(certificate, 'utf8');
    this.loaded = { certificatePem, privateKeyPem: readFileSync(key, 'utf8'), fingerprint: certificateFingerprint(certificatePem) };
    return this.loaded;
  }
}
