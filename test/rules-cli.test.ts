// `ferry rules …`, `ferry agents label` and `ferry agents assign --rules` as users run them: the
// built bin/ferry in a child process (`npm test` builds first) against a coordinator over real HTTP.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentityFile, Identity } from '../protocol/identity.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { addKey } from '../coordinator/domain/commands.js';
import { addTreeAsStorePath, fakeStorePath, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';
import { coordinatorActor } from './fleet-simulator.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');
let test: TestCoordinator;
let keyFile: string;

/** Runs the CLI asynchronously: the coordinator serves from this process, so a synchronous spawn would block it. */
function ferry(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ferryBin, ...args, '--url', test.http.url, '--key', keyFile], { env: { ...process.env, FERRY_CONFIG_DIR: path.join(test.dir, 'cli') }, timeout: 30_000 }, (error, stdout, stderr) => {
      const status = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  test = await startTestCoordinator({ quic: false });
  keyFile = path.join(test.dir, 'operator.key');
  const operator = createIdentityFile(keyFile);
  test.coordinator.record(coordinatorActor(test.coordinator), (context) => addKey(context, { keyId: operator.keyId, role: 'operator', label: 'cli' }));
  const target = fakeStorePath('cli-ruled');
  writeTree(path.join(test.dir, 'tree'), 'cli-ruled', { small: 1, large: 0 });
  await addTreeAsStorePath(test.coordinator.castore, path.join(test.dir, 'tree'), target);
  await test.adminClient.call('graphs.submit', { graph: 'edge', ...signedConfig(test.admin, 'edge', [], { 'x86_64-linux': target }, 'edge') });
}, 60_000);
afterAll(async () => {
  await test?.close();
});

describe('ferry rules and labels', () => {
  it('adds, lists, orders and removes rules; relabels; returns an agent to the rules', async () => {
    const added = (await ferry('rules', 'add', 'barns', '--where', 'labels.site=barn-*', '--follow', 'edge', '--json'));
    expect(added.status, added.stderr).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ placed: 0 });
    expect((await ferry('rules', 'add', 'rest', '--all', '--follow', 'edge', '--position', '0')).stdout).toMatch(/added rule rest: 0 agent\(s\) placed anew/);
    expect((await ferry('rules', 'move', 'rest', '--position', '1')).status).toBe(0);
    const listed = JSON.parse((await ferry('rules', 'ls', '--json')).stdout) as { id: string; position: number; where: string[] }[];
    expect(listed.map((rule) => [rule.position, rule.id, rule.where])).toEqual([
      [0, 'barns', ['labels.site=barn-*']],
      [1, 'rest', []],
    ]);
    expect((await ferry('rules', 'ls')).stdout).toMatch(/barns\s+labels\.site=barn-\*\s+edge/);

    // A machine enrolled with a lab token is caught by the catch-all; relabelled, by barns.
    const agent = Identity.generate();
    const { token } = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, labels: { site: 'lab' } });
    await new CoordinatorHttpClient(test.http.url, agent).call('enroll', { token, name: 'cli-gw', facts: { system: 'x86_64-linux', hostname: 'gw' } });
    const label = (await ferry('agents', 'label', 'cli-gw', '--set', 'site=barn-2', '--json'));
    expect(label.status, label.stderr).toBe(0);
    expect(JSON.parse(label.stdout)).toMatchObject({ relabelled: 1, placed: 1 });
    expect((await ferry('agents', 'status')).stdout).toMatch(/cli-gw\s+edge\s+rule barns/);

    // Assigned by hand: manual; --rules hands it back.
    expect((await ferry('agents', 'assign', 'cli-gw', 'edge')).status).toBe(0);
    expect((await ferry('agents', 'status')).stdout).toMatch(/cli-gw\s+edge\s+manual/);
    expect((await ferry('agents', 'assign', 'cli-gw', '--rules')).stdout).toMatch(/1 agent\(s\) returned to the rules/);
    expect((await ferry('agents', 'label', '--where', 'labels.site=barn-*', '--unset', 'site')).stdout).toMatch(/1 agent\(s\) relabelled, 1 placed anew/);
    expect((await ferry('agents', 'show', 'cli-gw')).stdout).toMatch(/follows edge \(rule rest\)/);
    expect((await ferry('rules', 'rm', 'rest')).stdout).toMatch(/removed rule rest: 1 agent\(s\) placed anew/);
  });

  it('explains mistakes: usage (exit 2) and the coordinator’s refusals naming what', async () => {
    const cases: [string[], number, RegExp][] = [
      [['rules', 'add', 'x', '--follow', 'edge'], 2, /give --where .* or --all/],
      [['rules', 'add', 'x', '--where', 'labels.a'], 2, /--follow GRAPH is required/],
      [['rules', 'add', 'x', '--where', 'labels.a', '--follow', 'edge', '--before', 'a', '--position', '1'], 2, /--before or --position, not both/],
      [['rules', 'add', 'x', '--where', 'labels.a', '--follow', 'edge', '--position', '1e3'], 2, /--position '1e3' is not a non-negative integer/],
      [['rules', 'add', 'x', '--where', 'facts.site=a', '--follow', 'edge'], 1, /a rule selects on operator labels only/],
      [['rules', 'add', 'x', '--where', 'labels.a', '--follow', 'nope'], 1, /no graph 'nope'/],
      [['rules', 'move', 'barns'], 2, /give --before RULE or --position N/],
      [['agents', 'label', '--set', 'a=b'], 2, /no agents selected/],
      [['agents', 'label', 'cli-gw'], 2, /nothing to change/],
      [['agents', 'label', 'cli-gw', '--set', 'bad key=1'], 1, /INVALID\]: set\.bad key/],
      [['tokens', 'create', '--follow', 'nope'], 1, /no graph 'nope'/],
    ];
    for (const [args, status, message] of cases) {
      const result = await ferry(...args);
      expect(result.status, args.join(' ')).toBe(status);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
  });
});
