/**
 * Canonical JSON: the one byte encoding of a JSON value that everything
 * signed or hashed in Ferry uses (audit events, configs, signed requests).
 * Object keys are sorted by UTF-16 code units and no whitespace is emitted
 * (as RFC 8785 JCS does); to keep the number rule trivial, only safe
 * integers are allowed as numbers.
 *
 * The encoder is iterative (an explicit stack, no recursion): the audit log
 * is permanent and may hold a payload nested deeper than any recursive
 * encoder survives (see json-bounds.ts), and verifying or replaying it must
 * still work. Its output is byte for byte that of the recursive encoder it
 * replaced (tested on random values), so no stored hash changes.
 */

export type CanonicalValue = null | boolean | number | string | CanonicalValue[] | { [key: string]: CanonicalValue | undefined };

/** Past this depth the encoder watches for cycles (a cycle is infinite depth; shallower values pay nothing for the check). */
const CYCLE_CHECK_DEPTH = 64;

interface Frame {
  container: object;
  /** The sorted keys of an object; null for an array. */
  keys: string[] | null;
  /** The next key or index to encode. */
  next: number;
  /** Whether an object member was written (for the comma). */
  wrote: boolean;
}

/** `$`, `$.a`, `$.a[2]`: where the value being encoded is, for error messages (cut in the middle past 48 steps). */
function pathOf(stack: readonly Frame[]): string {
  const steps = stack.map((frame) => (frame.keys ? `.${frame.keys[frame.next - 1]}` : `[${frame.next - 1}]`));
  return steps.length <= 48 ? `$${steps.join('')}` : `$${steps.slice(0, 32).join('')}…${steps.slice(-16).join('')}`;
}

/**
 * Encodes a value canonically, at any depth. Refuses (TypeError, naming
 * the path) floats, non-finite numbers, bigints, functions, cycles and
 * other non-JSON values; object properties whose value is `undefined` are
 * omitted, as JSON.stringify does. (A hole in a sparse array encodes as
 * nothing between its commas, as it always did; JSON.parse and zod never
 * produce one.)
 */
export function canonicalJson(value: unknown): string {
  const stack: Frame[] = [];
  const ancestors = new Set<object>();
  let out = '';
  let current = value;
  for (;;) {
    // Encode `current`: a scalar whole, a container's opening (its members follow).
    if (current === null) out += 'null';
    else {
      switch (typeof current) {
        case 'boolean':
          out += current ? 'true' : 'false';
          break;
        case 'string':
          out += JSON.stringify(current);
          break;
        case 'number':
          if (!Number.isSafeInteger(current)) throw new TypeError(`canonical JSON allows only safe integers; ${pathOf(stack)} is ${current}`);
          out += String(current);
          break;
        case 'object': {
          let keys: string[] | null = null;
          if (!Array.isArray(current)) {
            if (current instanceof Date || ArrayBuffer.isView(current) || current instanceof Map || current instanceof Set) {
              throw new TypeError(`canonical JSON cannot encode ${current.constructor.name} at ${pathOf(stack)}`);
            }
            keys = Object.keys(current).sort();
          }
          if (stack.length >= CYCLE_CHECK_DEPTH) {
            if (ancestors.has(current)) throw new TypeError(`canonical JSON cannot encode a cycle at ${pathOf(stack)}`);
            ancestors.add(current);
          }
          out += keys ? '{' : '[';
          stack.push({ container: current, keys, next: 0, wrote: false });
          break;
        }
        default:
          throw new TypeError(`canonical JSON cannot encode a ${typeof current} at ${pathOf(stack)}`);
      }
    }
    // Move to the next member to encode, closing the containers that are done.
    for (;;) {
      const frame = stack.at(-1);
      if (!frame) return out;
      if (frame.keys === null) {
        const items = frame.container as unknown[];
        if (frame.next < items.length) {
          const index = frame.next++;
          if (index > 0) out += ',';
          if (!(index in items)) continue;
          current = items[index];
          break;
        }
      } else {
        let member = false;
        while (frame.next < frame.keys.length) {
          const key = frame.keys[frame.next++]!;
          const item = (frame.container as Record<string, unknown>)[key];
          if (item === undefined) continue;
          out += `${frame.wrote ? ',' : ''}${JSON.stringify(key)}:`;
          frame.wrote = true;
          current = item;
          member = true;
          break;
        }
        if (member) break;
      }
      out += frame.keys ? '}' : ']';
      stack.pop();
      if (stack.length >= CYCLE_CHECK_DEPTH) ancestors.delete(frame.container);
    }
  }
}

/** canonicalJson as UTF-8 bytes. */
export function canonicalJsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}
