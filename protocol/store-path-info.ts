/**
 * Store paths on the wire, and what the castore registry records about
 * each. Every store path that crosses a boundary — a request, a manifest,
 * a bundle, a registry row read back — is parsed here into a branded
 * StorePath (nix/store-path.ts): a signature proves who sent a path, not
 * that it is sane, so receivers re-validate even signed data.
 */
import { z } from 'zod';
import { NixError } from '../nix/errors.js';
import { asStorePath, type StorePath } from '../nix/store-path.js';
import { NodeSchema } from './castore-node.js';

/** References of one store path (Nix has no limit; real closures stay far below). */
export const MAX_REFERENCES = 10_000;
/** Signatures kept per store path. */
export const MAX_SIGNATURES = 32;

/** A store path in `/nix/store`, exactly as Nix accepts it (see asStorePath), branded. */
export const StorePathSchema = z.string().max(4096).transform((value, context): StorePath => {
  try {
    return asStorePath(value);
  } catch (error) {
    if (!(error instanceof NixError)) throw error;
    context.addIssue({ code: 'custom', message: error.message });
    return z.NEVER;
  }
});

export const StorePathInfoSchema = z.strictObject({
  storePath: StorePathSchema,
  /** `sha256:<nix32>`, as in a narinfo. */
  narHash: z.string().regex(/^sha256:[0-9a-df-np-sv-z]{52}$/, 'expected sha256:<nix32>'),
  narSize: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  references: z.array(StorePathSchema).max(MAX_REFERENCES),
  deriver: StorePathSchema.optional(),
  ca: z.string().max(1024).optional(),
  signatures: z.array(z.string().max(1024)).max(MAX_SIGNATURES),
  root: NodeSchema,
});
export type StorePathInfo = z.infer<typeof StorePathInfoSchema>;
