/** What the castore registry records about a Nix store path: a wire type, defined in protocol/. */
export { StorePathInfoSchema, type StorePathInfo } from '../protocol/store-path-info.js';
