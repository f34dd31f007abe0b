// Which agents use which relay, what a relay may read, and what an agent's desired answer says of relays:
// all from audited decisions (assign, revoke, pins, heads, labels), none from what agents report.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { desiredProofMessage, verifyProof } from '../../protocol/coordinator-proofs.js';
import { Identity } from '../../protocol/identity.js';
import { relayGrantMessage, relayGrantProblem, relayOfferMessage } from '../../protocol/relays.js';
import { relayPrefetchDigest, upstreamOfferMessage } from '../../protocol/relay-prefetch.js';
import { addStorePath, bootstrap } from '../../test/fleet-simulator.js';
import { signedConfig } from '../../test/data-plane-fixture.js';
import { Coordinator } from '../coordinator.js';
import * as commands from '../domain/commands.js';
import type { Actor } from '../domain/commands.js';
import { ClosureAccess } from './data-operations.js';
import { checkRelayWhere, relayConfigs, relayPrefetch, upstreamOf, upstreamOffer } from './relay-access.js';
import { desiredAnswer } from './signed-answers.js';

let dir: string;
let coordinator: Coordinator;
let adminActor: Actor;
let admin: Identity;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-relay-access-'));
  coordinator = Coordinator.open(dir);
  ({ admin, adminActor } = bootstrap(coordinator));
});
afterEach(() => {
  coordinator.close();
  rmSync(dir, { recursive: true, force: true });
});

function token(options: Record<string, unknown>): string {
  return coordinator.execute(adminActor, (context) => {
    const created = commands.createToken(context, options);
    return { draft: created.draft, result: created.token };
  })!.result;
}

function enrollAgent(site: string): string {
  const agent = Identity.generate();
  coordinator.record({ keyId: agent.keyId, role: 'agent' }, (context) =>
    commands.enrollAgent(context, { token: token({ autoApprove: true, labels: { site } }), name: site, facts: { system: 'x86_64-linux', hostname: 'h', labels: { site: 'barn-3' } } }),
  );
  return agent.keyId;
}

function enrollRelay(): string {
  const relay = Identity.generate();
  coordinator.record({ keyId: relay.keyId, role: 'relay' }, (context) => commands.enrollRelay(context, { token: token({ relay: true }), name: 'r', url: 'https://10.0.0.1:9443', fingerprint: 'ab'.repeat(32) }));
  return relay.keyId;
}

async function submit(graph: string): Promise<string> {
  const storePath = await addStorePath(coordinator, `${graph}-app`);
  const submission = signedConfig(admin, graph, [], { 'x86_64-linux': storePath });
  return (coordinator.record(adminActor, (context) => commands.submitConfig(context, submission))!.payload as { id: string }).id;
}

describe('relay access', () => {
  it('serves the agents its clauses match, reads their desired configs, and offers them a grant only for theirs', async () => {
    const here = enrollAgent('barn-3');
    const there = enrollAgent('barn-9');
    const relayId = enrollRelay();
    const web = await submit('web');
    const lab = await submit('lab');
    for (const [agentId, graph] of [[here, 'web'], [there, 'lab']] as const) coordinator.record(adminActor, (context) => commands.assignAgent(context, { agentId, graph }));
    const access = new ClosureAccess(coordinator);
    const answerOf = (agentId: string) => desiredAnswer(coordinator, coordinator.state.get('agents', agentId)!, 'ab'.repeat(16));

    // Not assigned yet: serves nobody, reads nothing, offered to nobody.
    expect(relayConfigs(coordinator, relayId)).toEqual([]);
    expect(answerOf(here).relays).toBeUndefined();

    coordinator.record(adminActor, (context) => commands.assignRelay(context, { relayId, where: ['labels.site=barn-3'] }, checkRelayWhere));
    expect(access.configsOf(relayId, 'relay')).toEqual([web]);
    expect(() => access.checkConfig({ keyId: relayId, role: 'relay' }, lab)).toThrow(/not assigned to this relay/);
    const answer = answerOf(here);
    const offer = answer.relays!;
    // What agents from before relays check is unchanged: the answer's own proof, over its config alone.
    expect(verifyProof(coordinator.identity.keyId, desiredProofMessage(here, 'ab'.repeat(16), answer), answer.proof)).toBe(true);
    expect(offer.relays.map((relay) => relay.id)).toEqual([relayId]);
    expect(offer.grant).toMatchObject({ agentId: here, configId: web });
    const key = coordinator.identity.keyId;
    expect(verifyProof(key, relayOfferMessage(here, 'ab'.repeat(16), offer), offer.proof)).toBe(true);
    expect(verifyProof(key, relayGrantMessage(here, web, offer.grant.expiresAt), offer.grant.proof)).toBe(true);
    expect(relayGrantProblem(key, offer.grant, here, web)).toBeUndefined();
    expect(relayGrantProblem(key, offer.grant, there, web)).toMatch(/another agent/);
    expect(relayGrantProblem(key, offer.grant, here, lab)).toMatch(/is for config/);
    expect(relayGrantProblem(key, offer.grant, here, web, offer.grant.expiresAt)).toMatch(/expired/);
    // The agent at another site gets no relay, whatever its facts say (barn-3).
    expect(answerOf(there).relays).toBeUndefined();

    // A pin moves what the relay may read with it.
    coordinator.record(adminActor, (context) => commands.pinAgent(context, { agentId: here, configId: lab }));
    expect(relayConfigs(coordinator, relayId)).toEqual([lab]);

    // Revoked: offered to nobody, reads nothing.
    coordinator.record(adminActor, (context) => commands.revokeRelay(context, { relayId }));
    expect(relayConfigs(coordinator, relayId)).toEqual([]);
    expect(answerOf(here).relays).toBeUndefined();
    expect(() => coordinator.record(adminActor, (context) => commands.assignRelay(context, { relayId, where: ['labels.site=barn-3'] }, checkRelayWhere))).toThrow(/revoked/);
  });

  it('is assigned by operator labels and agent fields only, never by what agents report', () => {
    const relayId = enrollRelay();
    for (const where of [['facts.site=barn-3'], ['presence=online'], ['nonsense']]) {
      expect(() => coordinator.record(adminActor, (context) => commands.assignRelay(context, { relayId, where }, checkRelayWhere))).toThrow();
    }
    const agent = Identity.generate();
    expect(() => coordinator.record({ keyId: agent.keyId, role: 'agent' }, (context) => commands.assignRelay(context, { relayId, where: ['labels.site=x'] }, checkRelayWhere))).toThrow(/may not/);
    expect(coordinator.state.get('relays', relayId)!.where).toEqual([]);
    // Nor does a relay's key become another role's.
    expect(() => coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: relayId, role: 'operator' }))).toThrow(/belongs to a relay/);
  });

  it("reads, as an upstream relay, its downstream relays' configs transitively, and hands them grants for theirs only", async () => {
    const site = enrollAgent('ship-1');
    const other = enrollAgent('shop-2');
    const [depot, ship, shop] = [enrollRelay(), enrollRelay(), enrollRelay()];
    const web = await submit('web');
    const lab = await submit('lab');
    coordinator.record(adminActor, (context) => commands.assignAgent(context, { agentId: site, graph: 'web' }));
    coordinator.record(adminActor, (context) => commands.assignAgent(context, { agentId: other, graph: 'lab' }));
    coordinator.record(adminActor, (context) => commands.assignRelay(context, { relayId: ship, where: ['labels.site=ship-1'] }, checkRelayWhere));
    coordinator.record(adminActor, (context) => commands.assignRelay(context, { relayId: shop, where: ['labels.site=shop-2'] }, checkRelayWhere));
    const upstream = (relayId: string, to: string | null) => coordinator.record(adminActor, (context) => commands.setRelayUpstream(context, { relayId, upstream: to }));
    const access = new ClosureAccess(coordinator);

    // Without an upstream: the depot reads nothing, the ship fetches from the coordinator only.
    expect(relayConfigs(coordinator, depot)).toEqual([]);
    expect(upstreamOffer(coordinator, ship, 'ab'.repeat(16))).toBeUndefined();
    const digestBefore = relayPrefetch(coordinator, ship).digest;

    upstream(ship, depot);
    expect(coordinator.state.get('relays', ship)!.upstream).toBe(depot);
    // The depot reads (and prefetches) the ship's agents' config, not the shop's.
    expect(access.configsOf(depot, 'relay')).toEqual([web]);
    expect(relayPrefetch(coordinator, depot).configs).toEqual([{ configId: web, system: 'x86_64-linux' }]);
    expect(() => access.checkConfig({ keyId: depot, role: 'relay' }, lab)).toThrow(/not assigned to this relay/);
    // The ship's prefetch digest changes (its held watch answers at once), its set does not.
    const shipPrefetch = relayPrefetch(coordinator, ship);
    expect(shipPrefetch.digest).not.toBe(digestBefore);
    expect(shipPrefetch.digest).toBe(relayPrefetchDigest(shipPrefetch.configs, upstreamOf(coordinator, ship)));

    // The ship's upstream offer: the depot, a grant for its config naming its own key, under a proof bound to it and the challenge.
    const key = coordinator.identity.keyId;
    const offer = upstreamOffer(coordinator, ship, 'cd'.repeat(16))!;
    expect(offer.relay).toEqual({ id: depot, url: 'https://10.0.0.1:9443', fingerprint: 'ab'.repeat(32) });
    expect(offer.grants.map((grant) => [grant.agentId, grant.configId])).toEqual([[ship, web]]);
    expect(relayGrantProblem(key, offer.grants[0]!, ship, web)).toBeUndefined();
    expect(relayGrantProblem(key, offer.grants[0]!, depot, web)).toMatch(/another agent/);
    expect(relayGrantProblem(key, offer.grants[0]!, ship, lab)).toMatch(/is for config/);
    expect(verifyProof(key, upstreamOfferMessage(ship, 'cd'.repeat(16), offer), offer.proof)).toBe(true);
    expect(verifyProof(key, upstreamOfferMessage(ship, 'ef'.repeat(16), offer), offer.proof)).toBe(false);
    expect(verifyProof(key, upstreamOfferMessage(shop, 'cd'.repeat(16), offer), offer.proof)).toBe(false);

    // Transitively: the shop behind the ship, the ship behind the depot: the depot reads both sites' configs, the ship gets grants for both.
    upstream(shop, ship);
    expect(relayConfigs(coordinator, depot).sort()).toEqual([web, lab].sort());
    expect(relayConfigs(coordinator, ship).sort()).toEqual([web, lab].sort());
    expect(upstreamOffer(coordinator, ship, '')!.grants.map((grant) => grant.configId)).toEqual([web, lab].sort());
    expect(upstreamOffer(coordinator, shop, '')!.grants.map((grant) => grant.configId)).toEqual([lab]);

    // Refused: itself, a cycle (directly or not), an unknown relay, a chain of more than four relays.
    expect(() => upstream(depot, depot)).toThrow(/cannot fetch from itself/);
    expect(() => upstream(depot, ship)).toThrow(/would be a cycle/);
    expect(() => upstream(depot, shop)).toThrow(/would be a cycle/);
    expect(() => upstream(depot, Identity.generate().keyId)).toThrow(/no relay/);
    const [top, over] = [enrollRelay(), enrollRelay()];
    upstream(depot, top);
    expect(() => upstream(top, over)).toThrow(/chain of 5 relays, more than 4/);
    // Nor may an agent or the relay itself decide it.
    expect(() => coordinator.record({ keyId: ship, role: 'relay' }, (context) => commands.setRelayUpstream(context, { relayId: ship, upstream: null }))).toThrow(/may not/);

    // Revoked: an upstream offered to nobody (its downstream fetch from the coordinator), reads nothing; a revoked relay is no upstream.
    coordinator.record(adminActor, (context) => commands.revokeRelay(context, { relayId: ship }));
    expect(upstreamOffer(coordinator, shop, '')).toBeUndefined();
    expect(relayConfigs(coordinator, depot)).toEqual([]);
    expect(() => upstream(shop, ship)).toThrow(/is revoked/);
    expect(() => upstream(ship, depot)).toThrow(/is revoked/);
    // Back to the coordinator only.
    upstream(shop, null);
    expect(coordinator.state.get('relays', shop)!.upstream).toBeNull();
  });
});
