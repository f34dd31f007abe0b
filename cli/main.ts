/**
 * Entry point of the `ferry` command: finds the command named by the first
 * words of argv, parses its options and runs it. Typed errors from the
 * libraries are printed as `ferry: error [CODE]: message` with exit code 1
 * (CODE from protocol/errors.ts for anything a coordinator answered);
 * command-line mistakes print usage with exit code 2.
 *
 * This is where the real stdout and stderr are wrapped: commands get
 * TerminalOutputs (cli/terminal-text.ts), and every message printed here,
 * error messages that may quote a coordinator's answer included, is escaped
 * for the terminal as well.
 */
import { FerryError } from '../protocol/errors.js';
import { commandGroups, commandsOfGroup } from './commands.js';
import { formatCommandHelp, parseCommandLine, UsageError, type Command, type CommandContext } from './command.js';
import { block, term, terminalOutput } from './terminal-text.js';
import { FERRY_VERSION } from '../protocol/version.js';

function formatTopLevelHelp(): string {
  const lines = [
    'ferry — ship Nix closures to fleets of machines that do not run Nix',
    '',
    'Usage: ferry <group> <command> [options] [args]',
    '       ferry <group> --help       list a group\'s commands',
    '       ferry <group> <command> --help',
    '',
    'Command groups:',
  ];
  const width = Math.max(...commandGroups.map((group) => group.name.length));
  for (const group of commandGroups) lines.push(`  ${group.name.padEnd(width)}  ${group.summary}`);
  lines.push('', 'Data commands accept --json. Documentation: README.md and docs/.');
  return `${lines.join('\n')}\n`;
}

function formatGroupHelp(group: string, commands: Command[]): string {
  const lines = [`Usage: ferry ${group} <command> [options]`, '', 'Commands:'];
  const names = commands.map((command) => `${command.path.join(' ')}${command.args ? ` ${command.args}` : ''}`);
  const width = Math.max(...names.map((name) => name.length));
  commands.forEach((command, i) => lines.push(`  ${names[i]!.padEnd(width)}  ${command.summary}`));
  return `${lines.join('\n')}\n`;
}

function findCommand(commands: Command[], argv: string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const command of commands) {
    const matches = command.path.every((word, i) => argv[i] === word);
    if (matches && (!best || command.path.length > best.path.length)) best = command;
  }
  return best ? { command: best, rest: argv.slice(best.path.length) } : undefined;
}

/**
 * The code shown in `ferry: error [CODE]`: a FerryError's code as it
 * travelled (a coordinator's code this client does not know is shown as
 * sent), else the code of a library's own local error (castore, nix, the
 * agent's state, a Node errno), which never crosses a transport.
 */
function errorCode(error: unknown): string | undefined {
  if (error instanceof FerryError) return error.sentCode;
  if (error && typeof error === 'object' && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}

/** A reader that goes away (`ferry nar ls x | head`) ends the command quietly, as Unix tools do. */
function exitQuietlyOnClosedStdout(): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
}

export async function main(argv: string[]): Promise<number> {
  exitQuietlyOnClosedStdout();
  const stdout = terminalOutput(process.stdout);
  const stderr = terminalOutput(process.stderr);
  const context: Omit<CommandContext, 'args' | 'options'> = { stdout, stderr, stdin: process.stdin };
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    stdout.write(block(formatTopLevelHelp()));
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version') {
    stdout.write(term`ferry ${FERRY_VERSION}\n`);
    return 0;
  }
  // Only the named group's module is loaded (cli/commands.ts).
  const groupCommands = await commandsOfGroup(argv[0]!);
  const found = findCommand(groupCommands, argv);
  if (!found) {
    if (groupCommands.length > 0) {
      const asksHelp = argv.length === 1 || argv[1] === '--help' || argv[1] === '-h';
      if (!asksHelp) stderr.write(term`ferry: unknown command '${argv.slice(0, 2).join(' ')}'\n\n`);
      (asksHelp ? stdout : stderr).write(block(formatGroupHelp(argv[0]!, groupCommands)));
      return asksHelp ? 0 : 2;
    }
    stderr.write(term`ferry: unknown command group '${argv[0]}' (see 'ferry --help')\n`);
    return 2;
  }
  const { command, rest } = found;
  try {
    const { args, options, help } = parseCommandLine(command, rest);
    if (help) {
      stdout.write(block(formatCommandHelp(command)));
      return 0;
    }
    return (await command.run({ ...context, args, options })) ?? 0;
  } catch (error) {
    if (error instanceof UsageError) {
      stderr.write(term`ferry: ${block(error.message).indented('  ')}\n\n${block(formatCommandHelp(error.command ?? command))}`);
      return 2;
    }
    // The code and the message may be the coordinator's, quoting what a client sent: escaped like
    // any value. A message keeps its lines (a failed command's output) but they are indented, so
    // none can pass for a line of ferry's own.
    const code = errorCode(error);
    const message = error instanceof Error ? error.message : String(error);
    stderr.write(term`ferry: error${code ? term` [${code}]` : ''}: ${block(message).indented('  ')}\n`);
    if (process.env.FERRY_DEBUG && error instanceof Error) stderr.write(term`${block(error.stack ?? '')}\n`);
    return 1;
  }
}
