/** Every `ferry` command, by group. */
import { castoreCommands } from './castore-commands.js';
import type { Command, CommandGroup } from './command.js';
import { narCommands } from './nar-commands.js';

export const commandGroups: CommandGroup[] = [
  { name: 'nar', summary: 'NAR archives: dump, hash, ls, restore (Nix-compatible, no Nix needed)' },
  { name: 'castore', summary: 'the content-addressed store: ingest, export, stat, fsck, gc' },
];

export const allCommands: Command[] = [...narCommands, ...castoreCommands];
