/**
 * A config's id and what its author signs, apart from the rest of the
 * domain commands: `ferry config submit` computes both, and loading
 * commands.ts (every command's schemas) for them cost the CLI start-up
 * time (bench/README.md, "Figures behind code comments").
 */
import type { ConfigBody, ConfigId } from '../../protocol/config.js';
import { canonicalJson } from '../../protocol/canonical-json.js';
import { blake3Hex } from '../../castore/blake3/index.js';

/** A config's id: BLAKE3 (hex) of the canonical JSON of its body. */
export function configId(body: ConfigBody): ConfigId {
  return blake3Hex(canonicalJson(body)) as ConfigId;
}

/** The bytes a config's author signs: its id, under a domain-separating prefix. */
export function configSigningMessage(id: string): Uint8Array {
  return new TextEncoder().encode(`ferry-config-v1\n${id}`);
}
