/**
 * Whole-input BLAKE3 with the native implementation, for blobs verified
 * whole (no tree needed). The `blake3` package wraps each hasher in a
 * Node Transform stream; for ~20,000 small files that construction costs
 * more than the hashing, so the native binding is called directly when it
 * is there (it is what the package itself loads), else through the package.
 */
import { createHash as packageHasher, hash as packageHash } from 'blake3';
import { createRequire } from 'node:module';

interface NativeHasher {
  update(bytes: Uint8Array): void;
  digest(length?: number): Uint8Array;
}

function loadBinding(): { createHash(): NativeHasher } | undefined {
  try {
    return createRequire(import.meta.url)('@c4312/blake3-native/build/Release/blake3.node') as { createHash(): NativeHasher };
  } catch {
    return undefined;
  }
}

const binding = loadBinding();

/** The 32-byte BLAKE3 hash of `bytes` (identical to `b3sum`). */
export const nativeBlake3 = binding
  ? (bytes: Uint8Array): Uint8Array => {
      const hasher = binding.createHash();
      hasher.update(bytes);
      return hasher.digest();
    }
  : (bytes: Uint8Array): Uint8Array => packageHash(bytes) as Uint8Array;

/** An incremental native BLAKE3-256 hasher: `update` as bytes come, `digest` once at the end. */
export function nativeBlake3Hasher(): NativeHasher {
  if (binding) return binding.createHash();
  const hasher = packageHasher();
  return { update: (bytes) => void hasher.update(bytes), digest: () => hasher.digest() as Uint8Array };
}
