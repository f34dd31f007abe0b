/**
 * Text for a human's terminal, safe whatever the coordinator, an agent or a
 * file put into it.
 *
 * Much of what the CLI prints was written by someone else: agent names,
 * types and errors, token notes, key labels, config messages, facts, audit
 * payloads, error messages that quote a request. A terminal obeys control
 * characters in that text: `\x1b[2J` clears the screen, `\x1b]0;…\x07` sets
 * the window title, `\r` and backspace overwrite what was printed, bidi
 * overrides make text read differently from what it is. So no byte of
 * someone else's text reaches a terminal as a control: it is shown.
 *
 * ## How a dangerous character is shown
 *
 * | character                                   | shown as            |
 * |---------------------------------------------|---------------------|
 * | newline, tab, carriage return               | `\n`, `\t`, `\r`    |
 * | other C0 controls (U+0000–U+001F), DEL, C1 (U+0080–U+009F) | `\xHH` (e.g. ESC is `\x1b`) |
 * | bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), bidi marks (U+200E, U+200F, U+061C), line and paragraph separators (U+2028, U+2029) | `\uHHHH` (e.g. `\u202e`) |
 * | a backslash that could be read as the start of one of the above | `\\` |
 *
 * This is the escape syntax of JavaScript string literals, so it reads the
 * way developers expect and is unambiguous: in the output, `\\` is always one
 * backslash and `\x`, `\u`, `\n`, `\t`, `\r` always an escaped character
 * (with exactly 2 or 4 hex digits). A backslash is doubled only when it is
 * followed by a backslash, by `x`, `u`, `n`, `t` or `r`, by an escaped
 * character, or ends the value (the CLI's own text may follow it), so
 * ordinary text with backslashes (`grep: Unmatched \(`, `C:\Temp`) is shown
 * as it is. Everything else, all printable Unicode included (`café`, CJK,
 * emoji, zero-width joiners), is unchanged. `--json` output is never passed
 * through here: it is exact, and JSON escaping already keeps it inert.
 *
 * A *line* value (a table cell, a name in a sentence) also has its
 * newlines escaped, so it cannot forge rows or lines; a *block* value (an
 * agent's whole last error, a log line with a command's output) keeps its
 * newlines, the one control the CLI's layout is made of. Tabs are escaped in
 * both: they would shift columns.
 * Where a block sits under a label, `indented` puts its further lines under
 * the value, so none passes for a line of the CLI's own. JSON shown to a
 * human (facts, audit payloads) keeps JSON's own escapes (`\u001b`) and
 * stays valid JSON: see {@link jsonForTerminal}.
 *
 * ## The choke point
 *
 * Commands never hold the real stdout and stderr. They get a
 * {@link TerminalOutput}, whose `write` takes only {@link TerminalText}, and
 * TerminalText is made only here: by the {@link term} template tag (its
 * literal parts are the CLI's own layout, its `${…}` values are escaped as
 * line values), {@link block}, {@link jsonForTerminal}, and `table` in
 * format.ts, which builds on `term`. Writing a plain string does not
 * type-check (and is escaped as a block at run time if it happens anyway).
 * Exact bytes (JSON, NARs, bundles, exports, progress's own redraw
 * sequence) go to `raw`, which cli/terminal-text.test.ts allows only in the
 * places that need it.
 */
import { indentedJson } from '../protocol/json-bounds.js';

/**
 * What is never written as itself; line values add `\n`. One list (as RegExp character-class
 * source), used by every renderer here.
 */
const C0_BUT_NEWLINE = '\\x00-\\x09\\x0b-\\x1f';
const DEL_AND_C1 = '\\x7f-\\x9f';
const BIDI_AND_SEPARATORS = '\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069';
const DANGEROUS_IN_BLOCK = `${C0_BUT_NEWLINE}${DEL_AND_C1}${BIDI_AND_SEPARATORS}`;
const DANGEROUS_IN_LINE = `\\n${DANGEROUS_IN_BLOCK}`;

/** Each dangerous character, and each backslash that could be read as the start of an escape (see the module comment). */
function escaper(dangerous: string): RegExp {
  return new RegExp(`\\\\(?=$|[\\\\xuntr${dangerous}])|[${dangerous}]`, 'g');
}
const LINE_ESCAPES = escaper(DANGEROUS_IN_LINE);
const BLOCK_ESCAPES = escaper(DANGEROUS_IN_BLOCK);
/** Inside JSON text only string contents can hold these (JSON.stringify already escapes C0), and `\uHHHH` keeps it valid JSON. */
const JSON_ESCAPES = new RegExp(`[${DEL_AND_C1}${BIDI_AND_SEPARATORS}]`, 'g');

const NAMED: Readonly<Record<string, string>> = { '\\': '\\\\', '\n': '\\n', '\t': '\\t', '\r': '\\r' };

function shown(character: string): string {
  const named = NAMED[character];
  if (named !== undefined) return named;
  const code = character.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * `text` with every control character, DEL, C1 control and bidi control
 * shown as an escape (table in the module comment), and a backslash doubled
 * where it could be mistaken for one. `layout` is `line` (the default:
 * newlines are escaped too, for table cells and values inside a sentence)
 * or `block` (newlines kept, for multi-line text such as a command's
 * output). Printable text, all non-ASCII letters and emoji
 * included, is returned unchanged. Not idempotent: escape a value exactly
 * once (TerminalText, below, keeps track of what already was).
 */
export function safeForTerminal(text: string, layout: 'line' | 'block' = 'line'): string {
  return text.replace(layout === 'line' ? LINE_ESCAPES : BLOCK_ESCAPES, shown);
}

const minted: unique symbol = Symbol('TerminalText');

/**
 * Text that may be written to a terminal as it is: the CLI's own layout with
 * every foreign value already escaped. Only this module makes one (the
 * constructor refuses anyone without its private token), so holding a
 * TerminalText means the escaping happened, exactly once.
 */
export class TerminalText {
  constructor(
    token: typeof minted,
    readonly text: string,
  ) {
    if (token !== minted) throw new TypeError('TerminalText is made by term`…`, block() or jsonForTerminal(), not directly');
  }

  /** The same text with `prefix` (escaped as a line value) after each of its newlines: a multi-line value aligned under its label. */
  indented(prefix: string): TerminalText {
    return new TerminalText(minted, this.text.replace(/\n(?=.)/g, `\n${safeForTerminal(prefix)}`));
  }

  toString(): string {
    return this.text;
  }
}

/** What `term` accepts in `${…}`: plain values are escaped as line values; TerminalText (and arrays of either) go in as they are. */
export type TerminalValue = string | number | bigint | boolean | null | undefined | TerminalText | readonly TerminalValue[];

function render(value: TerminalValue): string {
  if (value instanceof TerminalText) return value.text;
  if (Array.isArray(value)) return (value as readonly TerminalValue[]).map(render).join('');
  return safeForTerminal(String(value), 'line');
}

/**
 * The template tag for everything the CLI prints for a human:
 * `` term`agent ${name}: ${status}\n` ``. Its literal parts are the CLI's
 * own text and layout, written as they are; each `${…}` value is escaped as
 * a line value (no control characters, no newlines: it cannot clear the
 * screen or forge a line). A TerminalText value (a `table`, a `block`, a
 * nested `term`) is inserted as it is, and an array is the concatenation
 * of its elements. Refuses (TypeError) to be called as a plain function:
 * literal parts must come from source code.
 */
export function term(strings: TemplateStringsArray, ...values: readonly TerminalValue[]): TerminalText {
  if (!Object.isFrozen(strings) || !Array.isArray(strings.raw)) throw new TypeError('term is a template tag: term`…`');
  let text = strings[0] ?? '';
  values.forEach((value, i) => {
    text += render(value) + (strings[i + 1] ?? '');
  });
  return new TerminalText(minted, text);
}

/** `text` escaped as a block value: its newlines kept, everything else as in {@link safeForTerminal}. */
export function block(text: string): TerminalText {
  return new TerminalText(minted, safeForTerminal(text, 'block'));
}

/**
 * `value` as JSON for a human (`JSON.stringify(value, null, indent)`), with
 * the characters JSON leaves raw (DEL, C1 controls, bidi controls, U+2028/9)
 * written as `\uHHHH` escapes: still valid JSON that parses to exactly
 * `value`, and inert on a terminal. Not for `--json` output, which stays
 * byte-for-byte JSON.stringify.
 */
export function jsonForTerminal(value: unknown, indent?: number): TerminalText {
  const json = indentedJson(value, indent) ?? String(value);
  return new TerminalText(minted, json.replace(JSON_ESCAPES, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

/**
 * Where a command writes. `write` takes only TerminalText, so everything a
 * human reads went through `term`/`block`/`table`/`jsonForTerminal`; a plain
 * string that gets here anyway (an `as` cast, JavaScript) is escaped as a
 * block. `raw` is the real stream, for output that must be exact bytes and
 * is not text for a terminal: `--json`, NARs, bundles, audit exports, and
 * progress's own redraw sequence.
 */
export interface TerminalOutput {
  write(text: TerminalText): void;
  readonly raw: NodeJS.WritableStream & { isTTY?: boolean };
}

/** A TerminalOutput over `stream` (process.stdout or process.stderr in `ferry`; any stream in a test). */
export function terminalOutput(stream: NodeJS.WritableStream & { isTTY?: boolean }): TerminalOutput {
  return {
    raw: stream,
    write(text) {
      stream.write(text instanceof TerminalText ? text.text : safeForTerminal(String(text), 'block'));
    },
  };
}
