/**
 * castore nodes: what a name in a directory (or the root of a store path)
 * points to. A file node names the blob holding its bytes; a directory node
 * names a directory object; a symlink carries its target inline.
 *
 * Digests are 32-byte BLAKE3 values, carried as lowercase hex strings
 * (branded) everywhere outside the binary encodings.
 */
import { z } from 'zod';

declare const digestBrand: unique symbol;
/** Lowercase hex of a 32-byte BLAKE3 digest: a blob id or a directory id. */
export type Digest = string & { readonly [digestBrand]: true };

const DIGEST_PATTERN = /^[0-9a-f]{64}$/;

export function isDigest(value: string): value is Digest {
  return DIGEST_PATTERN.test(value);
}

export function digestFromBytes(bytes: Uint8Array): Digest {
  if (bytes.length !== 32) throw new RangeError(`a digest is 32 bytes, got ${bytes.length}`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex') as Digest;
}

export function digestToBytes(digest: Digest): Uint8Array {
  return new Uint8Array(Buffer.from(digest, 'hex'));
}

export const DigestSchema = z
  .string()
  .regex(DIGEST_PATTERN, 'expected 64 lowercase hex characters (a BLAKE3 digest)')
  .transform((value) => value as Digest);

export const FileNodeSchema = z.object({
  type: z.literal('file'),
  digest: DigestSchema,
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  executable: z.boolean(),
});
/** `size` of a directory node is the number of nodes below it, recursively (bounds a fetch before it starts). */
export const DirectoryNodeSchema = z.object({
  type: z.literal('directory'),
  digest: DigestSchema,
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
});
export const SymlinkNodeSchema = z.object({
  type: z.literal('symlink'),
  target: z.string().min(1).max(4096),
});
export const NodeSchema = z.discriminatedUnion('type', [FileNodeSchema, DirectoryNodeSchema, SymlinkNodeSchema]);

export type FileNode = z.infer<typeof FileNodeSchema>;
export type DirectoryNode = z.infer<typeof DirectoryNodeSchema>;
export type SymlinkNode = z.infer<typeof SymlinkNodeSchema>;
export type Node = z.infer<typeof NodeSchema>;

/** A node under a name inside a directory. */
export type Entry = Node & { name: string };
