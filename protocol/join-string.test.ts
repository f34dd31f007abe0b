import { describe, expect, it } from 'vitest';
import { formatJoinString, parseJoinString } from './join-string.js';

const base = { coordinatorKey: 'c0'.repeat(32), tlsFingerprint: 'ab'.repeat(32), token: 'tok_0123456789abcdef.secret' };

describe('join strings', () => {
  it('round-trip the three ways to reach a coordinator', () => {
    for (const [httpUrl, pinnedTls, parsedUrl] of [
      ['http://10.0.0.5:7070', false, 'http://10.0.0.5:7070'],
      ['http://10.0.0.5:7070', true, 'https://10.0.0.5:7070'],
      ['https://ferry.example.org', false, 'https://ferry.example.org'],
    ] as const) {
      const text = formatJoinString({ ...base, httpUrl, pinnedTls });
      expect(parseJoinString(text)).toEqual({ ...base, httpUrl: parsedUrl, pinnedTls });
    }
  });

  it('names what is wrong', () => {
    const good = formatJoinString({ ...base, httpUrl: 'http://h:1', pinnedTls: true });
    expect(() => parseJoinString(good.replace('tls=pinned', 'tls=yes'))).toThrow(/'tls' is 'yes'/);
    expect(() => parseJoinString(good.replace(/fp=[0-9a-f]+/, 'fp=12'))).toThrow(/'fp'/);
    expect(() => parseJoinString(good.replace('ferry://', 'http://'))).toThrow(/starts with ferry:\/\//);
    // A missing part is named once, with the form expected.
    expect(() => parseJoinString('ferry://host:7070')).toThrow(/^the join string has no 'fp' \(expected ferry:\/\/HOST:PORT\?/);
  });
});
