/**
 * Choosing a castore backend by address: a store setting is one string.
 *
 * Schemes:
 * - `local:///absolute/path` — the local backend (LocalCastore): packs,
 *   blob files and a SQLite index in that data directory, created if need be.
 * - `memory:` — the memory backend (MemoryCastore): empty, gone with the process.
 *
 * Reserved, refused for now with STORE_ADDRESS_INVALID naming them:
 * `s3://bucket/prefix` (blobs in a bucket, the index in PostgreSQL) and
 * `postgres://…`. The coordinator's data plane is read as a castore too
 * (RemoteCastore), but it needs a connected DataClient, not an address.
 */
import { fileURLToPath } from 'node:url';
import { CastoreError } from './errors.js';
import { LocalCastore, type LocalCastoreOptions } from './local/local-castore.js';
import { MemoryCastore } from './memory/memory-castore.js';
import type { CastoreServices, Clock } from './services/castore-services.js';

export interface OpenCastoreOptions {
  clock?: Clock;
  /** For `local:`: see LocalCastoreOptions. */
  keepStaleFiles?: LocalCastoreOptions['keepStaleFiles'];
}

const RESERVED = new Set(['s3:', 'postgres:', 'postgresql:']);

/**
 * Opens the backend `address` names (see above). Refuses, before touching
 * anything, an address that is not a URL, a scheme it does not know, a
 * `local:` address with a host, query or relative path, and a `memory:`
 * address with anything after the colon (STORE_ADDRESS_INVALID).
 */
export function openCastore(address: string, options: OpenCastoreOptions = {}): CastoreServices {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw invalid(address, 'it is not a URL: use local:///absolute/path or memory:');
  }
  const clock = options.clock ? { clock: options.clock } : {};
  switch (url.protocol) {
    case 'memory:':
      if (address !== 'memory:') throw invalid(address, 'memory: takes nothing after the colon');
      return new MemoryCastore(clock);
    case 'local:': {
      if (url.host !== '' || url.search !== '' || url.hash !== '' || !address.startsWith('local:///')) {
        throw invalid(address, 'a local castore is local:///absolute/path (three slashes, no host, no query)');
      }
      const dataDir = fileURLToPath(`file://${url.pathname}`);
      return LocalCastore.open(dataDir, { ...clock, ...(options.keepStaleFiles ? { keepStaleFiles: true } : {}) });
    }
    default:
      throw invalid(address, RESERVED.has(url.protocol) ? `the ${url.protocol.slice(0, -1)} backend is not built yet` : `unknown scheme ${url.protocol}: use local:///absolute/path or memory:`);
  }
}

function invalid(address: string, why: string): CastoreError {
  return new CastoreError('STORE_ADDRESS_INVALID', `castore address ${JSON.stringify(address.slice(0, 200))}: ${why}`);
}
