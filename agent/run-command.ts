/**
 * Running a config's activation or health-check command: `/bin/sh -c` in
 * the target's directory, with a timeout that kills the whole process
 * group, keeping the tail of its output for the report.
 *
 * The command gets a clean environment (commandEnvironment), never the
 * agent's own: the agent runs with its configuration, credentials and CA
 * settings in its environment (FERRY_CONFIG_DIR, HOME, SSL_CERT_FILE…),
 * and a command that behaved differently depending on how the agent was
 * started (a shell, systemd, a test) could not be reasoned about.
 * docs/agent.md, "The command environment", documents it.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { assertActivationEnvironment } from '../protocol/activation-environment.js';

export interface CommandResult {
  ok: boolean;
  exitCode: number | null;
  timedOut: boolean;
  /** Last few KiB of stdout+stderr. */
  outputTail: string;
}

const TAIL_BYTES = 4096;

/**
 * The directories of a command's PATH after the target's own `bin`: a
 * NixOS system's profile, then the usual places of other distributions.
 * Fixed, so a command finds the same programs whoever started the agent.
 */
export const COMMAND_PATH_DIRECTORIES = ['/run/current-system/sw/bin', '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'] as const;

/** What the agent tells a command about the deployment it runs for (the FERRY_* variables). */
export interface CommandContext {
  /** `activation` (also when a rollback re-activates an earlier generation), `health-check`, or `deactivation` (told to stop). */
  command: 'activation' | 'health-check' | 'deactivation';
  agentId: string;
  configId: string;
  generation: number;
  /** Where the target store path lives in this machine's store dir (the command's working directory). */
  target: string;
  stateDir: string;
  storeDir: string;
  /** The generation's decrypted secrets (agent/generation-secrets.ts secretsEnvironment), when its config references any. */
  secrets?: Record<string, string>;
  /** The generation's per-machine parameters (docs/secrets.md): over the config's own variables, under every FERRY_* one. */
  params?: Readonly<Record<string, string>>;
}

/**
 * The whole environment of an activation or health-check command: PATH
 * (the target's `bin`, then COMMAND_PATH_DIRECTORIES), the FERRY_*
 * variables of `context`, the config's own `configured` variables and the
 * machine's parameters (`context.params`), which replace configured ones
 * of the same name; PATH and FERRY_* cannot be either.
 * Nothing else: not one variable of the agent's environment. Refuses
 * (ActivationEnvironmentError, naming the key) a configured key the
 * coordinator refuses at submission (protocol/activation-environment.ts):
 * the agent checks again what it was sent, signed or not.
 */
export function commandEnvironment(context: CommandContext, configured: Record<string, string>): Record<string, string> {
  assertActivationEnvironment(configured);
  // Checked as a config's variables are (the coordinator refuses such names too): none can be PATH, LD_*, FERRY_*…
  if (context.params) assertActivationEnvironment(context.params);
  return {
    ...configured,
    // Per machine, so over the config's defaults; every variable below is the agent's own and wins.
    ...context.params,
    PATH: [path.join(context.target, 'bin'), ...COMMAND_PATH_DIRECTORIES].join(':'),
    FERRY_COMMAND: context.command,
    FERRY_AGENT_ID: context.agentId,
    FERRY_CONFIG_ID: context.configId,
    FERRY_GENERATION: String(context.generation),
    FERRY_TARGET: context.target,
    FERRY_STATE_DIR: context.stateDir,
    FERRY_STORE_DIR: context.storeDir,
    // Paths, never values (docs/secrets.md): FERRY_SECRETS_DIR and FERRY_SECRET_<NAME>.
    ...context.secrets,
  };
}

/**
 * Runs `command` with `/bin/sh -c` in `cwd` with exactly `env` (nothing
 * is inherited from the agent's environment; build it with
 * commandEnvironment). Never throws: a command that cannot start, fails,
 * or outlives `timeoutSeconds` (its whole process group is killed) is a
 * result with `ok: false` and the tail of its output.
 */
export function runCommand(command: string, options: { cwd: string; env: Record<string, string>; timeoutSeconds: number }): Promise<CommandResult> {
  return new Promise((resolve) => {
    let tail = '';
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
    };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn('/bin/sh', ['-c', command], { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      // spawn throws synchronously for arguments it cannot pass (a NUL in the command).
      resolve({ ok: false, exitCode: null, timedOut: false, outputTail: (error as Error).message });
      return;
    }
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, options.timeoutSeconds * 1000);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, exitCode: null, timedOut: false, outputTail: `${tail}${error.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0 && !timedOut, exitCode: code, timedOut, outputTail: tail });
    });
  });
}
