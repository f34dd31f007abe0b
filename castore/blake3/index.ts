/** BLAKE3 with 16 KiB group trees and outboards, for verified streaming of blobs. */
export { cvToBytes, GROUP_SIZE, groupChainingValue, groupCount, GroupBuffer, outboardSize } from './tree.js';
export { OutboardBuilder, outboardFromGroupCvs, verifyOutboard, blake3, type OutboardResult, type VerifiedOutboard } from './outboard.js';
export { BlobVerifier, verifyRange, type BlobVerifierOptions } from './verifier.js';
export { nativeBlake3, nativeBlake3Hasher } from './native.js';
