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
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'build', 'cli-bundle');
/** Bundled packages: plain JavaScript, no files of their own read at run time. */
const BUNDLED_PACKAGES = new Set(['zod', '@noble/ed25519']);

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
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'warning',
  plugins: [
    {
      name: 'external-packages',
      setup(builder) {
        builder.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('node:') || !BUNDLED_PACKAGES.has(packageName(args.path)) ? { path: args.path, external: true } : undefined));
      },
    },
  ],
});
