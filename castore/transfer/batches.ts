/**
 * Grouping blobs into requests: small ones many to a request (one round
 * trip and one commit for hundreds of files), large ones alone (streamed,
 * resumable). Both directions of the data plane use it.
 */
import type { FileNode } from '../node.js';

export interface BatchLimits {
  /** Blobs larger than this travel alone. */
  largeOver: number;
  maxObjects: number;
  maxBytes: number;
}

/** `blobs` in request-sized groups: one-element groups for large blobs. */
export function batchBlobs(blobs: Iterable<FileNode>, limits: BatchLimits): FileNode[][] {
  const groups: FileNode[][] = [];
  let batch: FileNode[] = [];
  let batchBytes = 0;
  for (const blob of blobs) {
    if (blob.size > limits.largeOver) {
      groups.push([blob]);
      continue;
    }
    if (batch.length >= limits.maxObjects || batchBytes + blob.size > limits.maxBytes) {
      groups.push(batch);
      batch = [];
      batchBytes = 0;
    }
    batch.push(blob);
    batchBytes += blob.size;
  }
  if (batch.length > 0) groups.push(batch);
  return groups;
}
