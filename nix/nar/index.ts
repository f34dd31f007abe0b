/** The NAR codec: strict streaming decoder, encoder, file tree dump and restore. */
export { DEFAULT_NAR_LIMITS, invalidNarNameReason, joinEntryPath, entryBaseName, type NarEvent, type NarLimits } from './events.js';
export { decodeNar } from './decode.js';
export { encodeNar } from './encode.js';
export { dumpPath, dumpPathEvents } from './dump-path.js';
export { restoreNar } from './restore.js';
export { listNar, type NarEntry } from './list.js';
export { narHash, type NarHashResult } from './nar-hash.js';
export { BackgroundSha256 } from './background-sha256.js';
