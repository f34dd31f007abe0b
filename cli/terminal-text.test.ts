import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { table } from './format.js';
import { createProgress } from './progress.js';
import { block, jsonForTerminal, safeForTerminal, term, TerminalText, terminalOutput } from './terminal-text.js';
import { seededRandom } from '../test/seeded-random.js';

/** Every C0 control but newline, DEL, every C1 control, and the bidi and separator characters. */
const DANGEROUS = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** The inverse of safeForTerminal, as a reader would apply it: proves the rendering is unambiguous. */
function decode(shown: string): string {
  return shown.replace(/\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|n|t|r)/g, (_, escape: string) => {
    if (escape === '\\') return '\\';
    if (escape === 'n') return '\n';
    if (escape === 't') return '\t';
    if (escape === 'r') return '\r';
    return String.fromCharCode(parseInt(escape.slice(1), 16));
  });
}

describe('safeForTerminal', () => {
  it('shows escape sequences instead of sending them: CSI clear-screen, OSC window title', () => {
    expect(safeForTerminal('web\x1b[2J\x1b[Hgone')).toBe('web\\x1b[2J\\x1b[Hgone');
    expect(safeForTerminal('\x1b]0;pwned\x07')).toBe('\\x1b]0;pwned\\x07');
  });

  it('shows carriage return, backspace, BEL, NUL and DEL, which overwrite, ring or hide', () => {
    expect(safeForTerminal('ok\rFAILED')).toBe('ok\\rFAILED');
    expect(safeForTerminal('secret\b\b\b\b\b\bpublic')).toBe('secret\\x08\\x08\\x08\\x08\\x08\\x08public');
    expect(safeForTerminal('ding\x07')).toBe('ding\\x07');
    expect(safeForTerminal('a\x00b\x7fc')).toBe('a\\x00b\\x7fc');
  });

  it('shows C1 controls (U+0080–U+009F): U+009B is a one-character CSI on many terminals', () => {
    expect(safeForTerminal('\u009b2J')).toBe('\\x9b2J');
    expect(safeForTerminal('\u009d0;title\u009c')).toBe('\\x9d0;title\\x9c');
    expect(safeForTerminal('\u0080\u009f')).toBe('\\x80\\x9f');
  });

  it('shows bidi overrides, embeddings, isolates and marks, which make text read as something else', () => {
    expect(safeForTerminal('invoice\u202Efdp.exe')).toBe('invoice\\u202efdp.exe');
    expect(safeForTerminal('\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069')).toBe('\\u202a\\u202b\\u202c\\u202d\\u2066\\u2067\\u2068\\u2069');
    expect(safeForTerminal('\u200e\u200f\u061c\u2028\u2029')).toBe('\\u200e\\u200f\\u061c\\u2028\\u2029');
  });

  it('escapes newlines in a line value (a table cell cannot forge a row) and keeps them in a block; tabs never', () => {
    expect(safeForTerminal('web-1\nweb-2  approved')).toBe('web-1\\nweb-2  approved');
    expect(safeForTerminal('a\tb')).toBe('a\\tb');
    expect(safeForTerminal('exit 1; output:\n\tline\x1b[31m', 'block')).toBe('exit 1; output:\n\\tline\\x1b[31m');
    expect(safeForTerminal('a\rb', 'block')).toBe('a\\rb');
  });

  it('leaves printable text unchanged: accents, CJK, emoji with joiners and modifiers, combining marks', () => {
    for (const text of ['café', 'naïve façade', '東京の機械', '한국어', 'Привет', '👩‍👩‍👧 🏳️‍🌈 👍🏽', 'e\u0301', 'web-1 (gateway) ✓ → ok', 'C:\\Temp', 'grep: Unmatched \\(']) {
      expect(safeForTerminal(text)).toBe(text);
      expect(safeForTerminal(text, 'block')).toBe(text);
    }
  });

  it('doubles a backslash only where it could be read as an escape, so the rendering is unambiguous', () => {
    expect(safeForTerminal('\\x1b')).toBe('\\\\x1b'); // typed text that looks like an escape
    expect(safeForTerminal('\x1b')).toBe('\\x1b'); // a real escape
    expect(safeForTerminal('a\\\x1b')).toBe('a\\\\\\x1b');
    expect(safeForTerminal('trailing\\')).toBe('trailing\\\\'); // whatever follows in the output cannot join it
    expect(safeForTerminal('\\\\')).toBe('\\\\\\\\');
  });

  it('round-trips: decoding what it shows gives the original, also for values printed side by side (seeded)', () => {
    const alphabet = ['\\', 'x', 'u', 'n', 't', 'r', '1', 'b', 'f', 'a', ' ', 'é', '東', '\x1b', '\x07', '\r', '\n', '\t', '\b', '\x7f', '\u009b', '\u202e', '\u2066', '\u2028'];
    const random = seededRandom(16);
    for (let round = 0; round < 2000; round++) {
      const value = () => Array.from({ length: random(12) }, () => alphabet[random(alphabet.length)]!).join('');
      const [a, b] = [value(), value()];
      for (const layout of ['line', 'block'] as const) {
        const shown = safeForTerminal(a, layout) + safeForTerminal(b, layout);
        expect(shown).not.toMatch(DANGEROUS);
        if (layout === 'line') expect(shown).not.toContain('\n');
        expect(decode(shown), JSON.stringify([a, b, layout])).toBe(a + b);
      }
    }
  });
});

describe('term, block, jsonForTerminal', () => {
  it('keeps the literal layout and escapes every value as a line value', () => {
    const name = 'evil\x1b[2J\nstatus  approved';
    expect(term`name    ${name}\nstatus  ${'enrolling'}\n`.text).toBe('name    evil\\x1b[2J\\nstatus  approved\nstatus  enrolling\n');
    expect(term`${42} ${null} ${undefined} ${true}`.text).toBe('42 null undefined true');
  });

  it('inserts TerminalText as it is (escaped exactly once) and concatenates arrays', () => {
    const inner = term`<${'\\x'}>`;
    expect(inner.text).toBe('<\\\\x>');
    expect(term`${inner}`.text).toBe('<\\\\x>');
    expect(term`${[term`a${'\x07'}\n`, 'b\n', [term`c`]]}`.text).toBe('a\\x07\nb\\nc');
  });

  it('refuses to be called as a plain function, and TerminalText cannot be made around it', () => {
    const notATemplate = Object.assign(['\x1b[2J'], { raw: ['\x1b[2J'] }) as unknown as TemplateStringsArray;
    expect(() => term(notATemplate)).toThrow(TypeError);
    const Constructor = TerminalText as unknown as new (token: symbol, text: string) => TerminalText;
    expect(() => new Constructor(Symbol('TerminalText'), '\x1b[2J')).toThrow(TypeError);
  });

  it('block keeps lines, and indented aligns continuation lines under a label', () => {
    const error = 'activation failed: exit 1; output:\n\x1b[31mboom\x1b[0m\n\nlast';
    expect(term`error   ${block(error).indented('        ')}\n`.text).toBe('error   activation failed: exit 1; output:\n        \\x1b[31mboom\\x1b[0m\n\n        last\n');
  });

  it('jsonForTerminal is valid JSON of exactly the value, with nothing a terminal obeys', () => {
    const value = { name: 'a\x1b]0;t\x07', 'k\u009b': ['\u202e', '\u2028', 'café 👍', 'x\\y'], n: 1 };
    const shown = jsonForTerminal(value, 2).text;
    expect(shown).not.toMatch(DANGEROUS);
    expect(JSON.parse(shown)).toEqual(value);
    expect(jsonForTerminal(value).text).toBe(JSON.stringify(value).replace(/[\u009b\u202e\u2028]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
  });
});

describe('table', () => {
  it('escapes every cell: a newline cannot add a row, escape sequences are shown, columns stay aligned', () => {
    const shown = table(['NAME', 'TYPE', 'STATUS'], [
      ['evil\nfake-agent  machine  approved', 'x\x1b[2J', 'enrolling'],
      ['café', null, 'approved'],
    ]).text;
    const lines = shown.split('\n');
    expect(lines).toHaveLength(4); // header, two rows, and the final newline
    const shownName = 'evil\\nfake-agent  machine  approved';
    expect(lines[1]).toBe(`${shownName}  x\\x1b[2J  enrolling`);
    expect(lines[2]).toBe(`${'café'.padEnd(shownName.length)}  ${'-'.padEnd('x\\x1b[2J'.length)}  approved`);
    expect(shown).not.toMatch(DANGEROUS);
  });
});

describe('TerminalOutput', () => {
  it('writes TerminalText as it is, and escapes a plain string that got past the types', () => {
    const sink = new PassThrough();
    const out = terminalOutput(sink);
    out.write(term`ok ${'\x1b[2J'}\n`);
    out.write('forced\x1b]0;t\x07\n' as unknown as TerminalText);
    expect(sink.read().toString()).toBe('ok \\x1b[2J\nforced\\x1b]0;t\\x07\n');
  });

  it('progress lines escape their label and detail; only the redraw sequence is raw, and only on a terminal', () => {
    const sink = Object.assign(new PassThrough(), { isTTY: true });
    const progress = createProgress(terminalOutput(sink), 'reading\x1b]0;t\x07', 'objects');
    const realNow = Date.now;
    try {
      Date.now = () => realNow() + 60_000;
      progress.update(1, 2, 'name\x1b[2J');
    } finally {
      Date.now = realNow;
    }
    progress.done('done\x07');
    const written = sink.read().toString() as string;
    expect(written.replaceAll('\r\x1b[K', '')).not.toMatch(DANGEROUS);
    expect(written).toContain('reading\\x1b]0;t\\x07: 1 / 2 objects');
    expect(written).toContain('name\\x1b[2J');
    expect(written).toContain('done\\x07\n');
  });
});

describe('the CLI writes to the real stdout and stderr only through TerminalOutput', () => {
  // Types make `stdout.write` take only TerminalText; this keeps the escape hatches few and
  // reviewed. A new exact-bytes output (JSON, NAR, tar, an export) is added here on purpose;
  // text for a human never needs one.
  const allowed: Record<string, number> = {
    'command.ts': 2, // writeJson, writeJsonLine: --json output, exact
    'progress.ts': 3, // isTTY, and the redraw sequence twice
    'nar-commands.ts': 1, // nar dump: NAR bytes
    'castore-commands.ts': 1, // castore export: NAR bytes
    'bundle-commands.ts': 1, // bundle create -o -: tar bytes
    'audit-commands.ts': 1, // audit export: JSON lines, exact
  };
  const cliDir = path.dirname(fileURLToPath(import.meta.url));
  const sources = readdirSync(cliDir).filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts') && file !== 'terminal-text.ts');

  it('uses `.raw` only where exact bytes are written', () => {
    const found: Record<string, number> = {};
    for (const file of sources) {
      const count = readFileSync(path.join(cliDir, file), 'utf8').match(/\.raw\b/g)?.length ?? 0;
      if (count > 0) found[file] = count;
    }
    expect(found).toEqual(allowed);
  });

  it('never touches process.stdout/stderr, console or file descriptors directly (main.ts wraps them)', () => {
    for (const file of sources) {
      const source = readFileSync(path.join(cliDir, file), 'utf8');
      const direct = source.match(/process\.std(out|err)\b|\bconsole\.|writeSync\(|\/dev\/tty/g) ?? [];
      if (file === 'main.ts') expect(direct.sort()).toEqual(['process.stderr', 'process.stdout', 'process.stdout']);
      else expect(direct, file).toEqual([]);
    }
  });
});
