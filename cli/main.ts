/**
 * Entry point of the `ferry` command: finds the command named by the first
 * words of argv, parses its options and runs it. Typed errors from the
 * libraries are printed as `ferry: error [CODE]: message` with exit code 1;
 * command-line mistakes print usage with exit code 2.
 */
import { allCommands, commandGroups } from './commands.js';
import { formatCommandHelp, parseCommandLine, UsageError, type Command, type CommandContext } from './command.js';

const VERSION = '0.1.0';

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

function findCommand(argv: string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const command of allCommands) {
    const matches = command.path.every((word, i) => argv[i] === word);
    if (matches && (!best || command.path.length > best.path.length)) best = command;
  }
  return best ? { command: best, rest: argv.slice(best.path.length) } : undefined;
}

function errorCode(error: unknown): string | undefined {
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
  const context: Omit<CommandContext, 'args' | 'options'> = {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
  };
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(formatTopLevelHelp());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version') {
    process.stdout.write(`ferry ${VERSION}\n`);
    return 0;
  }
  const found = findCommand(argv);
  if (!found) {
    const groupCommands = allCommands.filter((command) => command.path[0] === argv[0]);
    if (groupCommands.length > 0) {
      const asksHelp = argv.length === 1 || argv[1] === '--help' || argv[1] === '-h';
      if (!asksHelp) process.stderr.write(`ferry: unknown command '${argv.slice(0, 2).join(' ')}'\n\n`);
      (asksHelp ? process.stdout : process.stderr).write(formatGroupHelp(argv[0]!, groupCommands));
      return asksHelp ? 0 : 2;
    }
    process.stderr.write(`ferry: unknown command group '${argv[0]}' (see 'ferry --help')\n`);
    return 2;
  }
  const { command, rest } = found;
  try {
    const { args, options, help } = parseCommandLine(command, rest);
    if (help) {
      process.stdout.write(formatCommandHelp(command));
      return 0;
    }
    return (await command.run({ ...context, args, options })) ?? 0;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`ferry: ${error.message}\n\n${formatCommandHelp(error.command ?? command)}`);
      return 2;
    }
    const code = errorCode(error);
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`ferry: error${code ? ` [${code}]` : ''}: ${message}\n`);
    if (process.env.FERRY_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    return 1;
  }
}
