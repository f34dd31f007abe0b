// Compiles each browser script (`*.browser.ts`, checked by tsc with
// tsconfig.browser.json) into build/, beside where tsc puts the modules
// that serve it, with the options that compile it from the sources
// (nix/runnable-module.ts, `moduleBuildOptions`): an installed Ferry serves
// the script the sources would. Run by `npm run build` after tsc.
import { build } from 'esbuild';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { moduleBuildOptions } = await import(path.join(root, 'build', 'nix', 'runnable-module.js'));
const FOLDERS = ['protocol', 'nix', 'castore', 'coordinator', 'agent', 'cli'];

const scripts = FOLDERS.flatMap((folder) =>
  readdirSync(path.join(root, folder), { recursive: true })
    .filter((name) => name.endsWith('.browser.ts'))
    .map((name) => path.join(folder, name)),
);
for (const script of scripts) {
  await build({ entryPoints: [path.join(root, script)], outfile: path.join(root, 'build', script.replace(/\.ts$/, '.js')), logLevel: 'warning', ...moduleBuildOptions('browser') });
}
