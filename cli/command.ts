/**
 * A small command framework for `ferry`: commands are declared as data
 * (path, summary, options), so help text, option parsing and error
 * reporting are uniform across every group, and a command's `run` only
 * sees validated options.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { TerminalOutput } from './terminal-text.js';
import { indentedJson, stringifyJson } from '../protocol/json-bounds.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in help; for string options, the placeholder of the value (e.g. `DIR`). */
  valueName?: string;
  description: string;
  default?: string | boolean;
}

export type OptionValues = Record<string, string | boolean | string[] | boolean[] | undefined>;

export interface CommandContext {
  args: string[];
  options: OptionValues;
  /**
   * Where a command prints. Text for a human is TerminalText (`term`, `table`, `block`), escaped
   * so that nothing someone else wrote can drive the terminal (cli/terminal-text.ts); `raw` is for
   * exact bytes only (`writeJson`, NARs, bundles, exports).
   */
  stdout: TerminalOutput;
  stderr: TerminalOutput;
  stdin: NodeJS.ReadableStream;
}

export interface Command {
  /** Words after `ferry`, e.g. `['nar', 'dump']`. */
  path: string[];
  summary: string;
  /** Positional arguments as shown in usage, e.g. `<file.nar|-> <dir>`. */
  args?: string;
  /** Longer explanation shown by `--help`. */
  description?: string;
  /** Inclusive bounds on the number of positional arguments. */
  minArgs?: number;
  maxArgs?: number;
  options?: Record<string, OptionSpec>;
  /** Returns the exit code (0 when nothing is returned). */
  run(context: CommandContext): Promise<number | void>;
}

export interface CommandGroup {
  name: string;
  summary: string;
  /** The commands of the module that declares this group's (possibly with another group's), loaded on demand. */
  load(): Promise<Command[]>;
}

/** A user mistake on the command line: printed with the usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  constructor(
    message: string,
    readonly command?: Command,
  ) {
    super(message);
  }
}

export const jsonOption: Record<string, OptionSpec> = {
  json: { type: 'boolean', description: 'print machine-readable JSON instead of text' },
};

export const helpOption: OptionSpec = { type: 'boolean', short: 'h', description: 'show this help' };

export function formatCommandHelp(command: Command): string {
  const lines = [`Usage: ferry ${command.path.join(' ')}${command.options ? ' [options]' : ''}${command.args ? ` ${command.args}` : ''}`, '', command.summary];
  if (command.description) lines.push('', command.description.trim());
  const options = { ...command.options, help: helpOption };
  lines.push('', 'Options:');
  const rows = Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type === 'string' ? ` ${spec.valueName ?? 'VALUE'}` : ''}`;
    const extra = [spec.multiple ? 'repeatable' : '', spec.default !== undefined && spec.default !== false ? `default: ${String(spec.default)}` : '']
      .filter(Boolean)
      .join(', ');
    return [flag, `${spec.description}${extra ? ` (${extra})` : ''}`] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length));
  for (const [flag, text] of rows) lines.push(`  ${flag.padEnd(width)}  ${text}`);
  return `${lines.join('\n')}\n`;
}

/**
 * Parses `argv` (the words after the command path) against the command's
 * option specs. Refuses unknown options, missing option values and a wrong
 * number of positionals with a UsageError naming the offending word.
 */
export function parseCommandLine(command: Command, argv: string[]): { args: string[]; options: OptionValues; help: boolean } {
  const options = { ...command.options, help: helpOption };
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: Object.fromEntries(
        Object.entries(options).map(([name, spec]) => [
          name,
          {
            type: spec.type,
            ...(spec.short ? { short: spec.short } : {}),
            ...(spec.multiple ? { multiple: true } : {}),
            ...(spec.default !== undefined ? { default: spec.default } : {}),
          },
        ]),
      ) as NonNullable<ParseArgsConfig['options']>,
    });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message.replace(/\. To specify a positional.*$/s, '') : String(error), command);
  }
  const values = parsed.values as OptionValues;
  const help = values.help === true;
  delete values.help;
  if (!help) {
    const count = parsed.positionals.length;
    if (command.minArgs !== undefined && count < command.minArgs) {
      throw new UsageError(`missing argument: expected ${command.args ?? `${command.minArgs} argument(s)`}`, command);
    }
    if (count > (command.maxArgs ?? Infinity)) {
      throw new UsageError(`unexpected argument '${parsed.positionals[command.maxArgs ?? 0]}'`, command);
    }
  }
  return { args: parsed.positionals, options: values, help };
}

export function stringOption(options: OptionValues, name: string): string | undefined {
  const value = options[name];
  return typeof value === 'string' ? value : undefined;
}

export function stringListOption(options: OptionValues, name: string): string[] {
  const value = options[name];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : typeof value === 'string' ? [value] : [];
}

export function booleanOption(options: OptionValues, name: string): boolean {
  return options[name] === true;
}

/**
 * `--json` output: exactly JSON.stringify of `value` (indented), on the raw stream. Not escaped for
 * a terminal: JSON escaping already makes control characters inert text, and a script must get
 * the exact strings back.
 */
export function writeJson(out: TerminalOutput, value: unknown): void {
  out.raw.write(`${indentedJson(value, 2)}\n`);
}


/** One JSON value on one line, exactly (the JSON Lines of `--json` streams such as `ferry audit log --json`). */
export function writeJsonLine(out: TerminalOutput, value: unknown): void {
  out.raw.write(`${stringifyJson(value)}\n`);
}
