/**
 * Drives a coordinator through a long, seeded, random sequence of real
 * commands (keys, tokens, enrollments, facts, configs, assignments, reports,
 * rollbacks, alerts, relays, staged rollouts, secrets, rules and relabels), including refused ones, as a fleet would. Used by the replay
 * test, the kill test and the audit benchmark.
 */
import { createCipheriv } from 'node:crypto';
import { Identity } from '../protocol/identity.js';
import { formatHlc } from '../protocol/hlc.js';
import { encodeNar, type NarEvent } from '../nix/nar/index.js';
import { ingestStorePath } from '../castore/index.js';
import { asStorePath, type StorePath } from '../nix/store-path.js';
import type { Coordinator } from '../coordinator/coordinator.js';
import * as commands from '../coordinator/domain/commands.js';
import * as ruleCommands from '../coordinator/domain/rule-commands.js';
import { FerryError } from '../protocol/errors.js';
import type { Actor, CommandContext } from '../coordinator/domain/commands.js';
import { checkRelayWhere } from '../coordinator/api/relay-access.js';
import * as rolloutCommands from '../coordinator/domain/rollout-commands.js';
import { setParams, unsetParams } from '../coordinator/domain/param-commands.js';
import { removeSecret, setSecret } from '../coordinator/domain/secret-commands.js';
import { seededRandom } from './seeded-random.js';

/** Puts a tiny store path into the coordinator's castore (what a push would do). */
export async function addStorePath(coordinator: Coordinator, name: string): Promise<StorePath> {
  const hash = createCipheriv('aes-128-ctr', Buffer.alloc(16, 3), Buffer.alloc(16)).update(Buffer.from(name.padEnd(20, '.'))).subarray(0, 20);
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
  const hashPart = [...hash].map((b) => alphabet[b % 32]).join('').padEnd(32, '0').slice(0, 32);
  const storePath = asStorePath(`/nix/store/${hashPart}-${name}`);
  const events: NarEvent[] = [
    { type: 'directory', path: '' },
    { type: 'file', path: 'activate', size: 10, executable: true, offset: 0 },
    { type: 'data', path: 'activate', chunk: Buffer.from('#!/bin/sh\n') },
    { type: 'file-end', path: 'activate' },
    { type: 'directory-end', path: '' },
  ];
  await ingestStorePath(coordinator.castore, encodeNar(events), { storePath, references: [] });
  return storePath;
}

export const coordinatorActor = (coordinator: Coordinator): Actor => ({ keyId: coordinator.identity.keyId, role: 'coordinator' });

/** Records `coordinator.init` and the first admin; returns the admin's identity and actor. */
export function bootstrap(coordinator: Coordinator): { admin: Identity; adminActor: Actor } {
  const admin = Identity.generate();
  const self = coordinatorActor(coordinator);
  coordinator.record(self, () => ({ action: 'coordinator.init', subject: coordinator.identity.keyId, payload: { name: 'test', coordinatorKey: coordinator.identity.keyId } }));
  coordinator.record(self, (context) => commands.addKey(context, { keyId: admin.keyId, role: 'admin', label: 'first admin' }));
  return { admin, adminActor: { keyId: admin.keyId, role: 'admin', requestSignature: 'c2lnbmF0dXJl' } };
}

export interface SimulationResult {
  attempted: number;
  recorded: number;
  refused: number;
}

/** Runs `steps` random commands; refused ones must be FerryErrors (anything else is a bug and throws). */
export function simulateFleet(coordinator: Coordinator, adminActor: Actor, admin: Identity, storePaths: string[], steps: number, seed = 1): SimulationResult {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T | undefined => (items.length === 0 ? undefined : items[random(items.length)]);
  const agents: Identity[] = [];
  const tokens: string[] = [];
  const keys: string[] = [];
  const graphs = ['edge', 'core', 'lab'];
  const systems = ['x86_64-linux', 'aarch64-linux'];
  let hlcCounter = 0;
  const result: SimulationResult = { attempted: 0, recorded: 0, refused: 0 };
  const attempt = (actor: Actor, decide: Parameters<Coordinator['record']>[1]): void => {
    result.attempted++;
    try {
      if (coordinator.record(actor, decide)) result.recorded++;
    } catch (error) {
      if (!(error instanceof FerryError)) throw error;
      result.refused++;
    }
  };
  const facts = (agent: Identity, variant: number) => ({ system: systems[variant % 2]!, hostname: `host-${agent.keyId.slice(0, 6)}`, cpus: 1 + (variant % 8), labels: { site: `barn-${variant % 3}` } });
  const alerts: string[] = [];
  const relays: string[] = [];
  for (let step = 0; step < steps; step++) {
    // Alerts come and go at fixed steps (no random draw, so the rest of a seeded run is as it was).
    if (step % 97 === 13) {
      let added: string | undefined;
      attempt(adminActor, (context) => {
        const { draft } = commands.addAlert(context, { url: `https://hooks.example.com/${step}?token=t${step}`, on: step % 2 ? ['rolled-back', 'offline'] : ['degraded'], where: step % 3 ? [] : ['labels.site=barn-1'] }, alerts.map((id) => context.state.get('alerts', id)!));
        added = draft.payload.alertId;
        return draft;
      });
      if (added) alerts.push(added);
    } else if (step % 97 === 71) {
      // The oldest alert, removed; a second time (already removed) is refused.
      const alertId = alerts[0] ?? '0123456789abcdef';
      attempt(adminActor, (context) => commands.removeAlert(context, { alertId }));
      if (step % 2) alerts.shift();
    }
    // Relays likewise, at fixed steps: enrolled (with a relay token; an agent token is refused), assigned
    // (a facts clause is refused), given an upstream relay (a cycle is refused), revoked (twice: the second is refused).
    if (step % 89 === 29) {
      const out = coordinator.execute(adminActor, (context) => {
        const created = commands.createToken(context, { uses: 1, relay: true });
        return { draft: created.draft, result: created.token };
      });
      result.attempted++;
      result.recorded++;
      const relay = Identity.generate();
      const relayActor: Actor = { keyId: relay.keyId, role: 'relay', requestSignature: null };
      const enroll = (token: string) => (context: CommandContext) => commands.enrollRelay(context, { token, name: `relay-${step}`, url: `https://10.0.${step % 250}.1:9443`, fingerprint: 'cd'.repeat(32) });
      if (tokens[0]) attempt(relayActor, enroll(tokens[0]));
      const before = result.recorded;
      attempt(relayActor, enroll(out!.result));
      if (result.recorded > before) relays.push(relay.keyId);
    } else if (step % 89 === 53 && relays.length > 0) {
      const relayId = relays[relays.length - 1]!;
      attempt(adminActor, (context) => commands.assignRelay(context, { relayId, where: [`labels.site=barn-${step % 3}`] }, checkRelayWhere));
      attempt(adminActor, (context) => commands.assignRelay(context, { relayId, where: ['facts.site=barn-1'] }, checkRelayWhere));
    } else if (step % 89 === 67 && relays.length > 1) {
      // An upstream relay: the newest fetches from the oldest; the reverse (a cycle) and itself are refused; every other time, back to none.
      const [oldest, newest] = [relays[0]!, relays[relays.length - 1]!];
      attempt(adminActor, (context) => commands.setRelayUpstream(context, { relayId: newest, upstream: step % 2 ? oldest : null }));
      attempt(adminActor, (context) => commands.setRelayUpstream(context, { relayId: oldest, upstream: newest }));
      attempt(adminActor, (context) => commands.setRelayUpstream(context, { relayId: oldest, upstream: oldest }));
    } else if (step % 89 === 83 && relays.length > 1) {
      const relayId = relays.shift()!;
      attempt(adminActor, (context) => commands.revokeRelay(context, { relayId }));
      attempt(adminActor, (context) => commands.revokeRelay(context, { relayId }));
    }
    // Staged rollouts, also at fixed steps: a policy on 'edge' (so its configs roll out), the
    // coordinator's steps, and an operator pausing, resuming and aborting (refused when not apt).
    if (step % 151 === 2) attempt(adminActor, (context) => rolloutCommands.setRolloutPolicy(context, { graph: 'edge', policy: { batches: [{ agents: 1 }, { percent: 50 }, { percent: 100 }], pauseSeconds: 0, maxFailures: { percent: 30 } } }));
    if (step % 151 === 140) attempt(adminActor, (context) => rolloutCommands.setRolloutPolicy(context, { graph: 'edge', policy: null }));
    if (step % 7 === 3) attempt(coordinatorActor(coordinator), (context) => rolloutCommands.stepRollout(context, 'edge', agents.map((identity) => identity.keyId)));
    if (step % 53 === 30) attempt(adminActor, (context) => rolloutCommands.pauseRollout(context, { graph: 'edge' }));
    if (step % 53 === 40) attempt(adminActor, (context) => rolloutCommands.resumeRollout(context, { graph: 'edge' }));
    if (step % 211 === 100) attempt(adminActor, (context) => rolloutCommands.abortRollout(context, { graph: 'edge' }));
    // Secrets likewise: a new version to the enrolled agents (an operator's attempt is refused), removed (twice: refused).
    if (step % 101 === 37) {
      const recipients = agents.filter((candidate) => coordinator.state.get('agents', candidate.keyId)?.status === 'enrolled').map((candidate) => candidate.keyId);
      const input = { name: `secret-${step % 2}`, ciphertext: Buffer.from(`age-encryption.org/v1\n-> X25519 step ${step}\n`).toString('base64'), recipients, selector: { where: ['labels.site=barn-1'] } };
      attempt({ ...adminActor, role: 'operator' }, (context) => setSecret(context, input).draft);
      attempt(adminActor, (context) => setSecret(context, input).draft);
    } else if (step % 101 === 73) {
      attempt(adminActor, (context) => removeSecret(context, { name: 'secret-1' }, () => undefined));
      attempt(adminActor, (context) => removeSecret(context, { name: 'secret-1' }, () => undefined));
    }
    // Parameters likewise: a graph's default, a group's, an agent's own (a viewer's attempt and a facts clause refused), one unset.
    if (step % 97 === 11) {
      attempt(adminActor, (context) => setParams(context, { layer: { graph: graphs[step % 3]! }, values: { UPSTREAM: `graph-${step}` } }));
      attempt(adminActor, (context) => setParams(context, { layer: { where: [`labels.site=barn-${step % 3}`] }, values: { UPSTREAM: `group-${step}`, REGION: 'eu' } }));
      attempt(adminActor, (context) => setParams(context, { layer: { where: ['facts.site=barn-1'] }, values: { UPSTREAM: 'x' } }));
      attempt({ ...adminActor, role: 'viewer' }, (context) => setParams(context, { layer: { graph: 'edge' }, values: { UPSTREAM: 'x' } }));
      if (agents.length > 0) attempt(adminActor, (context) => setParams(context, { layer: { agent: agents[step % agents.length]!.keyId }, values: { UPSTREAM: `agent-${step}` } }));
    } else if (step % 97 === 60) {
      attempt(adminActor, (context) => unsetParams(context, { layer: { where: [`labels.site=barn-${(step - 49) % 3}`] }, keys: ['REGION'] }));
    }
    // Rules and labels, at fixed steps too: a rule added (sometimes before the first, sometimes refused: a facts
    // clause, a graph not yet submitted), an agent relabelled (re-placed by the rules in the same transaction),
    // one returned to rule control, a rule moved, a rule removed.
    if (step % 83 === 17) {
      const name = `r${step % 5}`;
      attempt(adminActor, (context) =>
        ruleCommands.addRule(context, { name, where: step % 2 ? [`labels.batch=${step % 10}*`] : ['labels.site=barn-1,barn-2', '!labels.canary'], follow: graphs[step % 3]!, ...(step % 3 === 0 ? { position: 0 } : {}) }),
      );
      attempt(adminActor, (context) => ruleCommands.addRule(context, { name: `${name}x`, where: ['facts.site=barn-1'], follow: graphs[0]! }));
    } else if (step % 83 === 41 && agents.length > 0) {
      const target = agents[step % agents.length]!;
      attempt(adminActor, (context) => ruleCommands.labelAgents(context, { agentIds: [target.keyId], set: { site: `barn-${step % 3}`, batch: String(step % 7) }, unset: ['canary'] }, [target.keyId]));
      attempt(adminActor, (context) => ruleCommands.followRules(context, { agentId: agents[(step + 1) % agents.length]!.keyId }));
    } else if (step % 83 === 59) {
      attempt(adminActor, (context) => ruleCommands.moveRule(context, { name: `r${step % 5}`, position: 0 }));
    } else if (step % 83 === 73) {
      attempt(adminActor, (context) => ruleCommands.removeRule(context, { name: `r${(step + 2) % 5}` }));
    }
    const agent = pick(agents);
    const agentActor: Actor | undefined = agent && { keyId: agent.keyId, role: 'agent', requestSignature: null };
    switch (random(12)) {
      case 0: {
        const out = coordinator.execute(adminActor, (context) => {
          const created = commands.createToken(context, { uses: 1 + random(3), autoApprove: random(2) === 0, labels: { batch: String(step) } });
          return { draft: created.draft, result: created.token };
        });
        result.attempted++;
        result.recorded++;
        tokens.push(out!.result);
        break;
      }
      case 1:
      case 2: {
        const newcomer = Identity.generate();
        const actor: Actor = { keyId: newcomer.keyId, role: 'agent', requestSignature: null };
        const token = random(5) === 0 ? `${'0'.repeat(16)}.${'x'.repeat(32)}` : pick(tokens) ?? `${'1'.repeat(16)}.${'y'.repeat(32)}`;
        const before = result.recorded;
        attempt(actor, (context) => commands.enrollAgent(context, { token, name: `agent-${step}`, facts: facts(newcomer, step) }));
        if (result.recorded > before) agents.push(newcomer);
        break;
      }
      case 3:
        if (agent) attempt(adminActor, (context) => commands.decideAgent(context, { agentId: agent.keyId }, pick(['approve', 'reject', 'revoke'] as const)!));
        break;
      case 4:
        if (agent && agentActor) attempt(agentActor, (context) => commands.reportFacts(context, { facts: facts(agent, random(3)) }, formatHlc({ wall: 1_700_000_000_000 + step, counter: hlcCounter++, node: 'agent' })));
        break;
      case 5:
      case 6: {
        const graph = pick(graphs)!;
        attempt(adminActor, (context) => {
          const head = context.state.get('graphs', graph)?.head;
          const stale = random(6) === 0;
          const body = {
            graph,
            parents: head && !stale ? [head] : [],
            targets: { [pick(systems)!]: pick(storePaths)! },
            activation: { command: 'activate', environment: {}, timeoutSeconds: 30 },
            health: random(2) ? { command: 'activate --check', timeoutSeconds: 10, retries: 2 } : null,
            message: `step ${step}`,
            author: admin.keyId,
            hlc: formatHlc({ wall: 1_700_000_000_000 + step, counter: 0, node: 'admin' }),
          };
          const id = commands.configId(body as never);
          const signature = Buffer.from(admin.sign(commands.configSigningMessage(id))).toString('base64');
          return commands.submitConfig(context, { body, signature, force: stale && random(2) === 0 });
        });
        break;
      }
      case 7:
        if (agent) attempt(adminActor, (context) => commands.assignAgent(context, { agentId: agent.keyId, graph: pick(graphs)! }));
        break;
      case 8:
        if (agent)
          attempt(adminActor, (context) => {
            const graph = context.state.get('graphs', pick(graphs)!);
            return commands.pinAgent(context, { agentId: agent.keyId, configId: random(3) === 0 || !graph ? null : graph.head });
          });
        break;
      case 9:
        if (agent && agentActor) {
          // A deployment report (a rollback naming the config it went back to, or not), a health
          // transition of what runs (refused when nothing does), or the coordinator seeing it go
          // offline or come back.
          const kind = random(4);
          if (kind <= 1) {
            attempt(agentActor, (context) => {
              const graph = context.state.get('graphs', pick(graphs)!);
              const phase = pick(['fetching', 'activating', 'active', 'failed', 'rolled-back'] as const)!;
              const running = phase === 'rolled-back' && kind === 1 ? { running: context.state.get('agents', agent.keyId)?.currentConfig ?? null } : {};
              return commands.reportStatus(context, { configId: graph?.head ?? null, phase, error: phase === 'failed' ? 'health check failed' : null, ...running });
            });
          } else if (kind === 2) {
            attempt(agentActor, (context) => {
              const current = context.state.get('agents', agent.keyId)?.currentConfig ?? pick(graphs)!;
              return commands.reportHealth(context, { configId: current.padEnd(64, '0').slice(0, 64), health: pick(['healthy', 'degraded'] as const)!, reason: random(2) === 0 ? null : `check failed at step ${step}`, suppressed: random(3) });
            });
          } else {
            attempt(coordinatorActor(coordinator), (context) => commands.recordPresence(context, { agentId: agent.keyId, presence: pick(['online', 'offline'] as const)!, lastSeen: random(2) === 0 ? null : 1_700_000_000_000 + step }));
          }
        }
        break;
      case 10:
        attempt(adminActor, (context) => commands.rollbackGraph(context, { graph: pick(graphs)! }));
        break;
      case 11: {
        // Keys are added and revoked; asking a revoked one back is refused (revocation is final).
        const known = pick(keys);
        const choice = random(4);
        if (known && choice === 0) attempt(adminActor, (context) => commands.revokeKey(context, { keyId: known }));
        else if (known && choice === 1) attempt(adminActor, (context) => commands.addKey(context, { keyId: known, role: 'viewer', label: `again ${step}` }));
        else {
          const key = Identity.generate();
          const before = result.recorded;
          attempt(adminActor, (context) => commands.addKey(context, { keyId: key.keyId, role: pick(['operator', 'pusher', 'viewer'] as const)!, label: `key ${step}` }));
          if (result.recorded > before) keys.push(key.keyId);
        }
        break;
      }
    }
  }
  return result;
}
