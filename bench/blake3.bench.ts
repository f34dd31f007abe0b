/**
 * BLAKE3 throughput: our TypeScript tree hashing with outboard vs the
 * native `blake3` package (whole-blob hash, for reference), same run,
 * 64 MiB of data fed in 1 MiB chunks. Run: npm run bench:blake3
 */
import { hash as nativeBlake3 } from 'blake3';
import { createCipheriv } from 'node:crypto';
import { OutboardBuilder } from '../castore/blake3/index.js';
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
const native = await bestOf(runs, () => nativeBlake3(data));
report('blake3', [
  { what: 'native blake3 (whole blob, reference)', seconds: native.toFixed(4), rate: mbPerSecond(size, native), ratio: '1.00' },
  { what: 'ferry OutboardBuilder (tree + outboard)', seconds: ours.toFixed(4), rate: mbPerSecond(size, ours), ratio: (ours / native).toFixed(2) },
]);
