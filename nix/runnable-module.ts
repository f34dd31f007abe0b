/**
 * Modules that run apart from the module that names them: the code of a
 * worker thread, and the viewer's browser script. Each is a real TypeScript
 * module that tsc checks, named as an import would name it, a `.js` URL
 * relative to the naming module's `import.meta.url` (`./x-worker.js`).
 * That name is found in every way Ferry runs:
 *
 * - from build/ (tsc's output): `x-worker.js` is beside the module naming it;
 * - from the CLI bundle (build/cli-bundle/): scripts/bundle-cli.mjs rewrites
 *   each such URL to the same file in build/, seen from the bundle's chunks;
 * - from the sources (vitest, `node --import tsx`): only `x-worker.ts`
 *   exists, and no loader reaches a worker thread on Node 20 (a worker runs
 *   no `--import`). The module is compiled here with esbuild, a development
 *   dependency, like any development run's TypeScript: once per process,
 *   ~6 ms after esbuild's first start (~0.2 s).
 *
 * A worker module may import Node's built-ins and relative modules only:
 * from the sources it runs from a data: URL, which resolves no package name.
 * A worker that needs a package is handed its resolved path.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

type Platform = 'node' | 'browser';

interface Esbuild {
  buildSync(options: Record<string, unknown>): { outputFiles: { text: string }[] };
}

const compiled = new Map<string, string>();

/** The TypeScript source of `entry` (a `.js` URL), compiled: for a worker thread (ESM) or a browser (a classic script). */
function compileSource(entry: URL, platform: Platform): string {
  const source = fileURLToPath(entry).replace(/\.js$/, '.ts');
  const key = `${platform}:${source}`;
  let text = compiled.get(key);
  if (text === undefined) {
    if (!existsSync(source)) throw new Error(`${fileURLToPath(entry)} is missing, and so is its source ${source}`);
    const esbuild = createRequire(import.meta.url)('esbuild') as Esbuild;
    const [output] = esbuild.buildSync({ entryPoints: [source], write: false, logLevel: 'silent', ...moduleBuildOptions(platform) }).outputFiles;
    text = output!.text;
    compiled.set(key, text);
  }
  return text;
}

/**
 * esbuild's options for a module that runs apart, by where it runs; the
 * build (scripts/bundle-cli.mjs) compiles the viewer's script with these
 * too, so the sources and build/ serve the same script.
 */
export function moduleBuildOptions(platform: Platform): Record<string, unknown> {
  return platform === 'node'
    ? { bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external' }
    : { bundle: true, platform: 'browser', format: 'iife', target: 'es2020', charset: 'utf8' };
}

/**
 * Starts a worker thread running the module `entry` names (a `.js` URL
 * beside the caller, see above) with `options`; the worker runs without the
 * parent's execArgv unless `options` says otherwise. Throws when neither the
 * module nor its source exists.
 */
export function startModuleWorker(entry: URL, options: WorkerOptions = {}): Worker {
  const file = existsSync(fileURLToPath(entry)) ? entry : new URL(`data:text/javascript,${encodeURIComponent(compileSource(entry, 'node'))}`);
  return new Worker(file, { execArgv: [], ...options });
}

/**
 * The text of the browser script `entry` names (a `.js` URL beside the
 * caller, see above): the built file, or its source compiled. Throws when
 * neither exists.
 */
export function browserScriptText(entry: URL): string {
  const file = fileURLToPath(entry);
  return existsSync(file) ? readFileSync(file, 'utf8') : compileSource(entry, 'browser');
}
