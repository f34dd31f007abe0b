// Fleet control over the real HTTP API of a running coordinator (real SQLite, real signed requests):
// targeting rules placing agents that enroll later and agents relabelled, rule order, explicit
// assignment vs rules, tokens naming a graph or a rule, held watches woken by rule placements,
// role checks, and replay of it all equal to the live state.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { MemoryStateStore } from '../coordinator/domain/state.js';
import type { AuditEvent } from '../coordinator/domain/events.js';
import { addKey } from '../coordinator/domain/commands.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { coordinatorActor } from './fleet-simulator.js';

let test: TestCoordinator;
const configs: Record<string, string> = {};
const viewer = Identity.generate();
const operator = Identity.generate();

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  const target = fakeStorePath('ruled');
  writeTree(path.join(test.dir, 'tree'), 'ruled', { small: 2, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
  for (const graph of ['edge', 'canary', 'lab']) {
    configs[graph] = (await test.adminClient.call('graphs.submit', { graph, ...signedConfig(test.admin, graph, [], { 'x86_64-linux': target }, graph) })).configId;
  }
  test.coordinator.record(coordinatorActor(test.coordinator), (context) => addKey(context, { keyId: viewer.keyId, role: 'viewer', label: 'auditor' }));
  test.coordinator.record(coordinatorActor(test.coordinator), (context) => addKey(context, { keyId: operator.keyId, role: 'operator', label: 'ops' }));
});
afterAll(async () => {
  await test?.close();
});

/** Enrolls a new machine over HTTP with a fresh auto-approve token carrying `labels` (and `extra` token options). */
async function enroll(labels: Record<string, string>, extra: Record<string, unknown> = {}): Promise<{ agent: Identity; client: CoordinatorHttpClient }> {
  const agent = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels, ...extra });
  const client = new CoordinatorHttpClient(test.http.url, agent);
  await client.call('enroll', { token, name: `m-${agent.keyId.slice(0, 6)}`, facts: { system: 'x86_64-linux', hostname: 'h', labels: { site: 'claimed-by-agent' } } });
  return { agent, client };
}

const show = (agent: Identity) => test.adminClient.call('agents.show', { agentId: agent.keyId });

function eventsSince(seq: number): AuditEvent[] {
  return [...test.coordinator.events(seq)];
}

async function refusedWith(promise: Promise<unknown>, status: number, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ApiError);
  expect({ status: (error as ApiError).status, code: (error as ApiError).code }).toEqual({ status, code });
}

describe('targeting rules', () => {
  it('place a machine that enrolls after the rule, by its operator labels (never its facts), audited in the same transaction', async () => {
    const added = await test.adminClient.call('rules.add', { name: 'barns', where: ['labels.site=barn-*'], follow: 'edge' });
    expect(added.placed).toBe(0);
    const before = test.coordinator.lastSeq;
    const { agent, client } = await enroll({ site: 'barn-3' });
    const shown = await show(agent);
    expect(shown).toMatchObject({ desiredGraph: 'edge', desiredConfig: configs.edge, control: 'rules', rule: 'barns' });
    // The agent learns it at once: its desired answer names the head of edge.
    expect((await client.call('agent.watch', { known: 'none', wait: '0' })).configId).toBe(configs.edge);
    const events = eventsSince(before);
    expect(events.map((event) => [event.action, event.actorRole])).toEqual([
      ['token.create', 'admin'],
      ['agent.enroll', 'agent'],
      ['agent.place', 'coordinator'],
    ]);
    // The placement follows its enrollment directly: one transaction, consecutive seqs.
    expect(events[2]!.seq).toBe(events[1]!.seq + 1);
    expect(events[2]!.payload).toEqual({ agentId: agent.keyId, rule: 'barns', graph: 'edge', configId: null });
    // A machine whose token gives another site is left alone, whatever its facts claim.
    const other = await enroll({ site: 'lab-1' });
    expect(await show(other.agent)).toMatchObject({ desiredGraph: null, control: 'rules', rule: null });
  });

  it('re-place a relabelled agent at once, waking its held watch', async () => {
    const { agent, client } = await enroll({ site: 'lab-2' });
    expect((await show(agent)).desiredGraph).toBeNull();
    const watched = client.call('agent.watch', { known: 'none', wait: '20' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    const before = test.coordinator.lastSeq;
    const change = await new CoordinatorHttpClient(test.http.url, operator).call('agents.label', { agentIds: [agent.keyId], set: { site: 'barn-9' } });
    expect(change).toMatchObject({ relabelled: 1, placed: 1 });
    expect((await watched).configId).toBe(configs.edge);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(eventsSince(before).map((event) => [event.action, event.actorRole, event.actorKey])).toEqual([
      ['agent.label', 'operator', operator.keyId],
      ['agent.place', 'coordinator', test.coordinator.identity.keyId],
    ]);
    expect(await show(agent)).toMatchObject({ labels: { site: 'barn-9' }, rule: 'barns' });
    // Unsetting the label: no rule matches any more, so it follows nothing (and keeps running what it runs).
    const unset = await test.adminClient.call('agents.label', { agentIds: [agent.keyId], unset: ['site'] });
    expect(unset).toMatchObject({ relabelled: 1, placed: 1 });
    expect(await show(agent)).toMatchObject({ labels: {}, desiredGraph: null, rule: null, control: 'rules' });
    // The same change again changes nothing and records nothing.
    const seq = test.coordinator.lastSeq;
    expect(await test.adminClient.call('agents.label', { agentIds: [agent.keyId], unset: ['site'] })).toEqual({ seq: null, relabelled: 0, placed: 0 });
    expect(test.coordinator.lastSeq).toBe(seq);
  });

  it('relabel a --where selection in one transaction', async () => {
    const a = await enroll({ site: 'barn-20', rack: 'r1' });
    const b = await enroll({ site: 'barn-21', rack: 'r1' });
    const change = await test.adminClient.call('agents.label', { where: ['labels.rack=r1'], set: { tier: 'canary' } });
    expect(change.relabelled).toBe(2);
    for (const { agent } of [a, b]) expect((await show(agent)).labels).toMatchObject({ tier: 'canary', rack: 'r1' });
    await refusedWith(test.adminClient.call('agents.label', { where: ['labels.rack=r1'], agentIds: [a.agent.keyId], set: { x: '1' } }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('agents.label', { where: ['rack=r1'], set: { x: '1' } }), 400, 'INVALID');
  });

  it('are tried in order: the first match wins, and moving or removing a rule re-places agents', async () => {
    const { agent } = await enroll({ site: 'barn-1', tier: 'canary' });
    expect((await show(agent)).rule).toBe('barns');
    // A canary rule before barns takes it.
    expect(await test.adminClient.call('rules.add', { name: 'canaries', where: ['labels.tier=canary', 'labels.site'], follow: 'canary', before: 'barns' })).toMatchObject({ placed: 3 });
    expect(await show(agent)).toMatchObject({ rule: 'canaries', desiredGraph: 'canary' });
    expect((await test.adminClient.call('rules.list')).rules.map((rule) => [rule.position, rule.id])).toEqual([
      [0, 'canaries'],
      [1, 'barns'],
    ]);
    // Moved last: barns wins again.
    await test.adminClient.call('rules.move', { name: 'canaries', position: 5 });
    expect(await show(agent)).toMatchObject({ rule: 'barns', desiredGraph: 'edge' });
    // Moving it where it is records nothing.
    expect((await test.adminClient.call('rules.move', { name: 'canaries', position: 1 })).seq).toBeNull();
    // barns removed: canaries is the first match.
    await test.adminClient.call('rules.remove', { name: 'barns' });
    expect(await show(agent)).toMatchObject({ rule: 'canaries', desiredGraph: 'canary' });
    await test.adminClient.call('rules.move', { name: 'canaries', position: 0 });
    // A pinned rule: agents follow the graph, pinned to the config.
    await test.adminClient.call('rules.add', { name: 'barns', where: ['labels.site=barn-*', 'labels.tier!=canary'], follow: 'edge', pin: configs.edge });
    const plain = await enroll({ site: 'barn-5' });
    expect(await show(plain.agent)).toMatchObject({ rule: 'barns', desiredGraph: 'edge', pinnedConfig: configs.edge });
  });

  it('refuse what cannot be: unknown graphs and configs, a pin outside the graph, facts clauses, a name in use', async () => {
    const admin = test.adminClient;
    await refusedWith(admin.call('rules.add', { name: 'x', where: ['labels.a'], follow: 'nope' }), 404, 'NOT_FOUND');
    await refusedWith(admin.call('rules.add', { name: 'x', where: ['labels.a'], follow: 'edge', pin: configs.lab }), 400, 'INVALID');
    await refusedWith(admin.call('rules.add', { name: 'x', where: ['facts.site=barn-1'], follow: 'edge' }), 400, 'INVALID');
    await refusedWith(admin.call('rules.add', { name: 'x', where: ['system=x86_64-linux'], follow: 'edge' }), 400, 'INVALID');
    await refusedWith(admin.call('rules.add', { name: 'barns', where: ['labels.a'], follow: 'edge' }), 409, 'CONFLICT');
    await refusedWith(admin.call('rules.add', { name: 'x', where: ['labels.a'], follow: 'edge', before: 'nope' }), 404, 'NOT_FOUND');
    await refusedWith(admin.call('rules.add', { name: 'Bad Name', where: [], follow: 'edge' }), 400, 'INVALID');
    await refusedWith(admin.call('rules.remove', { name: 'nope' }), 404, 'NOT_FOUND');
  });
});

describe('explicit assignment and rules', () => {
  it('an operator assignment takes an agent out of the rules; --rules hands it back', async () => {
    const { agent } = await enroll({ site: 'barn-7' });
    expect((await show(agent)).rule).toBe('barns');
    await test.adminClient.call('agents.assign', { agentId: agent.keyId, graph: 'lab' });
    expect(await show(agent)).toMatchObject({ control: 'manual', rule: null, desiredGraph: 'lab' });
    // Rule changes and relabels leave it where the operator put it.
    await test.adminClient.call('agents.label', { agentIds: [agent.keyId], set: { site: 'barn-8' } });
    await test.adminClient.call('rules.move', { name: 'barns', position: 0 });
    expect(await show(agent)).toMatchObject({ control: 'manual', desiredGraph: 'lab' });
    const back = await test.adminClient.call('agents.follow-rules', { agentId: agent.keyId });
    expect(back).toMatchObject({ placed: 1 });
    expect(await show(agent)).toMatchObject({ control: 'rules', rule: 'barns', desiredGraph: 'edge', pinnedConfig: configs.edge });
    expect(eventsSince(back.seq! - 1)[0]).toMatchObject({ action: 'agent.place', actorRole: 'admin' });
    // Already under the rules: nothing to record.
    expect((await test.adminClient.call('agents.follow-rules', { agentId: agent.keyId })).seq).toBeNull();
  });
});

describe('tokens that place what they enroll', () => {
  it('a token naming a graph (and a pin) assigns the machine at enrollment', async () => {
    const before = test.coordinator.lastSeq;
    const { agent } = await enroll({ site: 'barn-1' }, { follow: 'lab', pin: configs.lab });
    expect(await show(agent)).toMatchObject({ control: 'manual', desiredGraph: 'lab', pinnedConfig: configs.lab });
    expect(eventsSince(before).map((event) => [event.action, event.actorRole])).toEqual([
      ['token.create', 'admin'],
      ['agent.enroll', 'agent'],
      ['agent.assign', 'coordinator'],
      ['agent.pin', 'coordinator'],
    ]);
    expect((await test.adminClient.call('tokens.list', {})).tokens.find((token) => token.follow === 'lab')).toMatchObject({ pin: configs.lab, rule: null });
  });

  it('a token naming a rule is refused unless its labels select that rule first', async () => {
    await refusedWith(test.adminClient.call('tokens.create', { labels: { site: 'lab-1' }, rule: 'barns' }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('tokens.create', { labels: { site: 'barn-1', tier: 'canary' }, rule: 'barns' }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('tokens.create', { labels: {}, rule: 'nope' }), 404, 'NOT_FOUND');
    await refusedWith(test.adminClient.call('tokens.create', { follow: 'nope' }), 404, 'NOT_FOUND');
    await refusedWith(test.adminClient.call('tokens.create', { pin: configs.lab }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('tokens.create', { relay: true, follow: 'lab' }), 400, 'INVALID');
    const { agent } = await enroll({ site: 'barn-2' }, { rule: 'barns' });
    expect(await show(agent)).toMatchObject({ control: 'rules', rule: 'barns', desiredGraph: 'edge' });
  });
});

describe('who may change labels and rules', () => {
  it('an agent key cannot relabel (itself or another), add rules or return itself to the rules; a viewer cannot either', async () => {
    const { agent, client } = await enroll({ site: 'barn-4' });
    const seq = test.coordinator.lastSeq;
    await refusedWith(client.call('agents.label', { agentIds: [agent.keyId], set: { site: 'lab-1' } }), 403, 'FORBIDDEN');
    await refusedWith(client.call('agents.label', { where: ['labels.site=barn-*'], set: { tier: 'x' } }), 403, 'FORBIDDEN');
    await refusedWith(client.call('rules.add', { name: 'mine', where: [], follow: 'lab' }), 403, 'FORBIDDEN');
    await refusedWith(client.call('agents.follow-rules', { agentId: agent.keyId }), 403, 'FORBIDDEN');
    const asViewer = new CoordinatorHttpClient(test.http.url, viewer);
    await refusedWith(asViewer.call('agents.label', { agentIds: [agent.keyId], set: { site: 'lab-1' } }), 403, 'FORBIDDEN');
    await refusedWith(asViewer.call('rules.remove', { name: 'barns' }), 403, 'FORBIDDEN');
    expect((await asViewer.call('rules.list')).rules.length).toBeGreaterThan(0);
    // Reporting facts that claim labels changes nothing a rule looks at.
    await client.call('agent.facts', { facts: { system: 'x86_64-linux', hostname: 'h', labels: { site: 'lab-1', tier: 'canary' } } });
    expect(await show(agent)).toMatchObject({ labels: { site: 'barn-4' }, rule: 'barns' });
    expect(eventsSince(seq).map((event) => event.action)).toEqual(['agent.facts']);
  });

  it('refuses hostile label changes with the field named', async () => {
    const { agent } = await enroll({});
    await refusedWith(test.adminClient.call('agents.label', { agentIds: [agent.keyId], set: { 'bad key!': 'x' } }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('agents.label', { agentIds: [agent.keyId], set: { k: 'x'.repeat(257) } }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('agents.label', { agentIds: [agent.keyId], set: { k: 'x' }, unset: ['k'] }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('agents.label', { agentIds: [agent.keyId] }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('agents.label', { agentIds: ['00'.repeat(32)], set: { k: 'x' } }), 404, 'NOT_FOUND');
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    await refusedWith(test.adminClient.call('agents.label', { agentIds: [agent.keyId], set: many }), 400, 'INVALID');
    await refusedWith(test.adminClient.call('agents.list', { where: Array.from({ length: 17 }, () => 'labels.a') }), 400, 'INVALID');
  });
});

describe('the log', () => {
  it('replays into exactly the live state (rules, labels, placements)', () => {
    const replayed = new MemoryStateStore();
    test.coordinator.replayInto(replayed);
    for (const table of ['agents', 'rules', 'tokens'] as const) {
      expect([...replayed.tables[table].values()].sort((a, b) => a.id.localeCompare(b.id)), table).toEqual(test.coordinator.state.all(table));
    }
    const actions = new Set([...test.coordinator.events()].map((event) => event.action));
    for (const action of ['rule.add', 'rule.remove', 'rule.move', 'agent.label', 'agent.place'] as const) expect(actions, action).toContain(action);
  });
});
