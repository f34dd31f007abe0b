/**
 * Throughput of reference normalization (castore/references) on large
 * buffers, one core: MB/s of normalizeReferences (one shot), of
 * ReferenceNormalizer fed 1 MiB chunks, and of restoreReferences, on
 *   - random: 100 MB of seeded random bytes with a hash part every ~64 KiB;
 *   - node: /usr/bin/node (99 MB, a real ELF: code, strings, tables), with
 *     hash parts planted the same way;
 *   - nix32 text: 100 MB of random nix32 characters (no hash part among
 *     them: every window is a candidate) — the worst case, a file that is
 *     one long list of hashes.
 * Hash parts: 40 (a large closure's direct references). Median of 5.
 *
 *   npx tsx bench/normalize-references.bench.ts
 */
import { existsSync, readFileSync } from 'node:fs';
import { NIX_BASE32_ALPHABET } from '../nix/index.js';
import { HashPartSet, normalizeReferences, ReferenceNormalizer, restoreReferences } from '../castore/references/index.js';
import { seededBytes, seededRandom } from '../test/seeded-random.js';

const MB = 1e6;
const RUNS = 5;
const random = seededRandom(20);

function hashParts(count: number): string[] {
  return Array.from({ length: count }, () => Array.from({ length: 32 }, () => NIX_BASE32_ALPHABET[random(32)]).join(''));
}

function planted(bytes: Uint8Array, parts: readonly string[]): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let at = random(65536); at + 32 <= out.length; at += 32 + random(2 * 65536)) out.set(Buffer.from(parts[random(parts.length)]!), at);
  return out;
}

function median(f: () => void): number {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now();
    f();
    times.push(performance.now() - start);
  }
  return times.sort((a, b) => a - b)[Math.floor(RUNS / 2)]!;
}

const parts = hashParts(40);
const set = new HashPartSet(parts);
const inputs: [string, Uint8Array][] = [['random', planted(seededBytes(1, 100 * MB), parts)]];
if (existsSync('/usr/bin/node')) inputs.push(['node', planted(readFileSync('/usr/bin/node'), parts)]);
else process.stdout.write('node: skipped, /usr/bin/node is not there\n');
const text = new Uint8Array(100 * MB);
for (let i = 0; i < text.length; i++) text[i] = NIX_BASE32_ALPHABET.charCodeAt(random(32));
inputs.push(['nix32 text', text]);

for (const [name, bytes] of inputs) {
  const { normalized, refs } = normalizeReferences(bytes, set);
  const oneShot = median(() => normalizeReferences(bytes, set));
  const chunked = median(() => {
    const normalizer = new ReferenceNormalizer(set);
    for (let at = 0; at < bytes.length; at += 1 << 20) normalizer.push(bytes.subarray(at, at + (1 << 20)));
    normalizer.end();
  });
  const restore = median(() => restoreReferences(normalized, refs, set));
  const copy = median(() => new Uint8Array(bytes));
  const rate = (ms: number): number => Math.round(bytes.length / MB / (ms / 1000));
  process.stdout.write(
    `${JSON.stringify({ input: name, MB: Math.round(bytes.length / MB), sites: refs.length, normalizeMBps: rate(oneShot), chunked1MiBMBps: rate(chunked), restoreMBps: rate(restore), copyMBps: rate(copy) })}\n`,
  );
}
