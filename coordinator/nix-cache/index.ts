/**
 * The coordinator as a Nix binary cache: serves narinfos (signed with the
 * coordinator's key) and NARs rebuilt from castore, and accepts
 * `nix copy --to` uploads. See app.ts for the routes, docs/nix-cache.md
 * for configuring Nix.
 */
export { createNixCacheApp, type NixCacheOptions } from './app.js';
export { nixCacheCredentialMessage, nixCacheNetrcLine, nixCachePassword, verifyNixCacheAuthorization, NIX_CACHE_CREDENTIAL_CONTEXT } from './credentials.js';
export { NixCacheKey, nixKeyName } from './cache-key.js';
export { decideRange, type RangeDecision } from './http-range.js';
export type { ServedCompression } from './served-narinfo.js';
