/**
 * HTTP `Range` requests (RFC 9110 §14) for one representation of known
 * size: a single byte range is honoured, anything else is served whole.
 */
import { z } from 'zod';

/** What to send: the whole body, a part of it (206), or nothing (416). */
export type RangeDecision = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

const RangeHeaderSchema = z
  .string()
  .max(256)
  .regex(/^bytes=(\d{0,16})-(\d{0,16})$/);

/**
 * Decides how to answer `Range: <header>` for a body of `size` bytes.
 * `bytes=a-b`, `bytes=a-` and `bytes=-n` (the last n bytes) are honoured,
 * clipped to the size; a missing, malformed or multi-range header is served
 * in full (the RFC allows ignoring Range); a range starting at or past the
 * end is unsatisfiable. `ifRange`, when given, must equal `etag` for the
 * range to apply (a changed representation is sent whole).
 */
export function decideRange(header: string | undefined, size: number, ifRange?: string, etag?: string): RangeDecision {
  if (header === undefined) return { kind: 'full' };
  if (ifRange !== undefined && ifRange !== etag) return { kind: 'full' };
  const parsed = RangeHeaderSchema.safeParse(header.trim());
  if (!parsed.success) return { kind: 'full' };
  const [, first = '', last = ''] = /^bytes=(\d*)-(\d*)$/.exec(parsed.data)!;
  if (first === '' && last === '') return { kind: 'full' };
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(size - suffix, 0), end: size };
  }
  const start = Number(first);
  if (start >= size) return { kind: 'unsatisfiable' };
  const end = last === '' ? size : Number(last) + 1;
  if (end <= start) return { kind: 'full' };
  return { kind: 'partial', start, end: Math.min(end, size) };
}
