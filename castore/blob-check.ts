/** Checking stored bytes against a blob id, as fsck reports it (shared by the backends' `scrub`). */
import { BlobVerifier, GROUP_SIZE, blake3 } from './blake3/index.js';
import { CastoreError } from './errors.js';
import { digestFromBytes, digestToBytes, type Digest } from './node.js';

/**
 * Streams a blob's bytes through the verifier with its outboard, so the
 * answer names the first bad 16 KiB group (or a bad outboard); undefined
 * when the bytes are the blob. Rethrows what is not a verification failure
 * (a read error: the caller names where the bytes were).
 */
export async function checkBlobStream(id: Digest, size: number, outboard: Uint8Array, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<string | undefined> {
  let verifier: BlobVerifier;
  try {
    verifier = new BlobVerifier(digestToBytes(id), size, outboard, { objectId: id });
  } catch (error) {
    return `outboard does not match the blob id: ${(error as Error).message}`;
  }
  try {
    for await (const chunk of bytes) verifier.push(chunk);
    verifier.finish();
  } catch (error) {
    if (error instanceof CastoreError) {
      return error.code === 'BLAKE3_GROUP_MISMATCH'
        ? `content does not match its id from byte offset ${error.offset} (16 KiB group ${(error.offset ?? 0) / GROUP_SIZE})`
        : `the blob has the wrong length: ${error.message}`;
    }
    throw error;
  }
  return undefined;
}

/** Whether `bytes`, held whole, are the blob `id` of `size` bytes (small blobs: hashed natively). */
export function isBlob(id: Digest, size: number, bytes: Uint8Array): boolean {
  return bytes.length === size && digestFromBytes(blake3(bytes)) === id;
}
