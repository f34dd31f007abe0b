/**
 * Join strings: what an admin hands a new machine. One line carrying where
 * the coordinator is, how to recognise it (its key and the fingerprint of
 * its TLS certificate) and the bootstrap token:
 *
 *   ferry://HOST:PORT?coordinator=<key id>&fp=<sha256 hex>&token=<token>[&tls=1]
 *
 * HOST:PORT is the HTTP API (`tls=1`: HTTPS); the QUIC port is learned from it.
 */
import { z } from 'zod';
import { KeyIdSchema } from './identity.js';
import { normalizeFingerprint } from './tls-pinning.js';

export const JoinStringSchema = z.object({
  httpUrl: z.url(),
  coordinatorKey: KeyIdSchema,
  tlsFingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  token: z.string().min(16).max(256),
});
export type JoinString = z.infer<typeof JoinStringSchema>;

export class JoinStringError extends Error {
  override readonly name = 'JoinStringError';
  readonly code = 'BAD_JOIN_STRING';
}

export function formatJoinString(join: { httpUrl: string; coordinatorKey: string; tlsFingerprint: string; token: string }): string {
  const url = new URL(join.httpUrl);
  const tls = url.protocol === 'https:' ? '&tls=1' : '';
  return `ferry://${url.host}?coordinator=${join.coordinatorKey}&fp=${join.tlsFingerprint}&token=${encodeURIComponent(join.token)}${tls}`;
}

/** Parses a join string; refuses (BAD_JOIN_STRING, naming the part) anything malformed. */
export function parseJoinString(text: string): JoinString {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new JoinStringError(`not a join string (expected ferry://HOST:PORT?coordinator=…&fp=…&token=…): '${text.slice(0, 80)}'`);
  }
  if (url.protocol !== 'ferry:') throw new JoinStringError(`a join string starts with ferry://, not ${url.protocol}//`);
  const field = (name: string): string => {
    const value = url.searchParams.get(name);
    if (!value) throw new JoinStringError(`the join string has no '${name}'`);
    return value;
  };
  let tlsFingerprint: string;
  try {
    tlsFingerprint = normalizeFingerprint(field('fp'));
  } catch (error) {
    throw new JoinStringError(`the join string's 'fp': ${(error as Error).message}`);
  }
  const parsed = JoinStringSchema.safeParse({
    httpUrl: `${url.searchParams.get('tls') === '1' ? 'https' : 'http'}://${url.host}`,
    coordinatorKey: field('coordinator'),
    tlsFingerprint,
    token: field('token'),
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new JoinStringError(`the join string's '${String(issue.path[0])}': ${issue.message}`);
  }
  return parsed.data;
}
