// Bundles the compiled CLI (build/cli/main.js and everything it imports) into
// build/cli-bundle/: one module per command group plus shared chunks, instead
// of ~160 modules (Ferry's own and zod's) resolved and loaded one by one. A
// command starts ~35 ms sooner (bench/README.md, "Fixed costs of an app
// change"): `ferry config submit` is on the path of every deployment.
//
// Packages with native code or files of their own found at run time (their
// bindings, WebAssembly, SQL migrations of drizzle) stay external and load
// from node_modules as before; pure-JS packages used on every command's
// path are bundled. Run by `npm run build` after tsc.
//
// Modules that run apart (nix/runnable-module.ts: worker threads) are named
// `new URL('./x.js', import.meta.url)`; in a bundle, import.meta.url is the
// chunk's, so each such name is rewritten to the same file in build/, seen
// from build/cli-bundle/, where every chunk is (no subfolders, so that one
// relative name holds for all of them).
import { build } from 'esbuild';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'build', 'cli-bundle');
/** Bundled packages: plain JavaScript, no files of their own read at run time. */
const BUNDLED_PACKAGES = new Set(['zod', '@noble/ed25519']);

/** `new URL('./x.js', import.meta.url)`: a module beside this one, named as an import names it. */
const MODULE_URL = /new URL\((['"])(\.{1,2}\/[^'"]+\.js)\1, import\.meta\.url\)/g;

const packageName = (specifier) => (specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]);

rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: [path.join(root, 'build', 'cli', 'main.js')],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  chunkNames: '[name]-[hash]',
  logLevel: 'warning',
  plugins: [
    {
      name: 'external-packages',
      setup(builder) {
        builder.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('node:') || !BUNDLED_PACKAGES.has(packageName(args.path)) ? { path: args.path, external: true } : undefined));
      },
    },
    {
      name: 'module-urls',
      setup(builder) {
        builder.onLoad({ filter: /\.js$/ }, (args) => {
          const text = readFileSync(args.path, 'utf8');
          if (!text.includes('import.meta.url')) return undefined;
          const contents = text.replace(MODULE_URL, (_, quote, name) => {
            const file = path.join(path.dirname(args.path), name);
            if (!existsSync(file)) throw new Error(`${args.path} names ${name}, which tsc did not write (${file})`);
            return `new URL(${JSON.stringify(path.relative(outdir, file))}, import.meta.url)`;
          });
          return { contents, loader: 'js' };
        });
      },
    },
  ],
});
