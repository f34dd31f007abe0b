// The Nix cache's building blocks without Nix: NAR ranges rebuilt from
// castore equal slices of exportNar's bytes, Range header decisions, and
// netrc credentials.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Castore, exportNar, ingestStorePath, type Node } from '../../castore/index.js';
import { dumpPath } from '../../nix/index.js';
import { Identity } from '../../protocol/identity.js';
import { decideRange } from './http-range.js';
import { nixCacheCredentialMessage, nixCacheNetrcLine, nixCachePassword, verifyNixCacheAuthorization } from './credentials.js';
import { nixKeyName } from './cache-key.js';
import { narRange } from './nar-range.js';

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

describe('narRange', () => {
  let dir: string;
  let store: Castore;
  const roots: Record<string, Node> = {};

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-nar-range-'));
    store = Castore.open(path.join(dir, 'castore'));
    const tree = path.join(dir, 'tree');
    mkdirSync(path.join(tree, 'bin'), { recursive: true });
    mkdirSync(path.join(tree, 'empty-dir'));
    mkdirSync(path.join(tree, 'lib', 'deep', 'deeper'), { recursive: true });
    writeFileSync(path.join(tree, 'bin', 'run'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    writeFileSync(path.join(tree, 'empty'), '');
    writeFileSync(path.join(tree, 'lib', 'seven'), 'seven!!'); // padding
    writeFileSync(path.join(tree, 'lib', 'deep', 'deeper', 'large'), Buffer.alloc(700_000, 7)); // a file blob, not inline
    for (let i = 0; i < 50; i++) writeFileSync(path.join(tree, 'lib', `f${i}`), `file ${i} `.repeat(i * 37));
    symlinkSync('../lib/seven', path.join(tree, 'bin', 'link'));
    const file = path.join(dir, 'single');
    writeFileSync(file, Buffer.alloc(300_001, 3));
    const link = path.join(dir, 'link');
    symlinkSync('/nix/store/somewhere', link);
    for (const [name, source] of Object.entries({ tree, file, link })) {
      const info = await ingestStorePath(store, dumpPath(source), { storePath: `/nix/store/${'a'.repeat(32)}-${name}`, references: [] });
      roots[name] = info.root;
    }
  });

  afterAll(() => {
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('streams exactly the NAR exportNar makes, for directories, files and symlinks', async () => {
    for (const root of Object.values(roots)) {
      expect((await collect(narRange(store, root))).equals(await collect(exportNar(store, root)))).toBe(true);
    }
  });

  it('streams any byte range as the same slice of the NAR', async () => {
    for (const root of Object.values(roots)) {
      const nar = await collect(exportNar(store, root));
      const cuts = [0, 1, 7, 8, 9, 63, 64, 65, 100, 1000, nar.length - 700_001, nar.length - 9, nar.length - 1].filter((n) => n >= 0 && n < nar.length);
      let seed = 1;
      for (let i = 0; i < 40; i++) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        cuts.push(seed % nar.length);
      }
      for (const start of cuts) {
        for (const length of [1, 8, 13, 4096, 70_000, nar.length]) {
          const end = Math.min(start + length, nar.length);
          const slice = await collect(narRange(store, root, { start, end }));
          expect(slice.equals(nar.subarray(start, end)), `range ${start}-${end} of ${nar.length}`).toBe(true);
        }
      }
      expect((await collect(narRange(store, root, { start: 5, end: 5 }))).length).toBe(0);
    }
  });
});

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
