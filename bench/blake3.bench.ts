/**
 * BLAKE3 throughput: our TypeScript tree hashing with outboard vs the
 * whole-input hash (`blake3`, native binding at this size; for reference),
 * same run, 64 MiB of data fed in 1 MiB chunks. Then small inputs, where
 * `blake3` hashes in TypeScript up to SMALL_INPUT_MAX bytes: the TypeScript
 * tree hash vs a native hasher per input, per size (the rationale of
 * SMALL_INPUT_MAX). Run: npm run bench:blake3
 */
import { createCipheriv } from 'node:crypto';
import { blake3, blake3Hasher, OutboardBuilder } from '../castore/blake3/index.js';
import { SMALL_INPUT_MAX } from '../castore/blake3/hash.js';
import { bestOf, mbPerSecond, report } from './harness.js';

const runs = Number(process.env.BENCH_RUNS ?? 5);
const size = 64 * 1024 * 1024;
const data = createCipheriv('aes-128-ctr', Buffer.alloc(16, 2), Buffer.alloc(16)).update(Buffer.alloc(size));
const chunk = 1 << 20;

const ours = await bestOf(runs, () => {
  const builder = new OutboardBuilder();
  for (let i = 0; i < size; i += chunk) builder.update(data.subarray(i, i + chunk));
  return builder.finish();
});
const native = await bestOf(runs, () => blake3(data));

/** Microseconds per call of `hash`, best of `runs` rounds of `count` calls. */
async function microsecondsEach(count: number, hash: () => unknown): Promise<string> {
  return (((await bestOf(runs, () => {
    for (let i = 0; i < count; i++) hash();
  })) / count) * 1e6).toFixed(1);
}

const small: Record<string, string>[] = [];
for (const length of [1024, SMALL_INPUT_MAX, 2 * SMALL_INPUT_MAX]) {
  const bytes = data.subarray(0, length);
  const typescript = await microsecondsEach(2000, () => {
    const builder = new OutboardBuilder();
    builder.update(bytes);
    return builder.finish();
  });
  const nativeEach = await microsecondsEach(2000, () => {
    const hasher = blake3Hasher();
    hasher.update(bytes);
    return hasher.digest();
  });
  small.push({ what: `${length} B, µs per hash: TypeScript / native hasher / blake3()`, seconds: '', rate: `${typescript} / ${nativeEach} / ${await microsecondsEach(2000, () => blake3(bytes))}`, ratio: '' });
}

report('blake3', [
  { what: 'blake3() whole input (native binding, reference)', seconds: native.toFixed(4), rate: mbPerSecond(size, native), ratio: '1.00' },
  { what: 'ferry OutboardBuilder (tree + outboard)', seconds: ours.toFixed(4), rate: mbPerSecond(size, ours), ratio: (ours / native).toFixed(2) },
  ...small,
]);
