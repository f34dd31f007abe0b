/**
 * What the parts of the local backend share: its data directory, its
 * SQLite index, the open pack files and the clock. Created by LocalCastore;
 * the ingest, the stale-file cleanup and the pack maintenance take it
 * rather than the LocalCastore, so none of them imports it.
 */
import type { Clock } from '../services/castore-services.js';
import type { CastoreDatabase } from './database.js';
import type { PackReader } from './pack-files.js';

export interface LocalContext {
  readonly dataDir: string;
  readonly db: CastoreDatabase;
  readonly packs: PackReader;
  readonly clock: Clock;
}
