// Unit tests of Nix's formats that need no Nix: nix32, hash notations,
// store paths, narinfo, keys and signatures. test/nix-formats-real-nix.test.ts
// checks the same functions against real Nix.
import { describe, expect, it } from 'vitest';
import { decodeNixBase32, encodeNixBase32 } from './base32.js';
import { NixError } from './errors.js';
import { formatNixHash, hashBytes, parseNixHash } from './hash.js';
import { narInfoFingerprint, parseNarInfo, serializeNarInfo } from './narinfo.js';
import {
  formatNixPublicKey,
  formatNixSecretKey,
  generateNixSecretKey,
  nixPublicKeyOf,
  parseNixPublicKey,
  parseNixSecretKey,
  signNarInfo,
  verifyNarInfoSignature,
} from './signing.js';
import { parseStorePath, splitStorePathPrefix } from './store-path.js';

const code = (body: () => unknown): string => {
  try {
    body();
  } catch (error) {
    expect(error).toBeInstanceOf(NixError);
    return (error as NixError).code;
  }
  throw new Error('expected a NixError');
};

describe('nix32', () => {
  it('encodes the sha256 of the empty string as Nix does', () => {
    expect(formatNixHash(hashBytes('sha256', ''), 'nix32')).toBe('sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73');
  });
  it('round-trips and refuses bad characters and padding bits', () => {
    for (let length = 0; length < 70; length += 7) {
      const bytes = new Uint8Array(length).map((_, i) => (i * 37 + length) & 0xff);
      expect(Buffer.from(decodeNixBase32(encodeNixBase32(bytes), length)).equals(Buffer.from(bytes))).toBe(true);
    }
    expect(code(() => decodeNixBase32('e'.repeat(32), 20))).toBe('BAD_BASE32');
    expect(code(() => decodeNixBase32('z'.repeat(52), 32))).toBe('BAD_BASE32');
  });
});

describe('hash notations', () => {
  const hash = hashBytes('sha256', 'ferry');
  it('parses every notation to the same digest', () => {
    for (const format of ['nix32', 'base16', 'base64', 'sri'] as const) {
      const parsed = parseNixHash(formatNixHash(hash, format));
      expect(Buffer.from(parsed.digest).equals(Buffer.from(hash.digest)), format).toBe(true);
    }
    expect(parseNixHash(Buffer.from(hash.digest).toString('hex'), 'sha256').algorithm).toBe('sha256');
  });
  it('refuses unknown algorithms, wrong lengths and a different expected algorithm', () => {
    expect(code(() => parseNixHash('sha3:abcd'))).toBe('BAD_HASH');
    expect(code(() => parseNixHash('sha256:abcd'))).toBe('BAD_HASH');
    expect(code(() => parseNixHash(formatNixHash(hashBytes('sha1', 'x'), 'nix32'), 'sha256'))).toBe('BAD_HASH');
    expect(code(() => parseNixHash('0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73'))).toBe('BAD_HASH');
  });
});

describe('store paths', () => {
  const valid = '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12';
  it('parses valid paths and splits subpaths', () => {
    expect(parseStorePath(valid)).toMatchObject({ hashPart: '0c6kzph7l0dcbfmjap64f0czdafn3b7x', name: 'hello-2.12' });
    expect(splitStorePathPrefix(`${valid}/bin/hello`)).toEqual({ storePath: valid, rest: 'bin/hello' });
    expect(splitStorePathPrefix('/usr/bin/env')).toBeUndefined();
  });
  for (const [what, path] of [
    ['another directory', '/usr/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello'],
    ['a subpath', `${valid}/bin`],
    ['a short hash', '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7-hello'],
    ['an e in the hash', '/nix/store/ec6kzph7l0dcbfmjap64f0czdafn3b7x-hello'],
    ['an empty name', '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-'],
    ['a dot name', '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-.hidden'],
    ['a bad character', '/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-a b'],
    ['a long name', `/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-${'a'.repeat(212)}`],
  ]) {
    it(`refuses ${what}`, () => expect(code(() => parseStorePath(path!))).toBe('BAD_STORE_PATH'));
  }
});

describe('narinfo', () => {
  const text = [
    'StorePath: /nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12',
    'URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz',
    'Compression: xz',
    'FileHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3',
    'FileSize: 50000',
    'NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73',
    'NarSize: 226560',
    'References: 0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12 1b9p07z77phvv2hf6gm9f28syp39f1ag-glibc-2.35',
    'Deriver: 5ljn2mq1qs0w7l4iqkhm7p2r3k6q3s0h-hello-2.12.drv',
    'Sig: cache.nixos.org-1:AAAA',
    '',
  ].join('\n');
  it('parses and serialises back to the same text', () => {
    const info = parseNarInfo(text);
    expect(info.references).toHaveLength(2);
    expect(serializeNarInfo(info)).toBe(text);
  });
  it('refuses missing keys, duplicates, bad sizes and bad references, naming the line', () => {
    expect(() => parseNarInfo(text.replace(/NarSize.*\n/, ''))).toThrow(/no 'NarSize'/);
    expect(() => parseNarInfo(`${text}NarSize: 1\n`)).toThrow(/line 11: 'NarSize' appears twice/);
    expect(() => parseNarInfo(text.replace('NarSize: 226560', 'NarSize: -1'))).toThrow(/line 7: bad NarSize/);
    expect(() => parseNarInfo(text.replace('1b9p07z77', '../../etc'))).toThrow(/line 8: bad References/);
    expect(() => parseNarInfo('garbage')).toThrow(/line 1/);
  });
  it('fingerprints with full, sorted reference paths', () => {
    expect(narInfoFingerprint('/nix/store/x', 'sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73', 5, ['/nix/store/b', '/nix/store/a'])).toBe(
      '1;/nix/store/x;sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;5;/nix/store/a,/nix/store/b',
    );
  });
});

describe('signing keys and signatures', () => {
  it('signs and verifies a narinfo; another key or a changed field fails', () => {
    const key = generateNixSecretKey('ferry-test-1');
    const other = generateNixSecretKey('ferry-test-1');
    const info = parseNarInfo(
      'StorePath: /nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello\nURL: nar/x.nar\nNarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\nNarSize: 1\n',
    );
    info.sigs.push(signNarInfo(key, info));
    expect(verifyNarInfoSignature(info, [nixPublicKeyOf(key)])).toEqual({ valid: true, keyName: 'ferry-test-1' });
    expect(verifyNarInfoSignature(info, [nixPublicKeyOf(other)]).valid).toBe(false);
    expect(verifyNarInfoSignature({ ...info, narSize: 2 }, [nixPublicKeyOf(key)]).valid).toBe(false);
  });
  it('round-trips key files and refuses malformed or inconsistent keys', () => {
    const key = generateNixSecretKey('k-1');
    expect(parseNixSecretKey(formatNixSecretKey(key))).toEqual(key);
    expect(parseNixPublicKey(formatNixPublicKey(nixPublicKeyOf(key)))).toEqual(nixPublicKeyOf(key));
    expect(code(() => parseNixPublicKey('nokey'))).toBe('BAD_KEY');
    expect(code(() => parseNixPublicKey('k:AAAA'))).toBe('BAD_KEY');
    const mismatched = { ...key, publicKey: generateNixSecretKey('x').publicKey };
    expect(() => parseNixSecretKey(formatNixSecretKey(mismatched))).toThrow(/does not match its seed/);
  });
});
