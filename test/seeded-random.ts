/**
 * Seeded pseudo-random numbers for tests and benchmarks: the same seed
 * gives the same sequence, so a failing case can be reproduced from its
 * seed, and a benchmark's workload is the same in every run. xorshift32:
 * small and fast, and not for anything secret.
 */

/** A generator of integers in [0, n), from `seed` (0 counts as 1: xorshift never leaves 0). */
export function seededRandom(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** `length` bytes from seededRandom(seed): incompressible-looking content that a seed names. */
export function seededBytes(seed: number, length: number): Uint8Array {
  const random = seededRandom(seed);
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = random(256);
  return bytes;
}
