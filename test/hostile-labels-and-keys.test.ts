// Hostile input: an agent naming its own labels at enrollment (issue 16,
// defect 5), and an admin key that was revoked coming back through
// `keys add` (issue 16, defect 8). The operator's labels (the token's) are
// the only ones used for targeting; agent-reported ones stay facts.
// Revocation is final.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { bootstrap } from './fleet-simulator.js';

let dir: string;
let coordinator: Coordinator;
let server: RunningServer;
let admin: CoordinatorHttpClient;

async function refusal(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    return error as ApiError;
  }
  throw new Error('expected the request to be refused');
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-labels-'));
  coordinator = Coordinator.open(dir);
  const { admin: adminIdentity } = bootstrap(coordinator);
  server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: () => undefined });
  admin = new CoordinatorHttpClient(server.url, adminIdentity);
});

afterAll(async () => {
  await server?.close();
  coordinator?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('defect 5: an agent overriding the labels its token gave it', () => {
  const agent = Identity.generate();
  const reported = { site: 'prod', role: 'admin' };
  const listed = async (where: string[]) => (await admin.call('agents.list', { where })).agents.map((a) => a.id);

  beforeAll(async () => {
    const { token } = await admin.call('tokens.create', { uses: 1, autoApprove: true, labels: { site: 'barn' } });
    await new CoordinatorHttpClient(server.url, agent).call('enroll', { token, name: 'sneaky', facts: { system: 'x86_64-linux', hostname: 'sneaky', labels: reported } });
  });

  it("defect 5: the agent's labels are exactly the token's; what it reported stays in its facts", async () => {
    const view = await admin.call('agents.show', { agentId: agent.keyId });
    expect(view.labels).toEqual({ site: 'barn' });
    expect(view.facts.labels).toEqual(reported);
    const enrolled = [...coordinator.events()].find((event) => event.action === 'agent.enroll' && event.subject === agent.keyId)!;
    expect(enrolled.payload).toMatchObject({ labels: { site: 'barn' }, facts: { labels: reported } });
  });

  it('defect 5: labels.* selectors see only operator labels; facts.* selectors see what the agent reported', async () => {
    expect(await listed(['labels.site=prod'])).toEqual([]);
    expect(await listed(['labels.role=admin'])).toEqual([]);
    expect(await listed(['labels.site=barn'])).toEqual([agent.keyId]);
    expect(await listed(['facts.labels.site=prod'])).toEqual([agent.keyId]);
  });

  it('defect 5: a bare key that is no agent field is refused, not read from the facts the agent reports', async () => {
    for (const clause of ['site=prod', 'labels=x', 'labels.=x', 'facts=x']) {
      const refused = await refusal(listed([clause]));
      expect(refused, clause).toMatchObject({ status: 400, code: 'INVALID' });
    }
    expect((await refusal(listed(['site=prod']))).message).toContain('name an operator label (labels.site=…) or a fact the agent reports (facts.site=…)');
    expect(await listed(['status=enrolled', 'system=x86_64-linux', 'name=sneaky'])).toEqual([agent.keyId]);
  });

  it('defect 5: operator label keys may contain dots', async () => {
    const dotted = Identity.generate();
    const { token } = await admin.call('tokens.create', { uses: 1, autoApprove: true, labels: { 'example.com/site': 'barn' } });
    await new CoordinatorHttpClient(server.url, dotted).call('enroll', { token, name: 'dotted', facts: { system: 'x86_64-linux', hostname: 'dotted' } });
    expect(await listed(['labels.example.com/site=barn'])).toEqual([dotted.keyId]);
  });

  it('defect 5: later facts reports cannot change the labels either', async () => {
    await new CoordinatorHttpClient(server.url, agent).call('agent.facts', { facts: { system: 'x86_64-linux', hostname: 'sneaky', labels: { site: 'other' } } });
    expect((await admin.call('agents.show', { agentId: agent.keyId })).labels).toEqual({ site: 'barn' });
    expect(await listed(['labels.site=other'])).toEqual([]);
  });
});

describe('defect 8: keys add re-activating a revoked key', () => {
  it('defect 8: keys add of a revoked key is refused (CONFLICT naming the key and its revocation); the key stays revoked', async () => {
    const viewer = Identity.generate();
    await admin.call('keys.add', { keyId: viewer.keyId, role: 'viewer', label: 'auditor' });
    const asViewer = new CoordinatorHttpClient(server.url, viewer);
    await asViewer.call('keys.list');
    await admin.call('keys.revoke', { keyId: viewer.keyId });
    const revokedAt = coordinator.lastSeq;

    for (const role of ['viewer', 'admin']) {
      const refused = await refusal(admin.post('/v1/keys', { keyId: viewer.keyId, role, label: 'back again' }));
      expect(refused).toMatchObject({ status: 409, code: 'CONFLICT' });
      expect(refused.message).toContain(viewer.keyId);
      expect(refused.message).toContain(`event #${revokedAt}`);
      expect(refused.message).toMatch(/revocation is final/);
    }
    expect(coordinator.lastSeq).toBe(revokedAt);
    expect(coordinator.state.get('keys', viewer.keyId)).toMatchObject({ role: 'viewer', revoked: true, revokedSeq: revokedAt });
    expect((await refusal(asViewer.get('/v1/keys'))).status).toBe(403);
  });
});
