/** Ingesting a NAR as a registered Nix store path, verified against its claimed NarHash. */
import { CastoreError } from './errors.js';
import { ingestNar, type NarIngestOptions, type NarIngestResult } from './nar-ingest.js';
import type { Castore } from './store/castore.js';
import type { StorePathInfo } from './store/store-path-info.js';

/** What a pusher claims about a store path, besides its contents. */
export interface StorePathMetadata {
  storePath: string;
  /** When given, the NAR must hash to exactly this (`sha256:<nix32>`) and have this size. */
  narHash?: string;
  narSize?: number;
  references: string[];
  deriver?: string;
  ca?: string;
  signatures?: string[];
}

/**
 * Ingests one store path's NAR and registers it, all in one commit. Refuses
 * (BLOB_CORRUPT) a NAR whose hash or size differs from the claimed ones, and
 * a malformed NAR (NixError from the decoder); after any refusal nothing of
 * it is visible in the store.
 */
export async function ingestStorePath(
  store: Castore,
  source: AsyncIterable<Uint8Array>,
  metadata: StorePathMetadata,
  options: NarIngestOptions = {},
): Promise<StorePathInfo & Pick<NarIngestResult, 'narHash' | 'narSize'>> {
  const session = store.beginIngest();
  try {
    const result = await ingestNar(session, source, options);
    if (metadata.narHash !== undefined && metadata.narHash !== result.narHash) {
      throw new CastoreError('BLOB_CORRUPT', `NAR of ${metadata.storePath} hashes to ${result.narHash}, but ${metadata.narHash} was claimed`);
    }
    if (metadata.narSize !== undefined && metadata.narSize !== result.narSize) {
      throw new CastoreError('BLOB_CORRUPT', `NAR of ${metadata.storePath} has ${result.narSize} bytes, but ${metadata.narSize} were claimed`);
    }
    const info: StorePathInfo = {
      storePath: metadata.storePath,
      narHash: result.narHash,
      narSize: result.narSize,
      references: [...metadata.references].sort(),
      ...(metadata.deriver ? { deriver: metadata.deriver } : {}),
      ...(metadata.ca ? { ca: metadata.ca } : {}),
      signatures: metadata.signatures ?? [],
      root: result.root,
    };
    session.registerStorePath(info);
    session.commit();
    return info;
  } catch (error) {
    session.abort();
    throw error;
  }
}
