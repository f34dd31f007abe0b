/** `ferry nar …`: Nix's NAR tools for people debugging without Nix. */
import { decodeNar, dumpPath, encodeNar, listNar, narHash, restoreNar } from '../nix/nar/index.js';
import { booleanOption, jsonOption, writeJson, type Command } from './command.js';
import { openInput, writeAll } from './io.js';
import { term } from './terminal-text.js';

const dump: Command = {
  path: ['nar', 'dump'],
  summary: 'write the NAR serialisation of a file tree to stdout (like nix-store --dump)',
  args: '<path>',
  minArgs: 1,
  maxArgs: 1,
  async run({ args, stdout }) {
    await writeAll(dumpPath(args[0]!), stdout.raw);
  },
};

const hash: Command = {
  path: ['nar', 'hash'],
  summary: "print a NAR's NarHash and NarSize as Nix does (sha256:<nix32>)",
  args: '<file.nar|->',
  description:
    'Reads the NAR from a file or standard input (-). The NAR is decoded strictly and re-encoded ' +
    'while hashing, so a malformed NAR is refused rather than hashed (a valid NAR re-encodes to ' +
    'exactly its own bytes).',
  minArgs: 1,
  maxArgs: 1,
  options: jsonOption,
  async run({ args, options, stdout, stdin }) {
    const result = await narHash(encodeNar(decodeNar(openInput(args[0]!, stdin))));
    if (booleanOption(options, 'json')) writeJson(stdout, result);
    else stdout.write(term`NarHash: ${result.narHash}\nNarSize: ${result.narSize}\n`);
  },
};

const ls: Command = {
  path: ['nar', 'ls'],
  summary: 'list the entries of a NAR (like nix nar ls -R)',
  args: '<file.nar|->',
  minArgs: 1,
  maxArgs: 1,
  options: {
    ...jsonOption,
    long: { type: 'boolean', short: 'l', description: 'show type, permissions and size' },
  },
  async run({ args, options, stdout, stdin }) {
    const json = booleanOption(options, 'json');
    const long = booleanOption(options, 'long');
    const entries = [];
    for await (const entry of listNar(openInput(args[0]!, stdin))) {
      if (json) {
        entries.push(entry);
        continue;
      }
      // A NAR's names and symlink targets are whatever its author chose: escaped like any value.
      const shown = entry.path === '' ? '.' : `./${entry.path}`;
      if (!long) {
        stdout.write(term`${shown}\n`);
      } else if (entry.type === 'directory') {
        stdout.write(term`dr-xr-xr-x ${''.padStart(12)} ${shown}\n`);
      } else if (entry.type === 'symlink') {
        stdout.write(term`lrwxrwxrwx ${''.padStart(12)} ${shown} -> ${entry.target}\n`);
      } else {
        stdout.write(term`${entry.executable ? '-r-xr-xr-x' : '-r--r--r--'} ${String(entry.size).padStart(12)} ${shown}\n`);
      }
    }
    if (json) writeJson(stdout, entries);
  },
};

const restore: Command = {
  path: ['nar', 'restore'],
  summary: 'unpack a NAR into a new directory (like nix-store --restore)',
  args: '<file.nar|-> <dir>',
  description: 'Refuses to overwrite an existing path. A NAR refused mid-way leaves nothing behind.',
  minArgs: 2,
  maxArgs: 2,
  async run({ args, stdin }) {
    await restoreNar(openInput(args[0]!, stdin), args[1]!);
  },
};

export const narCommands: Command[] = [dump, hash, ls, restore];
