/**
 * NAR's wire primitives: every string is a little-endian u64 length, the
 * bytes, then zero padding to a multiple of 8. The fixed tokens are
 * pre-encoded once so the encoder copies bytes instead of re-deriving them.
 */
export function paddingOf(length: number): number {
  return (8 - (length % 8)) % 8;
}

export function encodeNarString(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + bytes.length + paddingOf(bytes.length));
  new DataView(out.buffer).setUint32(0, bytes.length, true);
  new DataView(out.buffer).setUint32(4, Math.floor(bytes.length / 2 ** 32), true);
  out.set(bytes, 8);
  return out;
}

function tokens(...words: string[]): Uint8Array {
  return new Uint8Array(Buffer.concat(words.map((word) => encodeNarString(Buffer.from(word)))));
}

export const NAR_MAGIC = 'nix-archive-1';

/** Pre-encoded token sequences, named after where they appear. */
export const T = {
  magic: tokens(NAR_MAGIC),
  open: tokens('('),
  close: tokens(')'),
  regular: tokens('(', 'type', 'regular'),
  executable: tokens('executable', ''),
  contents: tokens('contents'),
  symlink: tokens('(', 'type', 'symlink', 'target'),
  directory: tokens('(', 'type', 'directory'),
  entryName: tokens('entry', '(', 'name'),
  node: tokens('node'),
} as const;
