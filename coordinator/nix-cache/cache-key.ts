/**
 * The coordinator's Nix signing key: its own ed25519 identity, named
 * `<coordinator name>-1` in Nix's `name:base64` format, so narinfos it
 * serves verify against the line `ferry cache key` prints for
 * `trusted-public-keys`. Nix signs fingerprints `1;<path>;…`, which can
 * never equal the `ferry-…-v1\n…` messages the same key signs elsewhere.
 */
import type { Identity } from '../../protocol/identity.js';
import { formatNixPublicKey, narInfoFingerprint } from '../../nix/index.js';

/** Nix key names may not contain ':'; Ferry keeps them to a conservative alphabet. */
export function nixKeyName(coordinatorName: string): string {
  const name = coordinatorName.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'ferry';
  return `${name}-1`;
}

/** Fingerprint signatures are cached (bounded): a `nix copy` asks for every narinfo, and signing each is not free (bench/README.md, "Figures behind code comments"). */
const SIGNATURE_CACHE_MAX = 16_384;

export class NixCacheKey {
  private keyName: string | undefined;
  private readonly signatures = new Map<string, string>();

  /** `coordinatorName` is asked on first use (a coordinator is named by its first audit event, which may come after the app is built). */
  constructor(
    private readonly identity: Identity,
    private readonly coordinatorName: () => string,
  ) {}

  /** The key's name, `<coordinator name>-1`. */
  get name(): string {
    this.keyName ??= nixKeyName(this.coordinatorName());
    return this.keyName;
  }

  /** The `name:base64(public key)` line for Nix's `trusted-public-keys`. */
  get publicKeyLine(): string {
    return formatNixPublicKey({ name: this.name, publicKey: this.identity.publicKey });
  }

  /** `name:base64(signature)` of a store path's fingerprint (see narInfoFingerprint), as a narinfo `Sig:` carries it. */
  sign(storePath: string, narHash: string, narSize: number, references: readonly string[]): string {
    const fingerprint = narInfoFingerprint(storePath, narHash, narSize, references);
    let signature = this.signatures.get(fingerprint);
    if (signature === undefined) {
      signature = `${this.name}:${Buffer.from(this.identity.sign(new TextEncoder().encode(fingerprint))).toString('base64')}`;
      if (this.signatures.size >= SIGNATURE_CACHE_MAX) this.signatures.clear();
      this.signatures.set(fingerprint, signature);
    }
    return signature;
  }
}
