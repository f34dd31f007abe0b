// The package's public surface is its `exports` map: each layer's index.ts
// (types from the source, code from build/), the CLI's entry, nothing
// deeper. Checked as a consumer meets it: Node resolving `ferry/…` in a
// child process against the built tree (`npm test` builds first), and tsc
// resolving the types to the sources.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { Agent } from 'ferry/agent';
import type { LocalCastore } from 'ferry/castore';
import type { Coordinator } from 'ferry/coordinator';
import type { NixError } from 'ferry/nix';
import type { Identity } from 'ferry/protocol';
import type { Agent as SourceAgent } from '../agent/index.js';
import type { LocalCastore as SourceCastore } from '../castore/index.js';
import type { Coordinator as SourceCoordinator } from '../coordinator/index.js';
import type { NixError as SourceNixError } from '../nix/index.js';
import type { Identity as SourceIdentity } from '../protocol/index.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const packageJson = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; exports: Record<string, string | { types: string; default: string }> };

/** A name each entry must export: its reason to exist. */
const EXPECTED: Record<string, string> = {
  './protocol': 'FERRY_VERSION',
  './nix': 'parseStorePath',
  './castore': 'LocalCastore',
  './coordinator': 'Coordinator',
  './agent': 'Agent',
  './relay': 'RelayServer',
  './cli': 'main',
};

/** Runs an ES module script in a child Node whose working directory is the package, as a consumer's code inside it would. */
function nodeEval(script: string): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('package exports', () => {
  it('maps each layer to its index.ts (types) and its build (code), and nothing else', () => {
    expect(Object.keys(packageJson.exports).sort()).toEqual([...Object.keys(EXPECTED), './package.json'].sort());
    for (const subpath of Object.keys(EXPECTED)) {
      const target = packageJson.exports[subpath] as { types: string; default: string };
      expect(existsSync(path.join(root, target.types)), target.types).toBe(true);
      expect(target.default).toBe(`./build/${target.types.slice(2).replace(/\.ts$/, '.js')}`);
    }
  });

  it('resolves every entry in Node, and refuses a path inside a layer', () => {
    const checks = Object.entries(EXPECTED).map(([subpath, name]) => `[${JSON.stringify(subpath)}, ${JSON.stringify(name)} in (await import(${JSON.stringify(`${packageJson.name}${subpath.slice(1)}`)}))]`);
    const resolved = nodeEval(`console.log(JSON.stringify([${checks.join(', ')}]));`);
    expect(resolved.stderr).toBe('');
    expect(JSON.parse(resolved.stdout)).toEqual(Object.keys(EXPECTED).map((subpath) => [subpath, true]));
    const deep = nodeEval(`await import('${packageJson.name}/castore/local/local-castore.js').catch((error) => console.log(error.code));`);
    expect(deep.stdout.trim()).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });

  it('gives consumers the types of the sources (checked by tsc, which npm test runs)', () => {
    expectTypeOf<Agent>().toEqualTypeOf<SourceAgent>();
    expectTypeOf<LocalCastore>().toEqualTypeOf<SourceCastore>();
    expectTypeOf<Coordinator>().toEqualTypeOf<SourceCoordinator>();
    expectTypeOf<NixError>().toEqualTypeOf<SourceNixError>();
    expectTypeOf<Identity>().toEqualTypeOf<SourceIdentity>();
  });
});
