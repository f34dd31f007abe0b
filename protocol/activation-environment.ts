/**
 * What a config may put in its activation's `environment`, the one rule
 * the coordinator applies when a config is submitted and the agent applies
 * again before it runs a command (a signature proves who wrote a config,
 * not that it is sane). docs/agent.md, "The command environment", is the
 * user-facing statement of this rule; keep the two in step.
 *
 * The environment is for settings the command reads. A key that changes
 * how the command and every program it starts are loaded or interpreted
 * (the dynamic loader, the shell's start-up files, an interpreter's
 * preloads) is refused, and so are the variables the agent sets itself.
 * Nothing is lost by the refusal: the command is a shell command line, so
 * an author who really means it writes `LD_LIBRARY_PATH=… exec bin/x` in
 * the command, where a reviewer reads it, instead of in a map of settings.
 */
import { z } from 'zod';

/** Keys are shell variable names: upper case, digits and `_`, not starting with a digit. */
export const ENVIRONMENT_KEY_PATTERN = /^[A-Z_][A-Z0-9_]*$/;
/** The longest value of one variable. */
export const MAX_ENVIRONMENT_VALUE = 4096;

const LOADER = 'it makes the dynamic loader load other code into every program the command starts';
const GLIBC = 'glibc reads it to load files or code (it is ignored for setuid programs for that reason)';
const SHELL = 'it changes how the shell running the command reads and runs it';
const INTERPRETER = 'it makes an interpreter load or run other code';

/** Refused keys, with the reason the refusal gives. */
const REFUSED_KEYS: ReadonlyMap<string, string> = new Map([
  ['PATH', 'the agent sets a fixed PATH (docs/agent.md); a command that needs another one sets it in the command itself'],
  ['NIX_LD', LOADER],
  ['GLIBC_TUNABLES', GLIBC],
  ['GCONV_PATH', GLIBC],
  ['GETCONF_DIR', GLIBC],
  ['HOSTALIASES', GLIBC],
  ['LOCALDOMAIN', GLIBC],
  ['LOCPATH', GLIBC],
  ['NIS_PATH', GLIBC],
  ['NLSPATH', GLIBC],
  ['RESOLV_HOST_CONF', GLIBC],
  ['RES_OPTIONS', GLIBC],
  ['TZDIR', GLIBC],
  ['ENV', SHELL],
  ['IFS', SHELL],
  ['CDPATH', SHELL],
  ['GLOBIGNORE', SHELL],
  ['PS4', SHELL],
  ['SHELLOPTS', SHELL],
  ['BASHOPTS', SHELL],
  ['NODE_OPTIONS', INTERPRETER],
  ['NODE_PATH', INTERPRETER],
  ['PERLLIB', INTERPRETER],
  ['RUBYOPT', INTERPRETER],
  ['RUBYLIB', INTERPRETER],
  ['JAVA_TOOL_OPTIONS', INTERPRETER],
  ['_JAVA_OPTIONS', INTERPRETER],
  ['JDK_JAVA_OPTIONS', INTERPRETER],
]);

/** Refused key prefixes (checked after the exact keys), with the reason. */
const REFUSED_PREFIXES: readonly (readonly [string, string])[] = [
  ['FERRY_', 'FERRY_* variables are reserved: the agent sets them itself (docs/agent.md)'],
  ['LD_', LOADER],
  ['DYLD_', LOADER],
  ['NIX_LD_', LOADER],
  ['MALLOC_', GLIBC],
  ['BASH_', SHELL],
  ['PYTHON', INTERPRETER],
  ['PERL5', INTERPRETER],
  ['LUA_', INTERPRETER],
];

/** Why `key` may not be set in an activation environment, or undefined when it may. */
export function environmentKeyRefusal(key: string): string | undefined {
  if (!ENVIRONMENT_KEY_PATTERN.test(key)) return 'not a variable name: upper-case letters, digits and _, not starting with a digit';
  const exact = REFUSED_KEYS.get(key);
  if (exact) return exact;
  return REFUSED_PREFIXES.find(([prefix]) => key.startsWith(prefix))?.[1];
}

/** Why `value` may not be the value of a variable, or undefined when it may. */
function environmentValueRefusal(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'the value is not a string';
  if (value.length > MAX_ENVIRONMENT_VALUE) return `the value is longer than ${MAX_ENVIRONMENT_VALUE} characters`;
  // A NUL cannot be passed to a process: the string would be cut there.
  if (value.includes('\0')) return 'the value contains a NUL character';
  return undefined;
}

/** The first refused key or value of `environment`, naming the key; undefined when all of it is allowed. */
export function environmentRefusal(environment: Record<string, unknown>): { key: string; reason: string } | undefined {
  for (const [key, value] of Object.entries(environment)) {
    const reason = environmentKeyRefusal(key) ?? environmentValueRefusal(value);
    if (reason) return { key, reason };
  }
  return undefined;
}

/** A refused activation environment, on the agent: `key` names the variable. */
export class ActivationEnvironmentError extends Error {
  override readonly name = 'ActivationEnvironmentError';
  readonly code = 'ACTIVATION_ENVIRONMENT_REFUSED';
  constructor(
    readonly key: string,
    reason: string,
  ) {
    super(`activation.environment: ${key} is refused: ${reason}`);
  }
}

/**
 * Checks an activation environment a command is about to run with.
 * Refuses (ActivationEnvironmentError, naming the first bad key) a key
 * that environmentKeyRefusal refuses and a value that is not a string, is
 * too long or holds a NUL. Changes nothing.
 */
export function assertActivationEnvironment(environment: Record<string, unknown>): void {
  const refusal = environmentRefusal(environment);
  if (refusal) throw new ActivationEnvironmentError(refusal.key, refusal.reason);
}

/**
 * Adds one zod issue per refused key of `environment` (at `path` + key):
 * for schemas of what is submitted or received (the coordinator's config
 * submission, a bundle's manifest). Not for the audit log's replay schema:
 * an old log recorded before a key was refused must still replay.
 */
export function refineActivationEnvironment(environment: Record<string, unknown>, context: z.RefinementCtx, path: readonly (string | number)[] = []): void {
  for (const [key, value] of Object.entries(environment)) {
    const reason = environmentKeyRefusal(key) ?? environmentValueRefusal(value);
    if (reason) context.addIssue({ code: 'custom', path: [...path, key], message: `${key} is refused: ${reason}` });
  }
}

/** An activation environment as submitted or received: every key and value checked (see the module comment). */
export const ActivationEnvironmentSchema = z
  .record(z.string(), z.string())
  .superRefine((environment, context) => refineActivationEnvironment(environment, context));
