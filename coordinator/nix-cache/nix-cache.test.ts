// The Nix cache's building blocks without Nix: Range header decisions and
// netrc credentials (NAR ranges are castore's: castore/nar-export.test.ts).
import { describe, expect, it } from 'vitest';
import { Identity } from '../../protocol/identity.js';
import { decideRange } from './http-range.js';
import { nixCacheCredentialMessage, nixCacheNetrcLine, nixCachePassword, verifyNixCacheAuthorization } from './credentials.js';
import { nixKeyName } from './cache-key.js';

describe('decideRange', () => {
  it('honours one byte range, clipped, and serves anything else whole', () => {
    expect(decideRange(undefined, 100)).toEqual({ kind: 'full' });
    expect(decideRange('bytes=0-9', 100)).toEqual({ kind: 'partial', start: 0, end: 10 });
    expect(decideRange('bytes=90-', 100)).toEqual({ kind: 'partial', start: 90, end: 100 });
    expect(decideRange('bytes=90-1000', 100)).toEqual({ kind: 'partial', start: 90, end: 100 });
    expect(decideRange('bytes=-10', 100)).toEqual({ kind: 'partial', start: 90, end: 100 });
    expect(decideRange('bytes=-1000', 100)).toEqual({ kind: 'partial', start: 0, end: 100 });
    expect(decideRange('bytes=100-', 100)).toEqual({ kind: 'unsatisfiable' });
    expect(decideRange('bytes=-0', 100)).toEqual({ kind: 'unsatisfiable' });
    expect(decideRange('bytes=5-3', 100)).toEqual({ kind: 'full' });
    expect(decideRange('bytes=0-1,5-6', 100)).toEqual({ kind: 'full' });
    expect(decideRange('items=0-1', 100)).toEqual({ kind: 'full' });
    expect(decideRange('bytes=1-2', 100, '"other"', '"this"')).toEqual({ kind: 'full' });
    expect(decideRange('bytes=1-2', 100, '"this"', '"this"')).toEqual({ kind: 'partial', start: 1, end: 3 });
  });
});

describe('netrc credentials', () => {
  const basic = (login: string, password: string) => `Basic ${Buffer.from(`${login}:${password}`).toString('base64')}`;

  it('derive a stable password that verifies for its key only', () => {
    const key = Identity.generate();
    const password = nixCachePassword(key);
    expect(nixCachePassword(key)).toBe(password); // ed25519 is deterministic
    expect(new TextDecoder().decode(nixCacheCredentialMessage(key.keyId))).toBe(`ferry-nix-cache-v1\n${key.keyId}`);
    expect(verifyNixCacheAuthorization(basic(key.keyId, password))).toEqual({ ok: true, keyId: key.keyId });
    expect(nixCacheNetrcLine('http://10.1.2.3:7070', key)).toBe(`machine 10.1.2.3 login ${key.keyId} password ${password}`);
    expect(nixCacheNetrcLine('http://[::1]:7070', key)).toMatch(/^machine ::1 login /);

    const other = Identity.generate();
    expect(verifyNixCacheAuthorization(basic(other.keyId, password))).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(verifyNixCacheAuthorization(basic(key.keyId, nixCachePassword(other)))).toMatchObject({ ok: false, reason: 'bad-signature' });
    expect(verifyNixCacheAuthorization(undefined)).toMatchObject({ ok: false, reason: 'missing' });
    expect(verifyNixCacheAuthorization('Bearer x')).toMatchObject({ ok: false, reason: 'malformed' });
    expect(verifyNixCacheAuthorization(basic('nope', password))).toMatchObject({ ok: false, reason: 'malformed' });
    expect(verifyNixCacheAuthorization(basic(key.keyId, 'short'))).toMatchObject({ ok: false, reason: 'malformed' });
  });

  it('names the signing key after the coordinator, as Nix allows', () => {
    expect(nixKeyName('prod')).toBe('prod-1');
    expect(nixKeyName('a:b c')).toBe('a-b-c-1');
    expect(nixKeyName('')).toBe('ferry-1');
  });
});
