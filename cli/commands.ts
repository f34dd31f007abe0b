/** Every `ferry` command, by group. */
import { agentCommands } from './agent-commands.js';
import { auditCommands } from './audit-commands.js';
import { bundleCommands } from './bundle-commands.js';
import { cacheCommands } from './cache-commands.js';
import { castoreCommands } from './castore-commands.js';
import type { Command, CommandGroup } from './command.js';
import { coordinatorCommands } from './coordinator-commands.js';
import { fleetCommands } from './fleet-commands.js';
import { graphCommands } from './graph-commands.js';
import { narCommands } from './nar-commands.js';
import { pushCommand } from './push-command.js';

export const commandGroups: CommandGroup[] = [
  { name: 'coordinator', summary: 'create and run a coordinator' },
  { name: 'context', summary: 'the coordinators this CLI talks to' },
  { name: 'keys', summary: 'keys allowed to use the coordinator, and their roles' },
  { name: 'tokens', summary: 'bootstrap tokens for enrolling agents' },
  { name: 'agents', summary: 'the fleet: list, approve, assign, pin, status, facts' },
  { name: 'config', summary: 'submit and inspect configs' },
  { name: 'graph', summary: 'artifact graphs: log and rollback' },
  { name: 'audit', summary: 'the audit log: log, show, replay, view (web), verify, export' },
  { name: 'cache', summary: 'the Nix binary cache at <url>/nix-cache: key to trust, netrc credentials' },
  { name: 'push', summary: 'upload store paths from the local Nix store (only what the coordinator lacks)' },
  { name: 'agent', summary: 'the machine side: enroll, run, status, generations, rollback, gc' },
  { name: 'bundle', summary: 'signed offline bundles of a config and its closure, for air-gapped machines' },
  { name: 'nar', summary: 'NAR archives: dump, hash, ls, restore (Nix-compatible, no Nix needed)' },
  { name: 'castore', summary: 'the content-addressed store: ingest, export, stat, fsck, gc' },
];

export const allCommands: Command[] = [...coordinatorCommands, ...fleetCommands, ...graphCommands, pushCommand, ...agentCommands, ...bundleCommands, ...auditCommands, ...narCommands, ...castoreCommands, ...cacheCommands];
