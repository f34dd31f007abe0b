/**
 * The narinfo the cache serves for a registered store path, and the NAR
 * URLs it points to: `nar/<store path hash>-<NarHash nix32>.nar` (or
 * `.nar.zst`). Naming the store path lets a NAR request find its castore
 * root with one index lookup; naming the NarHash makes a URL stale, never
 * wrong, if the path were ever registered with other contents.
 */
import type { StorePathInfo } from '../../castore/index.js';
import { serializeNarInfo, storePathBaseName, type NarInfo } from '../../nix/index.js';
import type { NixCacheKey } from './cache-key.js';

export type ServedCompression = 'none' | 'zstd';

const NIX32 = '[0-9a-df-np-sv-z]';
/** `nar/<hash part>-<nar hash>.nar[.zst]`: the NARs this cache serves from castore. */
export const SERVED_NAR_PATTERN = new RegExp(`^nar/(${NIX32}{32})-(${NIX32}{52})\\.nar(\\.zst)?$`);

/** The URL (relative to the cache) a narinfo gives for the NAR of `info`, compressed as asked. */
export function servedNarUrl(info: StorePathInfo, compression: ServedCompression): string {
  const hashPart = storePathBaseName(info.storePath).slice(0, 32);
  return `nar/${hashPart}-${info.narHash.slice('sha256:'.length)}.nar${compression === 'zstd' ? '.zst' : ''}`;
}

/** `name:base64`, nothing that could break a narinfo line. */
const SIGNATURE = /^[A-Za-z0-9._+-]{1,128}:[A-Za-z0-9+/]{1,200}={0,2}$/;

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * The narinfo text for `info`: signed with the coordinator's key (first),
 * then the signatures the path arrived with from other keys (e.g. an
 * upstream cache's), so clients trusting either accept it. Uncompressed NARs
 * have FileHash/FileSize (they equal NarHash/NarSize); zstd ones are
 * compressed on the fly, so their file hash and size are not known and not
 * given (Nix does not need them).
 */
export function servedNarInfo(info: StorePathInfo, compression: ServedCompression, key: NixCacheKey): string {
  const ours = key.sign(info.storePath, info.narHash, info.narSize, info.references);
  const narInfo: NarInfo = {
    storePath: info.storePath,
    url: servedNarUrl(info, compression),
    compression,
    ...(compression === 'none' ? { fileHash: info.narHash, fileSize: info.narSize } : {}),
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references.map(baseName).sort(),
    ...(info.deriver ? { deriver: baseName(info.deriver) } : {}),
    sigs: [ours, ...info.signatures.filter((sig) => SIGNATURE.test(sig) && !sig.startsWith(`${key.name}:`))],
    ...(info.ca ? { ca: info.ca } : {}),
  };
  return serializeNarInfo(narInfo);
}
