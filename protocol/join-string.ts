/**
 * Join strings: what an admin hands a new machine. One line carrying where
 * the coordinator is, how to recognise it (its key and the fingerprint of
 * its TLS certificate) and the bootstrap token:
 *
 *   ferry://HOST:PORT?coordinator=<key id>&fp=<sha256 hex>&token=<token>[&tls=pinned|1]
 *
 * HOST:PORT is the HTTP API; the QUIC port is learned from it. `tls=pinned`:
 * HTTPS to the coordinator itself, which presents the certificate `fp`
 * names (what `ferry tokens create` hands out: the token never crosses the
 * network in clear). `tls=1`: HTTPS through something with a CA-signed
 * certificate (a reverse proxy). Neither: plain HTTP.
 */
import { z } from 'zod';
import { KeyIdSchema } from './identity.js';
import { normalizeFingerprint } from './tls-pinning.js';

export const JoinStringSchema = z.object({
  httpUrl: z.url(),
  coordinatorKey: KeyIdSchema,
  tlsFingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  token: z.string().min(16).max(256),
  /** HTTPS with the certificate `tlsFingerprint` pinned (see protocol/pinned-fetch.ts). */
  pinnedTls: z.boolean(),
});
export type JoinString = z.infer<typeof JoinStringSchema>;

export class JoinStringError extends Error {
  override readonly name = 'JoinStringError';
  readonly code = 'BAD_JOIN_STRING';
}

/** A join string; with `pinnedTls`, `httpUrl` may be the coordinator's plain-HTTP URL: the agent uses HTTPS on the same port. */
export function formatJoinString(join: { httpUrl: string; coordinatorKey: string; tlsFingerprint: string; token: string; pinnedTls?: boolean }): string {
  const url = new URL(join.httpUrl);
  const tls = join.pinnedTls ? '&tls=pinned' : url.protocol === 'https:' ? '&tls=1' : '';
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
    if (!value) throw new JoinStringError(`the join string has no '${name}' (expected ferry://HOST:PORT?coordinator=…&fp=…&token=…, as \`ferry tokens create\` prints it)`);
    return value;
  };
  const fingerprint = field('fp');
  let tlsFingerprint: string;
  try {
    tlsFingerprint = normalizeFingerprint(fingerprint);
  } catch (error) {
    throw new JoinStringError(`the join string's 'fp': ${(error as Error).message}`);
  }
  const tls = url.searchParams.get('tls');
  if (tls !== null && tls !== '1' && tls !== 'pinned') throw new JoinStringError(`the join string's 'tls' is '${tls}', not 'pinned' or '1'`);
  const parsed = JoinStringSchema.safeParse({
    httpUrl: `${tls === null ? 'http' : 'https'}://${url.host}`,
    pinnedTls: tls === 'pinned',
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
