/** Plain-text tables and short forms for CLI output. */
import { UsageError } from './command.js';
import { term, type TerminalText } from './terminal-text.js';

/**
 * A table for a terminal: `headers`, then one line per row, columns padded
 * to their widest cell (null and undefined show as `-`). Every cell is
 * escaped as a line value (cli/terminal-text.ts) before it is measured, so a
 * cell holding a control character, a newline or a tab is shown escaped and
 * cannot clear the screen, forge a row or shift a column.
 */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): TerminalText {
  const cells = [headers, ...rows].map((row) => row.map((cell) => term`${cell ?? '-'}`));
  const widths = headers.map((_, column) => Math.max(...cells.map((row) => row[column]!.text.length)));
  const padding = (row: TerminalText[], column: number): string => (column === row.length - 1 ? '' : ' '.repeat(widths[column]! - row[column]!.text.length));
  return term`${cells.map((row) => term`${row.map((cell, column) => term`${column === 0 ? '' : '  '}${cell}${padding(row, column)}`)}\n`)}`;
}

/**
 * A multi-line message (an agent's last error: what failed, then the tail of
 * its output) on one table line: the first line and the last line of output,
 * which is where a failing command says why. `ferry agents show` has it whole.
 * Plain text, not yet escaped: print it through `table` or `term`.
 */
export function oneLine(text: string | null | undefined, max = 160): string | undefined {
  if (!text) return undefined;
  const lines = text.split('\n').map((line) => line.trim()).filter(Boolean);
  // "…; output:" introduces the output's lines: the last of them follows, or nothing when there is none.
  const first = (lines[0] ?? '').replace(/[;:,]?\s*output:$/, '');
  const joined = lines.length > 1 ? `${first}: ${lines.at(-1)}` : first;
  return joined.length > max ? `${joined.slice(0, max - 1)}…` : joined;
}

/** The first 12 characters of a key or config id: enough to tell them apart in a listing. */
export function short(id: string | null | undefined): string {
  return id ? id.slice(0, 12) : '-';
}

export function ago(ms: number | null | undefined, now = Date.now()): string {
  if (!ms) return 'never';
  const seconds = Math.round((now - ms) / 1000);
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

/** Parses `30s`, `15m`, `24h`, `7d` (or plain seconds) into seconds. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+)([smhd]?)$/.exec(text);
  if (!match) return undefined;
  return Number(match[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
}

/** Parses repeated `key=value` options into an object; undefined names the bad one. */
export function parseKeyValues(items: readonly string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const at = item.indexOf('=');
    if (at <= 0) throw new UsageError(`${what} '${item}' is not key=value`);
    out[item.slice(0, at)] = item.slice(at + 1);
  }
  return out;
}
