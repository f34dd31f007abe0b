// No import circle anywhere in the tree (issue 19): a module graph with a cycle makes load order
// decide what a module sees (a class `undefined` at import time), and a circle between folders
// means the layering (protocol, nix <- castore <- coordinator, agent) no longer holds.
//
// The graph is every .ts file's static imports and re-exports. (The `typescript` package here is
// 7.x, the native compiler, with no JavaScript parser API; the statements are found by a regex over
// the text with its comments and template literals blanked out, anchored at a statement's start.)
// Left out, because nothing of them exists when the program runs: `import type` and
// `export type … from`. This tree compiles with verbatimModuleSyntax, so `import { type A }` stays
// an import at run time and counts. Dynamic `import()` is left out too: it loads when called, not
// when its importer loads, which is how the command line defers heavy modules.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const SKIPPED_DIRECTORIES = new Set(['node_modules', 'build', 'vendor', 'dist', 'coverage']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name.startsWith('.')) return [];
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return SKIPPED_DIRECTORIES.has(entry.name) ? [] : sourceFiles(full);
    return entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [full] : [];
  });
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The file a relative specifier names (`./x.js` is `./x.ts` in source), or undefined for a package. */
function resolve(from: string, specifier: string): string | undefined {
  if (!specifier.startsWith('.')) return undefined;
  const target = path.resolve(path.dirname(from), specifier);
  const candidates = [target.replace(/\.js$/, '.ts'), `${target}.ts`, path.join(target, 'index.ts'), target];
  return candidates.find((candidate) => candidate.endsWith('.ts') && isFile(candidate));
}

/**
 * `text` with comments and the insides of template literals replaced by spaces (newlines kept),
 * so that neither can hold something that looks like an import. Quoted strings stay: import
 * specifiers are quoted strings; one that never closes ends at its line.
 */
export function codeOnly(text: string): string {
  const out = text.split('');
  let at = 0;
  const blank = (from: number, to: number) => {
    for (let index = from; index < to; index++) if (out[index] !== '\n') out[index] = ' ';
  };
  while (at < text.length) {
    const char = text[at]!;
    const next = text[at + 1];
    if (char === '/' && next === '/') {
      const end = text.indexOf('\n', at);
      const stop = end === -1 ? text.length : end;
      blank(at, stop);
      at = stop;
    } else if (char === '/' && next === '*') {
      const end = text.indexOf('*/', at + 2);
      const stop = end === -1 ? text.length : end + 2;
      blank(at, stop);
      at = stop;
    } else if (char === '`') {
      let end = at + 1;
      while (end < text.length && text[end] !== '`') end += text[end] === '\\' ? 2 : 1;
      blank(at + 1, end);
      at = end + 1;
    } else if (char === "'" || char === '"') {
      let end = at + 1;
      while (end < text.length && text[end] !== char && text[end] !== '\n') end += text[end] === '\\' ? 2 : 1;
      at = end + 1;
    } else {
      at++;
    }
  }
  return out.join('');
}

/** A static import or re-export at a statement's start: its keyword, whether it is type-only, its specifier. */
const STATIC_IMPORT = /(?:^|[;{}])\s*(import|export)\s+(type\s+(?!from\b))?(?:[\w$*{},\s]*?\s*from\s*)?(['"])([^'"\n]+)\3/gm;

/** The files `file` imports when it loads. */
export function runtimeImports(file: string, text = readFileSync(file, 'utf8')): string[] {
  const specifiers: string[] = [];
  for (const match of codeOnly(text).matchAll(STATIC_IMPORT)) {
    const [, , typeOnly, , specifier] = match;
    if (!typeOnly) specifiers.push(specifier!);
  }
  return [...new Set(specifiers.map((specifier) => resolve(file, specifier)).filter((target): target is string => target !== undefined))];
}

/** Strongly connected components of more than one file, or of one that imports itself (Tarjan). */
export function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  // Iterative: a deep import chain must not overflow the call stack.
  for (const start of graph.keys()) {
    if (index.has(start)) continue;
    const work: { node: string; next: number }[] = [{ node: start, next: 0 }];
    index.set(start, counter);
    low.set(start, counter++);
    stack.push(start);
    onStack.add(start);
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const edges = graph.get(frame.node) ?? [];
      if (frame.next < edges.length) {
        const target = edges[frame.next++]!;
        if (!index.has(target)) {
          index.set(target, counter);
          low.set(target, counter++);
          stack.push(target);
          onStack.add(target);
          work.push({ node: target, next: 0 });
        } else if (onStack.has(target)) {
          low.set(frame.node, Math.min(low.get(frame.node)!, index.get(target)!));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1]!.node;
        low.set(parent, Math.min(low.get(parent)!, low.get(frame.node)!));
      }
      if (low.get(frame.node) === index.get(frame.node)) {
        const component: string[] = [];
        let member: string;
        do {
          member = stack.pop()!;
          onStack.delete(member);
          component.push(member);
        } while (member !== frame.node);
        if (component.length > 1 || (graph.get(frame.node) ?? []).includes(frame.node)) found.push(component.sort());
      }
    }
  }
  return found;
}

/** One concrete circle through a component, `a -> b -> … -> a`, for the failure message: the shortest from its first file. */
export function circleThrough(component: readonly string[], graph: ReadonlyMap<string, readonly string[]>): string[] {
  const members = new Set(component);
  const start = component[0]!;
  const previous = new Map<string, string>();
  const queue = [start];
  for (let at = 0; at < queue.length && !previous.has(start); at++) {
    for (const next of graph.get(queue[at]!) ?? []) {
      if (!members.has(next) || (next !== start && previous.has(next))) continue;
      previous.set(next, queue[at]!);
      if (next === start) break;
      queue.push(next);
    }
  }
  const circle = [start];
  for (let node = previous.get(start)!; node !== start; node = previous.get(node)!) circle.unshift(node);
  return [start, ...circle];
}

describe('the import graph', () => {
  it('finds a circle when there is one, and names it', () => {
    const graph = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a', 'd']],
      ['d', []],
      ['e', ['e']],
    ]);
    const found = cycles(graph);
    expect(found).toEqual([['a', 'b', 'c'], ['e']]);
    expect(circleThrough(found[0]!, graph)).toEqual(['a', 'b', 'c', 'a']);
    expect(circleThrough(found[1]!, graph)).toEqual(['e', 'e']);
  });

  it('leaves out type-only imports and dynamic import(), keeps `import { type A }` (verbatimModuleSyntax)', () => {
    const file = path.join(root, 'castore', 'index.ts');
    const imports = runtimeImports(
      file,
      [
        "import type { A } from './node.js';",
        "export type { B } from './errors.js';",
        "import { type C } from './directory.js';",
        "export { D } from './bundle.js';",
        "const lazy = () => import('./fsck.js');",
        '// import { E } from "./references-first.js";',
        'const text = `',
        "import { F } from './nar-export.js';",
        '`;',
        "import * as G from './errors.js';",
        "export * from './node.js';",
      ].join('\n'),
    );
    expect(imports.map((target) => path.relative(root, target)).sort()).toEqual(['castore/bundle.ts', 'castore/directory.ts', 'castore/errors.ts', 'castore/node.ts']);
  });

  it('keeps the site relay a layer of its own: relay/ imports protocol/, nix/ and castore/ only (types included)', () => {
    const files = sourceFiles(path.join(root, 'relay'));
    expect(files.length).toBeGreaterThan(3);
    const edges = files.flatMap((file) =>
      [...codeOnly(readFileSync(file, 'utf8')).matchAll(/\bfrom\s*(['"])(\.{1,2}\/[^'"\n]+)\1/g)].map((match) => ({
        file: path.relative(root, file),
        folder: path.relative(root, path.resolve(path.dirname(file), match[2]!)).split(path.sep)[0]!,
      })),
    );
    expect(new Set(edges.map((edge) => edge.folder))).toContain('castore');
    expect(edges.filter((edge) => !['protocol', 'nix', 'castore', 'relay'].includes(edge.folder)).map((edge) => `${edge.file} -> ${edge.folder}/`)).toEqual([]);
  });

  it('has no circle anywhere in the tree', () => {
    const files = sourceFiles(root);
    expect(files.length).toBeGreaterThan(100);
    const graph = new Map(files.map((file) => [file, runtimeImports(file)]));
    // The parser sees the imports that are there: the castore's entry re-exports its parts.
    expect(graph.get(path.join(root, 'castore', 'index.ts'))).toContain(path.join(root, 'castore', 'errors.ts'));
    const circles = cycles(graph).map((component) => circleThrough(component, graph).map((file) => path.relative(root, file)).join(' -> '));
    expect(circles, `import circles:\n${circles.join('\n')}`).toEqual([]);
  });
});
