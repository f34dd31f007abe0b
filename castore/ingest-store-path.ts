/**
 * Ingesting a NAR as a registered Nix store path, verified against its
 * claimed NarHash, its files normalized against the path's and its
 * references' hash parts.
 */
import { asStorePath, parseStorePath } from '../nix/store-path.js';
import { HashPartSet } from './references/index.js';
import { CastoreError } from './errors.js';
import { ingestNar, type NarIngestOptions, type NarIngestResult } from './nar-ingest.js';
import { withIngest, type CastoreServices } from './services/castore-services.js';
import type { StorePathInfo } from './store-path-info.js';

/** What a pusher claims about a store path, besides its contents (unchecked: ingestStorePath parses each path). */
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

export interface IngestStorePathOptions extends NarIngestOptions {
  /**
   * Makes the store path visible: called once everything verified, with the
   * session's commit, which it must call (or throw). The coordinator commits
   * inside the transaction of the path's audit event. Default: commit now.
   */
  publish?: (commit: () => void) => void;
  /**
   * Store files that embed the path's own hash part or its references' as
   * a normalized blob plus a template (docs/castore.md, "Reference-aware
   * blobs"), so a rebuild that only moved them dedups. Default true.
   */
  normalizeReferences?: boolean;
}

/**
 * What a store path's files are normalized against: its own hash part,
 * then its references' (sorted by path; a self-reference is found as index
 * 0). Each file's template lists the ones it uses, self-contained.
 */
export function storePathHashParts(storePath: string, references: readonly string[]): HashPartSet {
  return new HashPartSet([parseStorePath(storePath).hashPart, ...[...references].sort().map((reference) => parseStorePath(reference).hashPart)]);
}

/**
 * Ingests one store path's NAR and registers it, all in one commit. Refuses
 * an invalid store path, reference or deriver (NixError BAD_STORE_PATH)
 * before reading anything, a NAR whose hash or size differs from the claimed
 * ones (BLOB_CORRUPT), and a malformed NAR (NixError from the decoder);
 * after any refusal nothing of it is visible in the store.
 */
export async function ingestStorePath(
  store: Pick<CastoreServices, 'beginIngest'>,
  source: AsyncIterable<Uint8Array>,
  metadata: StorePathMetadata,
  options: IngestStorePathOptions = {},
): Promise<StorePathInfo & Pick<NarIngestResult, 'narHash' | 'narSize'>> {
  const storePath = asStorePath(metadata.storePath);
  const references = metadata.references.map((reference) => asStorePath(reference));
  const deriver = metadata.deriver ? asStorePath(metadata.deriver) : undefined;
  return withIngest(
    store,
    async (session) => {
      const hashParts = options.normalizeReferences === false ? undefined : storePathHashParts(storePath, references);
      const result = await ingestNar(session, source, { ...options, ...(hashParts ? { hashParts } : {}) });
      if (metadata.narHash !== undefined && metadata.narHash !== result.narHash) {
        throw new CastoreError('BLOB_CORRUPT', `NAR of ${metadata.storePath} hashes to ${result.narHash}, but ${metadata.narHash} was claimed`);
      }
      if (metadata.narSize !== undefined && metadata.narSize !== result.narSize) {
        throw new CastoreError('BLOB_CORRUPT', `NAR of ${metadata.storePath} has ${result.narSize} bytes, but ${metadata.narSize} were claimed`);
      }
      const info: StorePathInfo = {
        storePath,
        narHash: result.narHash,
        narSize: result.narSize,
        references: references.sort(),
        ...(deriver ? { deriver } : {}),
        ...(metadata.ca ? { ca: metadata.ca } : {}),
        signatures: metadata.signatures ?? [],
        root: result.root,
      };
      session.registerStorePath(info);
      return info;
    },
    options.publish,
  );
}
