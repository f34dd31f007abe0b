// Unit tests of diff-closures' rules without Nix (test/config-diff-real-nix.test.ts
// compares the same functions with Nix 2.8's `nix store diff-closures`).
import { describe, expect, it } from 'vitest';
import { closurePackageOf, diffClosures, formatKibDelta, formatPackageDiff, showVersions, type ClosurePath } from './closure-diff.js';
import { parseDrvName, stripOutputName } from './drv-name.js';

const HASHES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b'].map((c) => c.repeat(32));
let next = 0;
const path = (name: string, narSize: number): ClosurePath => ({ storePath: `/nix/store/${HASHES[next++ % HASHES.length]}-${name}`, narSize });

describe('store path names as Nix reads them', () => {
  it('splits name and version at the first dash not followed by a letter (DrvName)', () => {
    expect(parseDrvName('apache-httpd-2.0.48')).toEqual({ name: 'apache-httpd', version: '2.0.48' });
    expect(parseDrvName('perl5.36.0-JSON-4.10')).toEqual({ name: 'perl5.36.0-JSON', version: '4.10' });
    expect(parseDrvName('hello')).toEqual({ name: 'hello', version: '' });
    // Not only digits: any non-letter splits; a trailing dash does not.
    expect(parseDrvName('foo--bar')).toEqual({ name: 'foo', version: '-bar' });
    expect(parseDrvName('foo-_1')).toEqual({ name: 'foo', version: '_1' });
    expect(parseDrvName('foo-')).toEqual({ name: 'foo-', version: '' });
  });

  it('strips an output suffix first, ambiguous as Nix is about it', () => {
    expect(stripOutputName('glibc-2.38-27-bin')).toEqual({ name: 'glibc-2.38-27', outputName: 'bin' });
    expect(stripOutputName('gcc-12-lib64')).toEqual({ name: 'gcc-12', outputName: 'lib64' });
    expect(stripOutputName('hello-2.12')).toEqual({ name: 'hello-2.12', outputName: '' });
    expect(stripOutputName('hello-unstable')).toEqual({ name: 'hello', outputName: 'unstable' });
    expect(stripOutputName('ferry-fixture-app')).toEqual({ name: 'ferry-fixture', outputName: 'app' });
    expect(closurePackageOf(`/nix/store/${'a'.repeat(32)}-openssl-3.0.13-dev`)).toEqual({ name: 'openssl', version: '3.0.13' });
  });
});

describe('diffClosures', () => {
  it("lists version changes, additions and removals, and size changes of 8 KiB or more, by name", () => {
    const same = path('same-1.0', 4_000);
    const before = [path('zlib-1.3', 100_000), path('openssl-3.0.13', 500_000), path('openssl-3.0.13-dev', 50_000), path('gone-1.0', 10), same, path('tiny-1.0', 1_000)];
    const after = [path('zlib-1.3.1', 100_000), path('openssl-3.0.13', 520_000), path('openssl-3.0.13-dev', 50_000), path('new-2.0', 9_000), same, path('tiny-1.0', 1_000 + 8_191)];
    const diff = diffClosures(before, after);
    expect(diff.packages.map(formatPackageDiff)).toEqual(['gone: 1.0 → ∅', 'new: ∅ → 2.0, +8.8 KiB', 'openssl: +19.5 KiB', 'zlib: 1.3 → 1.3.1']);
    // tiny was rebuilt (another path) but grew by less than 8 KiB: not listed, counted.
    expect(diff.unlistedChanged).toBe(1);
    expect(diff.addedPaths).toBe(5);
    expect(diff.removedPaths).toBe(5);
    expect(diff.before).toEqual({ paths: 6, narSize: 655_010 });
    const openssl = diff.packages.find((entry) => entry.name === 'openssl')!;
    expect(openssl).toMatchObject({ sizeBefore: 550_000, sizeAfter: 570_000, sizeDelta: 20_000, sizeShown: true, removedVersions: [], addedVersions: [] });
    expect(openssl.removedPaths).toHaveLength(2);
  });

  it('groups several versions of one name, and shows the empty version as ε', () => {
    const diff = diffClosures([path('python3-3.11.8', 10), path('python3-3.12.2', 10), path('tool', 10)], [path('python3-3.12.2', 10), path('tool-1.0', 10)]);
    expect(diff.packages.map(formatPackageDiff)).toEqual(['python3: 3.11.8 → ∅', 'tool: ε → 1.0']);
    expect(showVersions(['', '1.0', 'b'])).toBe('1.0, b, ε');
  });

  it('an identical closure has no entries', () => {
    const same = [path('a-1', 1), path('b-2', 2)];
    expect(diffClosures(same, same)).toMatchObject({ packages: [], unlistedChanged: 0, addedPaths: 0, removedPaths: 0 });
  });
});

describe('formatKibDelta, as printf %+.1f of bytes / 1024.0', () => {
  it.each([
    [12_595, '+12.3 KiB'],
    [-6_755_635, '-6597.3 KiB'],
    [8_192, '+8.0 KiB'],
    // Exact ties round to even (8.25 -> 8.2, 8.75 -> 8.8), as glibc does and toFixed does not.
    [8_448, '+8.2 KiB'],
    [8_960, '+8.8 KiB'],
    [-8_448, '-8.2 KiB'],
    [8_449, '+8.3 KiB'],
  ])('%i bytes -> %s', (bytes, text) => {
    expect(formatKibDelta(bytes)).toBe(text);
  });
});
