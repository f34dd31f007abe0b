/**
 * Canonical JSON: the one byte encoding of a JSON value that everything
 * signed or hashed in Ferry uses (audit events, configs, signed requests).
 * Object keys are sorted by UTF-16 code units and no whitespace is emitted
 * (as RFC 8785 JCS does); to keep the number rule trivial, only safe
 * integers are allowed as numbers.
 */

export type CanonicalValue = null | boolean | number | string | CanonicalValue[] | { [key: string]: CanonicalValue | undefined };

/**
 * Encodes a value canonically. Refuses (TypeError, naming the path) floats,
 * non-finite numbers, bigints, functions and other non-JSON values; object
 * properties whose value is `undefined` are omitted, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  return encode(value, '$');
}

function encode(value: unknown, where: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isSafeInteger(value)) throw new TypeError(`canonical JSON allows only safe integers; ${where} is ${value}`);
      return String(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((item, i) => encode(item, `${where}[${i}]`)).join(',')}]`;
      if (value instanceof Date || ArrayBuffer.isView(value) || value instanceof Map || value instanceof Set) {
        throw new TypeError(`canonical JSON cannot encode ${value.constructor.name} at ${where}`);
      }
      const keys = Object.keys(value).sort();
      const parts: string[] = [];
      for (const key of keys) {
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined) continue;
        parts.push(`${JSON.stringify(key)}:${encode(item, `${where}.${key}`)}`);
      }
      return `{${parts.join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot encode a ${typeof value} at ${where}`);
  }
}

export function canonicalJsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}
