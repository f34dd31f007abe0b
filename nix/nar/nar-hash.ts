/** NarHash and NarSize of a NAR byte stream, in the form Nix records them. */
import { createHash } from 'node:crypto';
import { encodeNixBase32 } from '../base32.js';

export interface NarHashResult {
  /** `sha256:<nix32>`, as in narinfo files and `nix-store -q --hash`. */
  narHash: string;
  narSize: number;
}

/** Hashes the bytes as they are (it does not validate them: decode first if they are untrusted). */
export async function narHash(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<NarHashResult> {
  const sha256 = createHash('sha256');
  let narSize = 0;
  for await (const chunk of source) {
    sha256.update(chunk);
    narSize += chunk.length;
  }
  return { narHash: `sha256:${encodeNixBase32(sha256.digest())}`, narSize };
}
