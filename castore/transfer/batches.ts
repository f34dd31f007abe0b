/**
 * Grouping blobs into requests: small ones many to a request (one round
 * trip and one commit for hundreds of files), large ones alone (streamed,
 * resumable). Both directions of the data plane use it.
 */
import type { FileNode } from '../node.js';

/**
 * Bytes per blob-batch request, both ways. The QUIC library takes in
 * whatever is sent and holds it until JavaScript reads it, so what is sent
 * at once is what the receiver may have to buffer. 4 MiB x 2 in flight
 * fetches and pushes as fast as 8 MiB batches, with a lower peak on both
 * sides (bench/README.md, "Data plane").
 */
export const TRANSFER_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Requests in flight by default, both ways: two keep the link busy while a
 * batch is verified and stored (and hide a round trip on a distant link);
 * on loopback one is slower and uses less memory (bench/README.md, "Figures behind code comments").
 */
export const TRANSFER_PARALLEL = 2;

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

/** Splits a batch's read runs (whole blobs back to back) into one view per blob (a copy only for a blob spanning runs). */
export function splitBlobs(runs: Iterable<Uint8Array>, sizes: readonly number[]): Uint8Array[] {
  const iterator = runs[Symbol.iterator]();
  let current: Uint8Array = new Uint8Array(0);
  const pull = (): void => {
    const next = iterator.next();
    if (next.done) throw new Error('splitBlobs: the runs end before the blobs do');
    current = next.value;
  };
  return sizes.map((size) => {
    while (current.length === 0 && size > 0) pull();
    if (current.length >= size) {
      const view = current.subarray(0, size);
      current = current.subarray(size);
      return view;
    }
    const out = new Uint8Array(size);
    let at = 0;
    while (at < size) {
      if (current.length === 0) pull();
      const take = Math.min(size - at, current.length);
      out.set(current.subarray(0, take), at);
      at += take;
      current = current.subarray(take);
    }
    return out;
  });
}
