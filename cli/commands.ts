/**
 * Every `ferry` command, by group. A group names the module that declares
 * its commands, loaded only when argv names the group: `ferry config
 * submit` then starts without loading every other group's commands (the
 * NAR codec, Nix store reading, the binary cache's credentials, the
 * viewer…), which took a noticeable part of its start-up (bench/README.md,
 * "App-change latency").
 */
import type { Command, CommandGroup } from './command.js';

export const commandGroups: CommandGroup[] = [
  { name: 'coordinator', summary: 'create and run a coordinator', load: async () => (await import('./coordinator-commands.js')).coordinatorCommands },
  { name: 'context', summary: 'the coordinators this CLI talks to', load: async () => (await import('./coordinator-commands.js')).coordinatorCommands },
  { name: 'keys', summary: 'keys allowed to use the coordinator, and their roles', load: async () => (await import('./fleet-commands.js')).fleetCommands },
  { name: 'tokens', summary: 'bootstrap tokens for enrolling agents', load: async () => (await import('./fleet-commands.js')).fleetCommands },
  { name: 'agents', summary: 'the fleet: list, approve, assign, pin, label, status, facts', load: async () => (await import('./fleet-commands.js')).fleetCommands },
  { name: 'rules', summary: 'targeting rules: add, ls, rm, move (first match places an agent)', load: async () => (await import('./rule-commands.js')).ruleCommands },
  { name: 'config', summary: 'submit and inspect configs', load: async () => (await import('./graph-commands.js')).graphCommands },
  { name: 'graph', summary: 'artifact graphs: log and rollback', load: async () => (await import('./graph-commands.js')).graphCommands },
  { name: 'rollout', summary: 'staged rollouts of a graph: policy, status, pause, resume, abort', load: async () => (await import('./rollout-commands.js')).rolloutCommands },
  { name: 'audit', summary: 'the audit log: log, show, replay, view (web), verify, export', load: async () => (await import('./audit-commands.js')).auditCommands },
  { name: 'cache', summary: 'the Nix binary cache at <url>/nix-cache: key to trust, netrc credentials', load: async () => (await import('./cache-commands.js')).cacheCommands },
  { name: 'alerts', summary: 'webhooks the coordinator POSTs signed alerts to: add, ls, rm', load: async () => (await import('./alert-commands.js')).alertCommands },
  { name: 'params', summary: 'per-machine parameters (graph < label group < agent): set, unset, ls', load: async () => (await import('./param-commands.js')).paramCommands },
  { name: 'secrets', summary: 'secrets encrypted to the machines: set (from a file or stdin), ls, rekey, rm', load: async () => (await import('./secret-commands.js')).secretCommands },
  { name: 'metrics', summary: "the coordinator's Prometheus metrics: credentials and a scrape_config", load: async () => (await import('./metrics-commands.js')).metricsCommands },
  { name: 'gc', summary: "the coordinator's garbage collection: keep what the graphs and agents need", load: async () => [(await import('./gc-command.js')).gcCommand] },
  { name: 'push', summary: 'upload store paths from the local Nix store (only what the coordinator lacks)', load: async () => [(await import('./push-command.js')).pushCommand] },
  { name: 'agent', summary: 'the machine side: enroll, run, status, generations, rollback, gc', load: async () => (await import('./agent-commands.js')).agentCommands },
  { name: 'relay', summary: 'a site relay: enroll, run, status', load: async () => (await import('./relay-commands.js')).relayCommands },
  { name: 'relays', summary: "site relays: ls, assign (which agents use one), upstream (which relay one fetches from), revoke", load: async () => (await import('./relay-commands.js')).relayCommands },
  { name: 'bundle', summary: 'signed offline bundles of a config and its closure, for air-gapped machines', load: async () => (await import('./bundle-commands.js')).bundleCommands },
  { name: 'nar', summary: 'NAR archives: dump, hash, ls, restore (Nix-compatible, no Nix needed)', load: async () => (await import('./nar-commands.js')).narCommands },
  { name: 'castore', summary: 'the content-addressed store: ingest, export, stat, fsck, gc', load: async () => (await import('./castore-commands.js')).castoreCommands },
];

/** The commands of group `name` (the first word after `ferry`); none for an unknown group. */
export async function commandsOfGroup(name: string): Promise<Command[]> {
  const group = commandGroups.find((candidate) => candidate.name === name);
  return group ? (await group.load()).filter((command) => command.path[0] === name) : [];
}

/** Every command of every group (loads every command module): for checks that each is reachable. */
export async function loadAllCommands(): Promise<Command[]> {
  return [...new Set((await Promise.all(commandGroups.map((group) => group.load()))).flat())];
}
