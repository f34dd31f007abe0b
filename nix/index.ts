/**
 * nix: Nix's formats, exactly — nix-base32, hashes, store paths, the NAR
 * codec, narinfo and its signatures — and reading a local Nix store through
 * Nix's own commands. No Nix is needed for anything but local-store.ts.
 */
export * from './errors.js';
export * from './base32.js';
export * from './hash.js';
export * from './store-path.js';
export * from './nar/index.js';
export * from './narinfo.js';
export * from './signing.js';
export * from './local-store.js';
export * from './drv-name.js';
export * from './closure-diff.js';
