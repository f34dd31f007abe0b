/**
 * Reading a local Nix store through Nix's own commands (`nix-store`,
 * `nix path-info`), for `ferry push` on build machines. Ferry never parses
 * Nix's database itself: the commands are the stable interface, and they
 * work the same against a daemon or a single-user store.
 */
import { spawn, execFile } from 'node:child_process';
import { realpath } from 'node:fs/promises';
import { z } from 'zod';
import { NixError } from './errors.js';
import { normalizeNarHash } from './hash.js';
import { splitStorePathPrefix } from './store-path.js';

const nixCommandFlags = ['--extra-experimental-features', 'nix-command'];

/** Metadata of a valid store path as the local Nix store records it. */
export const LocalPathInfoSchema = z.object({
  path: z.string(),
  /** Normalised to `sha256:<nix32>` whatever notation this Nix version prints (2.8 prints SRI). */
  narHash: z.string().transform((value, context) => {
    try {
      return normalizeNarHash(value);
    } catch (error) {
      context.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  }),
  narSize: z.number().int().nonnegative(),
  references: z.array(z.string()),
  deriver: z.string().optional().nullable(),
  ca: z.string().optional().nullable(),
  signatures: z.array(z.string()).optional(),
  registrationTime: z.number().optional(),
});
export type LocalPathInfo = z.infer<typeof LocalPathInfoSchema>;

function commandFailure(command: string, args: string[], error: (Error & { code?: string | number | null }) | null, stderr: string): NixError {
  if (error?.code === 'ENOENT') {
    return new NixError('NIX_NOT_FOUND', `'${command}' not found on PATH: reading a local Nix store needs Nix installed (this machine has none)`);
  }
  const detail = stderr.trim().split('\n').slice(-3).join(' / ');
  return new NixError('NIX_COMMAND_FAILED', `'${command} ${args.join(' ')}' failed${detail ? `: ${detail}` : ''}`, { cause: error });
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { maxBuffer: 1 << 30, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(commandFailure(command, args, error, stderr));
      else resolve(stdout);
    });
  });
}

/**
 * Store path of something a user names on the command line: a store path, a
 * `./result` symlink, or a file inside a store path. Refuses (BAD_STORE_PATH)
 * anything that does not resolve into the store directory.
 */
export async function resolveToStorePath(userPath: string, storeDir = '/nix/store'): Promise<string> {
  let real: string;
  try {
    real = await realpath(userPath);
  } catch (error) {
    throw new NixError('BAD_STORE_PATH', `cannot resolve '${userPath}': ${(error as Error).message}`, { cause: error });
  }
  const split = splitStorePathPrefix(real, storeDir);
  if (!split) throw new NixError('BAD_STORE_PATH', `'${userPath}' resolves to '${real}', which is not inside ${storeDir}`);
  return split.storePath;
}

/** The closure of `paths` (every path they reference, transitively), as `nix-store -qR` lists it. */
export async function queryClosure(paths: string[]): Promise<string[]> {
  if (paths.length === 0) return [];
  const out = await run('nix-store', ['--query', '--requisites', ...paths]);
  return out.split('\n').filter(Boolean);
}

/**
 * Path infos (NarHash, NarSize, references, deriver, CA, signatures) of
 * valid store paths. Accepts both JSON shapes `nix path-info --json` has had
 * (an array before Nix 2.19, an object keyed by path after).
 */
export async function queryPathInfos(paths: string[]): Promise<LocalPathInfo[]> {
  if (paths.length === 0) return [];
  const out = await run('nix', [...nixCommandFlags, 'path-info', '--json', ...paths]);
  let parsed: unknown;
  try {
    parsed = JSON.parse(out);
  } catch (error) {
    throw new NixError('NIX_COMMAND_FAILED', `'nix path-info --json' printed invalid JSON`, { cause: error });
  }
  const entries = Array.isArray(parsed)
    ? parsed
    : Object.entries(z.record(z.string(), z.object({}).passthrough()).parse(parsed)).map(([path, info]) => ({ path, ...info }));
  return entries.map((entry, index) => {
    const result = LocalPathInfoSchema.safeParse(entry);
    if (!result.success) {
      throw new NixError('NIX_COMMAND_FAILED', `unexpected 'nix path-info --json' entry ${index}: ${result.error.message}`);
    }
    return result.data;
  });
}

/**
 * Streams the NAR of a store path from `nix-store --dump`. The stream fails
 * with NIX_COMMAND_FAILED if Nix exits non-zero, after the bytes it did
 * write; consumers that verify the NarHash notice either way.
 */
export async function* dumpStorePath(storePath: string): AsyncGenerator<Uint8Array> {
  const child = spawn('nix-store', ['--dump', storePath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    if (stderr.length < 64 * 1024) stderr += text;
  });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (error) => reject(commandFailure('nix-store', ['--dump', storePath], error, stderr)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(commandFailure('nix-store', ['--dump', storePath], null, stderr || `exit code ${code}`));
    });
  });
  exited.catch(() => undefined);
  try {
    for await (const chunk of child.stdout) yield chunk as Uint8Array;
    await exited;
  } finally {
    if (child.exitCode === null) child.kill();
  }
}
