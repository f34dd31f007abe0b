import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical-json.js';
import { seededRandom } from '../test/seeded-random.js';

describe('canonical JSON', () => {
  it('sorts keys at every depth and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: null, y: 'x' }], c: true }, u: undefined })).toBe(
      '{"a":{"c":true,"d":[3,{"y":"x","z":null}]},"b":1}',
    );
  });
  it('is independent of insertion order', () => {
    expect(canonicalJson({ x: 1, y: 2 })).toBe(canonicalJson({ y: 2, x: 1 }));
  });
  it('refuses what has no single encoding', () => {
    expect(() => canonicalJson({ a: 1.5 })).toThrow(/\$\.a/);
    expect(() => canonicalJson([Number.NaN])).toThrow(TypeError);
    expect(() => canonicalJson({ d: new Date() })).toThrow(TypeError);
    expect(() => canonicalJson({ n: 10n })).toThrow(TypeError);
  });
});

/** The recursive encoder canonicalJson replaced, verbatim: the reference its output must match byte for byte. */
function recursiveCanonicalJson(value: unknown, where = '$'): string {
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
      if (Array.isArray(value)) return `[${value.map((item, i) => recursiveCanonicalJson(item, `${where}[${i}]`)).join(',')}]`;
      if (value instanceof Date || ArrayBuffer.isView(value) || value instanceof Map || value instanceof Set) {
        throw new TypeError(`canonical JSON cannot encode ${value.constructor.name} at ${where}`);
      }
      const keys = Object.keys(value).sort();
      const parts: string[] = [];
      for (const key of keys) {
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined) continue;
        parts.push(`${JSON.stringify(key)}:${recursiveCanonicalJson(item, `${where}.${key}`)}`);
      }
      return `{${parts.join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot encode a ${typeof value} at ${where}`);
  }
}

const KEYS = ['a', 'b', 'z', 'A', '', 'é', '\u0000', '10', '2', 'with space', '\ud83d\ude00', '\ud800', 'constructor'];
const STRINGS = ['', 'x', 'é\n"\\', '\ud800', '\u2028', 'long'.repeat(20)];

function randomValue(random: (n: number) => number, depth: number): unknown {
  switch (random(depth > 8 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return random(2) === 0;
    case 2:
      return [random(2_000_000) - 1_000_000, 0, -0, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER][random(5)];
    case 3:
    case 4:
      return STRINGS[random(STRINGS.length)];
    case 5:
      return Array.from({ length: random(5) }, () => randomValue(random, depth + 1));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = random(6); i > 0; i--) object[KEYS[random(KEYS.length)]!] = random(8) === 0 ? undefined : randomValue(random, depth + 1);
      return object;
    }
  }
}

describe('canonical JSON at any depth (defect 7: stored payloads nested deeper than recursion survives)', () => {
  it('is byte for byte the recursive encoder it replaced, on random nested values', () => {
    const random = seededRandom(20_261_126);
    for (let i = 0; i < 5000; i++) {
      const value = randomValue(random, 0);
      expect(canonicalJson(value), JSON.stringify(value)).toBe(recursiveCanonicalJson(value));
    }
  });

  it('refuses what the recursive encoder refused, naming the same path', () => {
    const refusal = (encode: (value: unknown) => string, value: unknown): string => {
      try {
        return `no refusal: ${encode(value)}`;
      } catch (error) {
        return `${(error as Error).name}: ${(error as Error).message}`;
      }
    };
    for (const value of [{ a: 1.5 }, [1, [2, { b: Number.NaN }]], { d: new Date(0) }, { x: [new Uint8Array(2)] }, { n: 10n }, { a: [1, { b: [undefined] }] }, undefined, { f: () => 1 }, Symbol('s')]) {
      expect(refusal(canonicalJson, value)).toBe(refusal(recursiveCanonicalJson, value));
    }
  });

  it('encodes a value nested 100,000 deep (objects and arrays) without recursion', () => {
    const depth = 100_000;
    let object: unknown = 1;
    let array: unknown = [];
    for (let i = 0; i < depth; i++) {
      object = { b: object, a: i === 0 ? 'x' : undefined };
      array = [array];
    }
    expect(canonicalJson(object)).toBe(`${'{"b":'.repeat(depth - 1)}{"a":"x","b":1}${'}'.repeat(depth - 1)}`);
    expect(canonicalJson(array)).toBe(`${'['.repeat(depth + 1)}${']'.repeat(depth + 1)}`);
    expect(() => recursiveCanonicalJson(object)).toThrow(RangeError); // what the old encoder did
  });

  it('refuses a cycle with a TypeError instead of looping', () => {
    const cyclic: Record<string, unknown> = { a: {} };
    (cyclic.a as Record<string, unknown>).b = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(/canonical JSON cannot encode a cycle at \$\.a\.b\.a\.b/);
    const shared = { x: 1 };
    expect(canonicalJson({ p: shared, q: [shared, shared] })).toBe('{"p":{"x":1},"q":[{"x":1},{"x":1}]}');
  });
});
