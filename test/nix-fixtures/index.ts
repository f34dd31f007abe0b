/**
 * Real-Nix fixtures for tests and benchmarks. Where `nix-store` exists
 * (Debian's nix-bin, running as root without nixpkgs or network), builds
 * small closures whose builder is a static busybox. Nothing here is a mock:
 * the paths are real store paths in the machine's /nix/store.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Settings that let Debian's Nix build as root without build users or substituters. */
export const nixEnv: NodeJS.ProcessEnv = {
  ...process.env,
  NIX_CONFIG: [
    'build-users-group =',
    'substituters =',
    'experimental-features = nix-command',
    'sandbox = false',
    'narinfo-cache-negative-ttl = 0',
    'narinfo-cache-positive-ttl = 0',
  ].join('\n'),
};

function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir, command);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Why real-Nix tests cannot run here, or undefined when they can. */
export function nixUnavailableReason(): string | undefined {
  if (!which('nix-store')) return 'nix-store not found (install Debian nix-bin; CI does)';
  if (!which('busybox')) return 'busybox not found (install Debian busybox-static; CI does)';
  if (process.getuid?.() !== 0) return 'real-Nix fixtures need root (single-user Nix without a daemon)';
  return undefined;
}

export function nix(args: string[], options: { input?: Buffer; command?: string } = {}): Buffer {
  return execFileSync(options.command ?? 'nix', args, {
    env: nixEnv,
    input: options.input,
    maxBuffer: 1 << 30,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export function nixStore(args: string[]): string {
  return nix(args, { command: 'nix-store' }).toString('utf8');
}

export interface FixtureClosure {
  /** The top-level path (the app), whose closure is all of `paths`. */
  top: string;
  /** Every path of the closure, as `nix-store -qR` lists them. */
  paths: string[];
  /** The named outputs. */
  greeting: string;
  lib: string;
  app: string;
}

/**
 * Builds (or reuses) the fixture closure. `salt` changes every output, so
 * tests that need paths unknown to some store get fresh ones.
 */
export function buildFixtureClosure(salt = ''): FixtureClosure {
  const out = (attr: string): string => buildFixture('fixture.nix', attr, salt);
  const greeting = out('greeting');
  const lib = out('lib');
  const app = out('app');
  const paths = nixStore(['-qR', app]).trim().split('\n');
  return { top: app, paths, greeting, lib, app };
}

/** Builds attribute `attr` of fixture `file` (beside this module) with the static busybox; returns its store path. */
function buildFixture(file: string, attr: string, salt: string): string {
  const busyboxPath = realpathSync(which('busybox') ?? '/bin/busybox');
  return nix([path.join(here, file), '--argstr', 'busyboxPath', busyboxPath, '--argstr', 'salt', salt, '-A', attr, '--no-out-link'], { command: 'nix-build' })
    .toString('utf8')
    .trim();
}

/**
 * Builds (or reuses) the two closures of diff-fixture.nix, whose
 * differences exercise every rule of `nix store diff-closures`: their
 * top-level paths.
 */
export function buildDiffFixture(salt = ''): { before: string; after: string } {
  return { before: buildFixture('diff-fixture.nix', 'before', salt), after: buildFixture('diff-fixture.nix', 'after', salt) };
}
