/**
 * A config's id: BLAKE3 (hex) of the canonical JSON of its body. Here, not
 * in protocol/ beside ConfigBodySchema, because BLAKE3 is castore's (its one
 * entry point, castore/blake3) and protocol imports no castore. What the
 * author signs over the id is protocol's (configSigningMessage). Kept apart
 * from castore's entry: `ferry config submit` imports only this and the
 * hash, and start-up time counts there (bench/README.md, "Figures behind
 * code comments").
 */
import type { ConfigBody, ConfigId } from '../protocol/config.js';
import { canonicalJson } from '../protocol/canonical-json.js';
import { blake3Hex } from './blake3/index.js';

/** A config's id: BLAKE3 (hex) of the canonical JSON of its body. */
export function configId(body: ConfigBody): ConfigId {
  return blake3Hex(canonicalJson(body)) as ConfigId;
}
