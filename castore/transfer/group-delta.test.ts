// What a receiver accepts of a `blobs.delta` reply's runs (a coordinator's word, checked anyway):
// in order, inside the blob, and no more bytes in one reply than a coordinator ever sends
// (MAX_BATCH_BYTES): the receiver holds them in memory. The other cases (real coordinator, both
// transports, damaged bytes) are in test/data-plane-group-delta.test.ts.
import { describe, expect, it } from 'vitest';
import { DataError } from '../../protocol/data-client.js';
import { MAX_BATCH_BYTES } from '../../protocol/data-protocol.js';
import { GROUP_SIZE } from '../blake3/index.js';
import type { Digest, FileNode } from '../node.js';
import { checkRuns, packageName } from './group-delta.js';

const blob = (size: number): FileNode => ({ type: 'file', digest: '0'.repeat(64) as Digest, size, executable: false });

describe('a delta reply’s runs', () => {
  it('counts the bytes of runs in order inside the blob, the last group short', () => {
    expect(checkRuns([[0, 1], [3, 2]], blob(4 * GROUP_SIZE + 100))).toBe(2 * GROUP_SIZE + 100);
  });

  it('refuses runs out of order, overlapping or past the blob (BAD_RESPONSE)', () => {
    for (const runs of [[[2, 1], [0, 1]], [[0, 2], [1, 1]], [[4, 2]], [[5, 1]]] as [number, number][][]) {
      expect(() => checkRuns(runs, blob(5 * GROUP_SIZE)), JSON.stringify(runs)).toThrow(DataError);
    }
  });

  it('refuses runs that take one reply past MAX_BATCH_BYTES, whatever the blob’s size', () => {
    const huge = blob(4 * MAX_BATCH_BYTES);
    const groups = MAX_BATCH_BYTES / GROUP_SIZE;
    expect(checkRuns([[0, groups]], huge)).toBe(MAX_BATCH_BYTES);
    expect(() => checkRuns([[0, groups + 1]], huge)).toThrow(/more than/);
    expect(() => checkRuns([[0, 1]], huge, MAX_BATCH_BYTES)).toThrow(/more than/);
  });
});

describe('versions of a package', () => {
  it('are matched by name without the version, as parseDrvName splits it', () => {
    expect(packageName('hello-2.12.1')).toBe('hello');
    expect(packageName('perl5.36.0-JSON-4.10')).toBe('perl5.36.0-JSON');
    expect(packageName('glibc-2.38-27-bin')).toBe('glibc');
    expect(packageName('ferry-app')).toBe('ferry-app');
  });
});
