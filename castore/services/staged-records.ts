/**
 * What every ingest keeps in memory until its commit, whatever the
 * backend: directory encodings and store path records, each checked as it
 * is staged (so an invalid one is refused at once, not at commit).
 */
import { directoryId, directorySize, encodeDirectory } from '../directory.js';
import type { Digest, DirectoryNode, Entry } from '../node.js';
import { StorePathInfoSchema, type StorePathInfo } from '../store-path-info.js';

export class StagedRecords {
  readonly directories = new Map<Digest, Uint8Array>();
  readonly storePaths: StorePathInfo[] = [];

  /** Stages a directory and returns the node that points to it. Refuses invalid entries (DIRECTORY_NOT_CANONICAL). */
  putDirectory(entries: readonly Entry[]): DirectoryNode {
    const encoding = encodeDirectory(entries);
    const digest = directoryId(encoding);
    this.directories.set(digest, encoding);
    return { type: 'directory', digest, size: directorySize(entries) };
  }

  /** Stages a store path record; refuses (ZodError) one StorePathInfoSchema refuses. */
  registerStorePath(info: StorePathInfo): void {
    this.storePaths.push(StorePathInfoSchema.parse(info));
  }
}
