/** What the castore registry records about a Nix store path. */
import { z } from 'zod';
import { NodeSchema } from './castore-node.js';

export const StorePathInfoSchema = z.object({
  storePath: z.string().min(1),
  /** `sha256:<nix32>`, as in a narinfo. */
  narHash: z.string().regex(/^sha256:[0-9a-df-np-sv-z]{52}$/, 'expected sha256:<nix32>'),
  narSize: z.number().int().nonnegative(),
  references: z.array(z.string()),
  deriver: z.string().optional(),
  ca: z.string().optional(),
  signatures: z.array(z.string()),
  root: NodeSchema,
});
export type StorePathInfo = z.infer<typeof StorePathInfoSchema>;
