import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { clipJsonDepth, cloneJson, JSON_TOO_DEEP_PLACEHOLDER, jsonBoundsViolation, MAX_JSON_DEPTH, stringifyJson } from './json-bounds.js';
import { seededRandom } from '../test/seeded-random.js';

/** `{"a":…}` nested `depth` deep around `leaf`, built without recursion. */
function nested(depth: number, leaf: unknown = 1): unknown {
  let value = leaf;
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

/** Random JSON-ish values, with the non-JSON bits JSON.stringify has rules for (undefined, functions, Dates, non-finite numbers). */
function randomValue(random: (n: number) => number, depth: number): unknown {
  switch (random(depth > 7 ? 6 : 9)) {
    case 0:
      return null;
    case 1:
      return random(2) === 0;
    case 2:
      return [random(1000) - 500, 1.5, -0, Number.NaN, Number.POSITIVE_INFINITY, 1e21][random(6)];
    case 3:
      return ['', 'é\n"\\', '\ud800', 'x'][random(4)];
    case 4:
      return [undefined, () => 1, new Date(86_400_000 * random(1000)), Symbol('s')][random(4)];
    case 5:
      return depth > 7 ? 'leaf' : { toJSON: (key: string) => ({ key }) };
    case 6:
      return Array.from({ length: random(5) }, () => randomValue(random, depth + 1));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = random(6); i > 0; i--) object[['a', 'b', '', 'é', '10', '2'][random(6)]!] = randomValue(random, depth + 1);
      return object;
    }
  }
}

describe('jsonBoundsViolation', () => {
  it('counts nested containers, and names where the first one past the bound is', () => {
    expect(jsonBoundsViolation(1, { maxDepth: 0 })).toBeUndefined();
    expect(jsonBoundsViolation({}, { maxDepth: 0 })).toMatchObject({ code: 'JSON_TOO_DEEP', limit: 0, path: '$' });
    expect(jsonBoundsViolation({ a: [1] }, { maxDepth: 2 })).toBeUndefined();
    expect(jsonBoundsViolation({ a: [1, { b: 2 }] }, { maxDepth: 2 })).toEqual({
      code: 'JSON_TOO_DEEP',
      limit: 2,
      path: '$.a[1]',
      message: 'nests deeper than 2 levels (at $.a[1])',
    });
    // Keys are client data: escaped in the path, and cut when long.
    expect(jsonBoundsViolation({ 'odd \u001b[2J key': [[]] }, { maxDepth: 2 })?.path).toBe('$["odd \\u001b[2J key"][0]');
    expect(jsonBoundsViolation({ [`k${'x'.repeat(100)}`]: [[]] }, { maxDepth: 2 })?.path).toBe(`$["k${'x'.repeat(39)}…"][0]`);
  });

  it('counts values against maxNodes', () => {
    expect(jsonBoundsViolation([1, 2, [3]], { maxDepth: 9, maxNodes: 5 })).toBeUndefined();
    // The root, 1, 2, [3, 4], 3: the sixth value is the 4.
    expect(jsonBoundsViolation([1, 2, [3, 4]], { maxDepth: 9, maxNodes: 5 })).toMatchObject({ code: 'JSON_TOO_LARGE', limit: 5, path: '$[2][1]' });
  });

  it('stops at the bound: a value 1,000,000 deep, or a cyclic one, costs a bounded walk', () => {
    const deep = JSON.parse(`${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`) as unknown;
    const started = performance.now();
    expect(jsonBoundsViolation(deep, { maxDepth: MAX_JSON_DEPTH })?.code).toBe('JSON_TOO_DEEP');
    expect(performance.now() - started).toBeLessThan(50);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(jsonBoundsViolation(cyclic, { maxDepth: 10 })?.path).toBe(`$${'.self'.repeat(10)}`);
  });

  it('says what was exceeded and where, in a message a refusal can carry', () => {
    expect(jsonBoundsViolation(nested(3), { maxDepth: 3 })).toBeUndefined();
    expect(jsonBoundsViolation({ facts: nested(70) }, { maxDepth: MAX_JSON_DEPTH })).toEqual({
      code: 'JSON_TOO_DEEP',
      limit: 64,
      path: `$.facts${'.a'.repeat(63)}`,
      message: `nests deeper than 64 levels (at $.facts${'.a'.repeat(63)})`,
    });
  });
});

describe('stringifyJson', () => {
  it('is JSON.stringify on random values (toJSON, Dates, undefined, functions, symbols, non-finite numbers)', () => {
    const random = seededRandom(7);
    for (let i = 0; i < 5000; i++) {
      const value = randomValue(random, 0);
      expect(stringifyJson(value)).toBe(JSON.stringify(value));
    }
  });

  it('is JSON.stringify past the native depth, too, and at 100,000 levels', () => {
    const random = seededRandom(11);
    for (let i = 0; i < 300; i++) {
      // Random values under 200 levels of wrapping: the iterative encoder's rules, checked against V8's.
      const value = nested(200, randomValue(random, 0));
      expect(stringifyJson(value)).toBe(JSON.stringify(value));
    }
    const wrapped = (value: unknown): unknown => [nested(150, value), undefined, () => 1];
    expect(stringifyJson(wrapped(undefined))).toBe(JSON.stringify(wrapped(undefined)));
    expect(stringifyJson(wrapped(new Date(0)))).toBe(JSON.stringify(wrapped(new Date(0))));
    expect(stringifyJson(nested(100_000, 'x'))).toBe(`${'{"a":'.repeat(100_000)}"x"${'}'.repeat(100_000)}`);
    expect(() => JSON.stringify(nested(100_000))).toThrow(RangeError); // why it exists
  });

  it('refuses cycles and bigints as JSON.stringify does', () => {
    const cyclic: Record<string, unknown> = { a: nested(200) };
    cyclic.b = { back: cyclic };
    expect(() => stringifyJson(cyclic)).toThrow(TypeError);
    expect(() => stringifyJson(nested(300, 1n))).toThrow(TypeError);
  });
});

describe('cloneJson', () => {
  it('copies as structuredClone does for rows (undefined kept, nothing shared)', () => {
    for (let i = 0; i < 2000; i++) {
      // Rows are JSON (what the reducer builds from parsed payloads), plus undefined properties.
      const row = { id: 'x', n: i, v: JSON.parse(stringifyJson(randomValue(seededRandom(i + 1), 0)) ?? 'null') as unknown, u: undefined };
      expect(isDeepStrictEqual(cloneJson(row), structuredClone(row))).toBe(true);
    }
    const row = { id: 'r', facts: { a: [1, { b: 2 }] }, gone: undefined };
    const copy = cloneJson(row);
    expect(copy).toStrictEqual(row);
    expect(copy.facts).not.toBe(row.facts);
    expect(copy.facts.a[1]).not.toBe(row.facts.a[1]);
    expect(Object.hasOwn(copy, 'gone')).toBe(true);
  });

  it('copies a value 100,000 deep', () => {
    const deep = nested(100_000, [1]);
    const copy = cloneJson(deep);
    expect(copy === deep).toBe(false); // (not expect().not.toBe: it compares deeply, recursively, to explain itself)
    expect(stringifyJson(copy)).toBe(stringifyJson(deep));
  });
});

describe('clipJsonDepth', () => {
  it('returns a value within the bound itself', () => {
    const value = { a: [1, { b: 2 }] };
    expect(clipJsonDepth(value, 3)).toBe(value);
  });

  it('replaces only the containers past the bound, leaving the value unchanged', () => {
    const deep = nested(100_000);
    const value = { keep: { x: [1, 2] }, deep, list: [nested(1), nested(5)] };
    const clipped = clipJsonDepth(value, 3);
    expect(clipped).toEqual({ keep: { x: [1, 2] }, deep: { a: { a: JSON_TOO_DEEP_PLACEHOLDER } }, list: [{ a: 1 }, { a: JSON_TOO_DEEP_PLACEHOLDER }] });
    expect(clipped.keep).toBe(value.keep); // within the bound: shared, not copied
    expect(value.deep).toBe(deep);
    expect(jsonBoundsViolation(clipped, { maxDepth: 3 })).toBeUndefined();
    expect(clipJsonDepth(nested(2), 0)).toBe(JSON_TOO_DEEP_PLACEHOLDER);
  });
});
