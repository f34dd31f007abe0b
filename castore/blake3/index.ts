/**
 * BLAKE3 in Ferry: plain hashing (of bytes, of text, incremental), and 16
 * KiB group trees with outboards for verified streaming of blobs.
 */
export { blake3, blake3Hex, blake3Hasher, type Blake3Hasher } from './hash.js';
export { cvToBytes, GROUP_SIZE, groupChainingValue, groupCount, GroupBuffer, outboardSize } from './tree.js';
export { OutboardBuilder, outboardFromGroupCvs, verifyOutboard, type OutboardResult, type VerifiedOutboard } from './outboard.js';
export { BlobVerifier, verifyRange, type BlobVerifierOptions } from './verifier.js';
