/**
 * Nix's base-32 ("nix32"): alphabet without e, o, u, t; the digest is read
 * from its last byte to its first, 5 bits at a time. A 20-byte store path
 * hash becomes 32 characters, a SHA-256 digest 52.
 */
import { NixError } from './errors.js';

export const NIX_BASE32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const charValue = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX_BASE32_ALPHABET.length; i++) charValue[NIX_BASE32_ALPHABET.charCodeAt(i)] = i;

/** Length in characters of the nix32 encoding of `byteLength` bytes. */
export function nixBase32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

export function encodeNixBase32(bytes: Uint8Array): string {
  const length = nixBase32Length(bytes.length);
  let out = '';
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    const low = bytes[i]! >> j;
    const high = i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0;
    out += NIX_BASE32_ALPHABET[(low | high) & 0x1f];
  }
  return out;
}

/**
 * Decodes nix32. Refuses characters outside the alphabet and encodings whose
 * unused high bits are not zero (Nix refuses those too), with code BAD_BASE32.
 */
export function decodeNixBase32(text: string, byteLength = Math.floor((text.length * 5) / 8)): Uint8Array {
  if (nixBase32Length(byteLength) !== text.length) {
    throw new NixError('BAD_BASE32', `nix32 string of ${text.length} characters cannot hold ${byteLength} bytes`);
  }
  const out = new Uint8Array(byteLength);
  for (let n = 0; n < text.length; n++) {
    const code = text.charCodeAt(text.length - n - 1);
    const digit = code < 128 ? charValue[code]! : -1;
    if (digit < 0) {
      throw new NixError('BAD_BASE32', `invalid character '${text[text.length - n - 1]}' in nix32 string '${text}'`);
    }
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    out[i]! |= (digit << j) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < byteLength) out[i + 1]! |= carry;
    else if (carry !== 0) throw new NixError('BAD_BASE32', `nix32 string '${text}' has non-zero padding bits`);
  }
  return out;
}
