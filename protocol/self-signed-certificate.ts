/**
 * The TLS certificate of a coordinator (and of a site relay): self-signed ECDSA P-256 (the QUIC
 * library refuses ed25519 certificates), for the fixed name
 * `ferry-coordinator`. Clients never trust it by a CA: they pin its SHA-256
 * fingerprint (from the join string or the CLI context) and connect with
 * that name as SNI, so the coordinator's address may be anything.
 *
 * Node can sign but not build certificates, so the DER is assembled here:
 * a minimal X.509 v3 certificate (RFC 5280) with subjectAltName and
 * basicConstraints.
 */
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { COORDINATOR_TLS_NAME } from './tls-pinning.js';


function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function der(tag: number, ...contents: Buffer[]): Buffer {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const sequence = (...items: Buffer[]) => der(0x30, ...items);

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const bytes = [40 * parts[0]! + parts[1]!];
  for (const part of parts.slice(2)) {
    const base128: number[] = [part & 0x7f];
    for (let rest = Math.floor(part / 128); rest > 0; rest = Math.floor(rest / 128)) base128.unshift(0x80 | (rest & 0x7f));
    bytes.push(...base128);
  }
  return der(0x06, Buffer.from(bytes));
}

function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  // UTCTime up to 2049, GeneralizedTime after (RFC 5280 4.1.2.5).
  return date.getUTCFullYear() < 2050 ? der(0x17, Buffer.from(iso.slice(2), 'ascii')) : der(0x18, Buffer.from(iso, 'ascii'));
}

const ECDSA_WITH_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));

export interface TlsCertificate {
  certificatePem: string;
  privateKeyPem: string;
  /** SHA-256 of the DER certificate, lowercase hex: what clients pin. */
  fingerprint: string;
}

/** A new self-signed certificate for COORDINATOR_TLS_NAME, valid from an hour ago for `years`. */
export function createSelfSignedCertificate(years = 20, now = new Date()): TlsCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const serial = randomBytes(16);
  // DER INTEGERs are minimal and signed: a first byte in 0x01..0x7f is positive and needs no padding
  // (a 0x00 lead would be refused by OpenSSL as "illegal padding").
  serial[0] = 0x01 + (serial[0]! % 0x7f);
  const name = sequence(der(0x31, sequence(oid('2.5.4.3'), der(0x0c, Buffer.from(COORDINATOR_TLS_NAME, 'utf8')))));
  const notBefore = new Date(now.getTime() - 3600_000);
  const notAfter = new Date(now.getTime());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + years);
  const subjectAltName = sequence(oid('2.5.29.17'), der(0x04, sequence(der(0x82, Buffer.from(COORDINATOR_TLS_NAME, 'ascii')))));
  const basicConstraints = sequence(oid('2.5.29.19'), der(0x01, Buffer.from([0xff])), der(0x04, sequence()));
  const tbs = sequence(
    der(0xa0, der(0x02, Buffer.from([2]))),
    der(0x02, serial),
    ECDSA_WITH_SHA256,
    name,
    sequence(time(notBefore), time(notAfter)),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, sequence(subjectAltName, basicConstraints)),
  );
  const signature = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const certificate = sequence(tbs, ECDSA_WITH_SHA256, der(0x03, Buffer.from([0]), signature));
  const certificatePem = `-----BEGIN CERTIFICATE-----\n${certificate.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
  return {
    certificatePem,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    fingerprint: createHash('sha256').update(certificate).digest('hex'),
  };
}
