/**
 * Bounds on JSON, and the walkers that stay safe beyond them.
 *
 * V8's JSON.parse is iterative: it builds a value nested 1,000,000 deep from
 * 2 MB of `[`. But JSON.stringify, structuredClone, util.isDeepStrictEqual
 * and every recursive function of ours overflow the stack somewhere between
 * ~1,500 and ~5,000 levels, depending on how deep the stack already is when
 * they are called, so the same value fails "intermittently". Ferry therefore
 *
 * 1. bounds nesting wherever JSON comes in (the HTTP API body, data-plane
 *    request headers, agent facts, exported logs), with jsonBoundsViolation,
 *    right after JSON.parse and before anything recursive sees the value,
 *    each boundary refusing with its own error type and the code
 *    JSON_TOO_DEEP;
 * 2. walks stored JSON (audit payloads, state rows) only iteratively:
 *    canonicalJson, stringifyJson, cloneJson, sameJson, clipJsonDepth. The
 *    log is permanent, and may hold values accepted before the bounds
 *    existed (facts nested ~1,900 deep were), so every reader of it must
 *    take whatever depth it holds.
 *
 * Depth counts nested containers: `1` is 0 deep, `[]` and `{}` are 1 deep,
 * `{"a":[1]}` is 2 deep. The bounds are named here, once, and listed in
 * docs/coordinator.md ("Bounds").
 */

/**
 * Nesting of any JSON request: an HTTP API body, a data-plane request
 * header (QUIC and the HTTP fallback), and data-plane reply headers as
 * clients read them. Ferry's own messages nest under 10 levels; agent
 * facts, the one free-form part, are bounded tighter (MAX_FACTS_DEPTH).
 */
export const MAX_JSON_DEPTH = 64;

/** Nesting of the facts an agent reports (the facts object itself is level 1); their custom fields are free-form. */
export const MAX_FACTS_DEPTH = 32;

/** Size of the facts an agent reports, and of those an event records: characters of their JSON (as JSON.stringify writes it). */
export const MAX_FACTS_JSON_LENGTH = 64 * 1024;

/**
 * Nesting of a stored event or a line of an exported log (a whole line,
 * its payload within): what a log may legitimately hold, including facts
 * recorded before MAX_FACTS_DEPTH existed. 64 KiB of facts (their size
 * bound) nest at most 32,768 levels (`[[[…]]]`); this is twice that.
 * Values this deep are only ever walked by the iterative functions here.
 */
export const MAX_STORED_JSON_DEPTH = 65_536;

/**
 * Nesting of what the audit viewer serves (an event with its diff, the
 * fleet at a position), counted from the response's root: deeper subtrees,
 * which only a log written before the bounds can hold, are replaced by
 * JSON_TOO_DEEP_PLACEHOLDER, so neither the JSON encoder, nor the page's
 * renderer, nor the CLI printing a response recurse past it. Facts within
 * MAX_FACTS_DEPTH sit at most ~40 levels down in any viewer response.
 */
export const MAX_VIEWER_JSON_DEPTH = 64;

/** What clipJsonDepth puts in place of a subtree nested deeper than its bound. */
export const JSON_TOO_DEEP_PLACEHOLDER = '[nested too deep to show: see the exported log]';

/**
 * Values at most this deep go to V8's own JSON.stringify (fast, and ~128
 * levels use a few percent of the stack); deeper ones to the iterative
 * encoder. Also where the iterative walkers start watching for cycles: a
 * cycle is infinite depth, so it shows up past any fixed depth.
 */
const NATIVE_DEPTH = 128;

export type JsonBoundsCode = 'JSON_TOO_DEEP' | 'JSON_TOO_LARGE';

/** Bounds to check a value against: nesting, and optionally the number of values (every scalar and container counts one). */
export interface JsonBounds {
  maxDepth: number;
  maxNodes?: number;
}

/** The first place a value exceeds its bounds. */
export interface JsonBoundsViolation {
  /** The Ferry error code a refusal carries (400 on HTTP, an error frame on the data plane). */
  code: JsonBoundsCode;
  /** The bound exceeded. */
  limit: number;
  /** Where: a JSONPath-like location of the first container past the depth bound, or of the value past the node bound. */
  path: string;
  /** `nests deeper than 64 levels (at $.facts.a.a…)`: to follow what is being refused. */
  message: string;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const MAX_PATH_CHARS = 200;

/** One step of a path: `.key`, `["odd key"]` (escaped: keys are client data) or `[3]`. */
function step(key: string | number): string {
  if (typeof key === 'number') return `[${key}]`;
  const shown = key.length > 40 ? `${key.slice(0, 40)}…` : key;
  return IDENTIFIER.test(shown) ? `.${shown}` : `[${JSON.stringify(shown)}]`;
}

/** A path for messages, cut in the middle beyond MAX_PATH_CHARS (the limit is 64 steps, but keys can be long). */
function shownPath(steps: readonly (string | number)[]): string {
  const path = `$${steps.map(step).join('')}`;
  return path.length <= MAX_PATH_CHARS ? path : `${path.slice(0, 120)}…${path.slice(-60)}`;
}

interface WalkFrame {
  container: object;
  /** Object keys; null for an array. */
  keys: string[] | null;
  /** The next child to visit. */
  next: number;
}

/** The key (or index) of the child `frame` visits now. */
function currentKey(frame: WalkFrame): string | number {
  return frame.keys ? frame.keys[frame.next - 1]! : frame.next - 1;
}

/**
 * The first place `value` exceeds `bounds`, or undefined when it is
 * within them: the one check of every JSON boundary. Iterative, and stops
 * at the first violation: a value 1,000,000 deep costs `maxDepth` steps, a
 * cyclic one terminates. Counts own enumerable properties, as JSON does.
 * Call it on untrusted JSON right after JSON.parse.
 */
export function jsonBoundsViolation(value: unknown, bounds: JsonBounds): JsonBoundsViolation | undefined {
  const { maxDepth, maxNodes = Infinity } = bounds;
  const stack: WalkFrame[] = [];
  const violation = (code: JsonBoundsCode, limit: number, what: string): JsonBoundsViolation => {
    const path = shownPath(stack.map(currentKey));
    return { code, limit, path, message: `${what} (at ${path})` };
  };
  let nodes = 0;
  let current = value;
  for (;;) {
    if (++nodes > maxNodes) return violation('JSON_TOO_LARGE', maxNodes, `holds more than ${maxNodes} JSON values`);
    if (current !== null && typeof current === 'object') {
      if (stack.length >= maxDepth) return violation('JSON_TOO_DEEP', maxDepth, `nests deeper than ${maxDepth} levels`);
      stack.push({ container: current, keys: Array.isArray(current) ? null : Object.keys(current), next: 0 });
    }
    for (;;) {
      if (stack.length === 0) return undefined;
      const frame = stack[stack.length - 1]!;
      if (frame.keys === null) {
        const items = frame.container as unknown[];
        if (frame.next < items.length) {
          current = items[frame.next++];
          break;
        }
      } else if (frame.next < frame.keys.length) {
        current = (frame.container as Record<string, unknown>)[frame.keys[frame.next++]!];
        break;
      }
      stack.pop();
    }
  }
}

/** A TypeError for a cycle, naming where it closed (as JSON.stringify refuses one). */
function cycleError(stack: readonly WalkFrame[]): TypeError {
  return new TypeError(`Converting circular structure to JSON (at ${shownPath(stack.map(currentKey))})`);
}

/**
 * Exactly `JSON.stringify(value)`, at any depth: values at most
 * NATIVE_DEPTH deep go to JSON.stringify itself, deeper ones through an
 * iterative encoder with the same rules (toJSON, boxed primitives,
 * non-finite numbers as null, undefined/functions/symbols left out of
 * objects and null in arrays, TypeError for bigints and cycles). For JSON
 * data (what JSON.parse and zod return), its output is byte for byte
 * JSON.stringify's; the stored bytes of the log and the state tables do
 * not change. Like JSON.stringify, returns undefined for a top-level
 * undefined, function or symbol.
 */
export function stringifyJson(value: unknown): string {
  if (!jsonBoundsViolation(value, { maxDepth: NATIVE_DEPTH })) return JSON.stringify(value);
  return stringifyDeep(value);
}

/** JSON.stringify's SerializeJSONProperty up to the container: the value after toJSON and unboxing. */
function jsonValueOf(value: unknown, key: string): unknown {
  if ((typeof value === 'object' && value !== null) || typeof value === 'bigint') {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = (toJSON as (key: string) => unknown).call(value, key);
  }
  if (typeof value === 'object' && value !== null) {
    if (value instanceof Number) return Number(value);
    if (value instanceof String) return String(value);
    if (value instanceof Boolean) return value.valueOf();
  }
  return value;
}

/** The JSON text of a non-container, or undefined for what JSON leaves out. */
function scalarJson(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new TypeError('Do not know how to serialize a BigInt');
    case 'object':
      return 'null'; // only null gets here
    default:
      return undefined;
  }
}

interface StringifyFrame extends WalkFrame {
  /** Whether a member was written (objects: for the comma). */
  wrote: boolean;
}

function stringifyDeep(root: unknown): string {
  const stack: StringifyFrame[] = [];
  const ancestors = new Set<object>();
  let out = '';
  let current = jsonValueOf(root, '');
  for (;;) {
    if (current !== null && typeof current === 'object') {
      if (stack.length >= NATIVE_DEPTH) {
        if (ancestors.has(current)) throw cycleError(stack);
        ancestors.add(current);
      }
      const isArray = Array.isArray(current);
      out += isArray ? '[' : '{';
      stack.push({ container: current, keys: isArray ? null : Object.keys(current), next: 0, wrote: false });
    } else {
      // The root or an array item: object members that are not containers are written below.
      const text = scalarJson(current);
      if (stack.length === 0) return text as string; // JSON.stringify(undefined) is undefined, too
      out += text ?? 'null';
    }
    // The next member to write, closing the containers that are done.
    for (;;) {
      const frame = stack.at(-1);
      if (!frame) return out;
      const container = frame.container as Record<string | number, unknown>;
      if (frame.keys === null) {
        if (frame.next < (container as unknown as unknown[]).length) {
          if (frame.next > 0) out += ',';
          current = jsonValueOf(container[frame.next], String(frame.next));
          frame.next++;
          break;
        }
      } else {
        let found = false;
        while (frame.next < frame.keys.length) {
          const key = frame.keys[frame.next++]!;
          const item = jsonValueOf(container[key], key);
          if (item !== null && typeof item === 'object') {
            // A container member: its key now, its text as it is walked.
            out += `${frame.wrote ? ',' : ''}${JSON.stringify(key)}:`;
            frame.wrote = true;
            current = item;
            found = true;
            break;
          }
          const text = scalarJson(item);
          if (text === undefined) continue;
          out += `${frame.wrote ? ',' : ''}${JSON.stringify(key)}:${text}`;
          frame.wrote = true;
        }
        if (found) break;
      }
      out += frame.keys === null ? ']' : '}';
      stack.pop();
      if (stack.length >= NATIVE_DEPTH) ancestors.delete(frame.container);
    }
  }
}

/**
 * A deep copy of a JSON value (plain objects and arrays copied, every
 * other value shared), at any depth; what MemoryStateStore keeps of each
 * row. Properties whose value is undefined are kept, as structuredClone
 * keeps them. Objects that are neither plain nor arrays (a Date, a Map:
 * not JSON) are copied by structuredClone. Throws TypeError for a cycle.
 */
export function cloneJson<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (!isPlain(value)) return structuredClone(value);
  const ancestors = new Set<object>();
  const root = emptyCopyOf(value);
  const stack: CopyFrame[] = [{ container: value, keys: Array.isArray(value) ? null : Object.keys(value), next: 0, copy: root }];
  while (stack.length > 0) {
    const frame = stack.at(-1)!;
    const length = frame.keys ? frame.keys.length : (frame.container as unknown[]).length;
    if (frame.next >= length) {
      stack.pop();
      if (stack.length >= NATIVE_DEPTH) ancestors.delete(frame.container);
      continue;
    }
    const key = frame.keys ? frame.keys[frame.next]! : frame.next;
    frame.next++;
    const item = (frame.container as Record<string | number, unknown>)[key];
    if (item === null || typeof item !== 'object') frame.copy[key] = item;
    else if (!isPlain(item)) frame.copy[key] = structuredClone(item);
    else {
      if (stack.length >= NATIVE_DEPTH) {
        if (ancestors.has(item)) throw cycleError(stack);
        ancestors.add(item);
      }
      const copy = emptyCopyOf(item);
      frame.copy[key] = copy;
      stack.push({ container: item, keys: Array.isArray(item) ? null : Object.keys(item), next: 0, copy });
    }
  }
  return root as T;
}

interface CopyFrame extends WalkFrame {
  copy: Record<string | number, unknown>;
}

/** Arrays and objects whose prototype is Object's or none: what JSON.parse builds. */
function isPlain(value: object): boolean {
  if (Array.isArray(value)) return true;
  const prototype = Object.getPrototypeOf(value) as object | null;
  return prototype === Object.prototype || prototype === null;
}

function emptyCopyOf(source: object): Record<string | number, unknown> {
  return Array.isArray(source) ? (new Array<unknown>(source.length) as unknown as Record<number, unknown>) : {};
}

/**
 * `value` itself when it nests at most `maxDepth` levels; otherwise a copy
 * in which every container deeper than that is replaced by `placeholder`
 * (the rest shared with `value`, which is not changed). Iterative. For
 * values served to readers that recurse (JSON encoders, renderers): see
 * MAX_VIEWER_JSON_DEPTH.
 */
export function clipJsonDepth<T>(value: T, maxDepth: number, placeholder: unknown = JSON_TOO_DEEP_PLACEHOLDER): T {
  if (!jsonBoundsViolation(value, { maxDepth })) return value;
  if (maxDepth < 1) return placeholder as T; // value is a container, deeper than allowed
  const rootSource = value as object;
  const root = emptyCopyOf(rootSource);
  const stack: CopyFrame[] = [
    { container: rootSource, keys: Array.isArray(rootSource) ? null : Object.keys(rootSource), next: 0, copy: root },
  ];
  while (stack.length > 0) {
    const frame = stack.at(-1)!;
    const length = frame.keys ? frame.keys.length : (frame.container as unknown[]).length;
    if (frame.next >= length) {
      stack.pop();
      continue;
    }
    const key = frame.keys ? frame.keys[frame.next]! : frame.next;
    frame.next++;
    const item = (frame.container as Record<string | number, unknown>)[key];
    if (item === null || typeof item !== 'object') frame.copy[key] = item;
    else if (stack.length >= maxDepth) frame.copy[key] = placeholder;
    else if (!jsonBoundsViolation(item, { maxDepth: maxDepth - stack.length })) frame.copy[key] = item; // fits: share it
    else {
      const copy = emptyCopyOf(item);
      frame.copy[key] = copy;
      stack.push({ container: item, keys: Array.isArray(item) ? null : Object.keys(item), next: 0, copy });
    }
  }
  return root as T;
}

/**
 * `JSON.stringify(value, null, indent)` for what a human reads (indented
 * CLI output); a value nested deeper than NATIVE_DEPTH (facts an older
 * coordinator accepted) comes out as stringifyJson's unindented JSON
 * instead of overflowing the stack.
 */
export function indentedJson(value: unknown, indent: number | undefined): string {
  if (!jsonBoundsViolation(value, { maxDepth: NATIVE_DEPTH })) return JSON.stringify(value, null, indent);
  return stringifyDeep(value);
}
