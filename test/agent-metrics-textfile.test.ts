// The agent's node_exporter textfile (`ferry agent run --metrics-textfile`): after each deployment it
// says which config and how it ended, how long it took and what it fetched, parsed here with a
// Prometheus text-format parser; a directory it cannot write to is warned about and the deployment
// goes on.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { LocalCastore } from '../castore/index.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, signedConfig, startTestCoordinator, writeTree, type TestCoordinator } from './data-plane-fixture.js';

const system = nixSystem();
const app = fakeStorePath('textfile-app');
let test: TestCoordinator;
let work: string;

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-textfile-'));
  writeTree(path.join(work, 'app'), 'textfile', { small: 10, large: 1, largeSize: 200_000 });
  const source = LocalCastore.open(path.join(work, 'source'));
  await addTreeAsStorePath(source, path.join(work, 'app'), app);
  await pushToCoordinator(test, source, [app]);
  source.close();
}, 60_000);
afterAll(async () => {
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Value of `name`'s first sample (undefined: absent), and that sample's labels. */
function sampleOf(text: string, name: string): { value: number; labels: Record<string, string> } | undefined {
  const sample = parsePrometheusTextFormat(text).find((family) => family.name === name)?.metrics[0];
  return sample && { value: Number(sample.value), labels: sample.labels ?? {} };
}

describe('the metrics textfile', () => {
  it('says, after each deployment, its config and result, duration, bytes fetched and generation', async () => {
    const stateDir = path.join(work, 'agent');
    const good = (await test.adminClient.call('graphs.submit', { graph: 'textfile', ...signedConfig(test.admin, 'textfile', [], { [system]: app }, 'good', { activate: 'true' }) })).configId;
    const { agentId } = await enrollStateDir(test, { stateDir, name: 'textfile' });
    await test.adminClient.call('agents.assign', { agentId, graph: 'textfile' });
    const file = path.join(work, 'textfile', 'ferry.prom');
    rmSync(path.dirname(file), { recursive: true, force: true });
    // First without its directory: warned, the deployment unaffected.
    const warnings: string[] = [];
    const agent = new Agent(stateDir, { metricsTextfile: file, log: (line) => warnings.push(line), healthRetryDelayMs: 10 });
    try {
      expect(await agent.runOnce()).toBe('active');
      expect(existsSync(file)).toBe(false);
      expect(warnings.some((line) => line.includes(`metrics textfile ${file} not written`))).toBe(true);

      mkdirSync(path.dirname(file));
      const bad = (await test.adminClient.call('graphs.submit', { graph: 'textfile', ...signedConfig(test.admin, 'textfile', [good], { [system]: app }, 'bad', { activate: 'true', health: 'false' }) })).configId;
      expect(await agent.runOnce()).toBe('rolled-back');
      const text = readFileSync(file, 'utf8');
      expect(sampleOf(text, 'ferry_agent_deployment')).toEqual({ value: 1, labels: { config: bad, result: 'rolled-back' } });
      expect(sampleOf(text, 'ferry_agent_last_deploy_duration_seconds')!.value).toBeGreaterThan(0);
      expect(Math.abs(sampleOf(text, 'ferry_agent_last_deploy_timestamp_seconds')!.value - Date.now() / 1000)).toBeLessThan(60);
      // The same closure as the good config: nothing fetched the second time.
      expect(sampleOf(text, 'ferry_agent_last_deploy_fetched_bytes')!.value).toBe(0);
      expect(sampleOf(text, 'ferry_agent_fetched_bytes_total')!.value).toBeGreaterThan(200_000);
      expect(sampleOf(text, 'ferry_agent_generation')!.value).toBe(agent.generations.current()!.number);
      // Written by rename: no temp file is left beside it.
      expect(readdirSync(path.dirname(file))).toEqual(['ferry.prom']);
    } finally {
      await agent.close();
    }
  }, 60_000);
});
