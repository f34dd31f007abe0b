// The environment of activation and health-check commands, with a real
// agent process (`ferry agent run --once`, from the sources) started with
// variables of its own: the commands see exactly the documented variables
// (docs/agent.md, "The command environment") and the config's own, nothing
// of the agent's. A config setting LD_PRELOAD (or PATH, or a FERRY_* name)
// is refused at submission with a 400 naming the key; one that got into the
// log anyway (recorded before the refusal existed) is refused by the agent.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/index.js';
import { nixSystem } from '../agent/facts.js';
import { COMMAND_PATH_DIRECTORIES } from '../agent/run-command.js';
import { LocalCastore } from '../castore/index.js';
import { configId as configIdOf, configSigningMessage } from '../coordinator/domain/commands.js';
import type { ConfigBody } from '../coordinator/domain/events.js';
import { formatHlc } from '../protocol/hlc.js';
import { ApiError } from '../protocol/http-client.js';
import { addTreeAsStorePath, enrollStateDir, fakeStorePath, pushToCoordinator, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { coordinatorActor } from './fleet-simulator.js';

const ferrySource = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'fixtures', 'ferry-cli.ts');
const system = nixSystem();
const app = fakeStorePath('env-app');

let test: TestCoordinator;
let work: string;

function body(graph: string, activate: string, health: string | null, environment: Record<string, string>) {
  return {
    graph,
    parents: [],
    targets: { [system]: app },
    activation: { command: activate, environment, timeoutSeconds: 60 },
    health: health === null ? null : { command: health, timeoutSeconds: 60, retries: 0 },
    message: 'environment',
    author: test.admin.keyId,
    hlc: formatHlc({ wall: Date.now(), counter: 0, node: 'test' }),
  };
}

function signed(config: ReturnType<typeof body>) {
  return { body: config, signature: Buffer.from(test.admin.sign(configSigningMessage(configIdOf(config as ConfigBody)))).toString('base64') };
}

/** `env` output as a map (values hold no newline here). */
function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n').filter(Boolean)) out[line.slice(0, line.indexOf('='))] = line.slice(line.indexOf('=') + 1);
  return out;
}

/** Runs `ferry …` from the sources in a child process with `env` added to this process's environment. */
function ferry(args: string[], env: Record<string, string>): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ferrySource, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (status) => resolve({ status, stderr }));
  });
}

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-command-env-'));
  const tree = path.join(work, 'app');
  mkdirSync(path.join(tree, 'bin'), { recursive: true });
  writeFileSync(path.join(tree, 'bin', 'greet'), '#!/bin/sh\necho "$GREETING"\n');
  chmodSync(path.join(tree, 'bin', 'greet'), 0o755);
  const source = LocalCastore.open(path.join(work, 'source'));
  await addTreeAsStorePath(source, tree, app);
  await pushToCoordinator(test, source, [app]);
  source.close();
}, 60_000);

afterAll(async () => {
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the activation and health-check environment', () => {
  it("defect 8: commands see the documented variables and the config's own, nothing of the agent process's environment", async () => {
    const config = body(
      'env',
      // `greet` is found through PATH: the target's bin comes first.
      'env > "$FERRY_STATE_DIR/activation.env" && greet > "$FERRY_STATE_DIR/greeting"',
      'env > "$FERRY_STATE_DIR/health.env"',
      { GREETING: 'hello world', TZ: 'UTC' },
    );
    const { configId } = await test.adminClient.call('graphs.submit', { graph: 'env', ...signed(config) });
    const stateDir = path.join(work, 'agent');
    const { agentId } = await enrollStateDir(test, { stateDir, name: 'env-agent' });
    await test.adminClient.call('agents.assign', { agentId, graph: 'env' });

    // The agent's own environment holds a secret, its config dir and the usual HOME, LANG, PATH…
    const run = await ferry(['agent', 'run', '--once', '--state-dir', stateDir], { FERRY_TEST_SECRET: 'x', FERRY_CONFIG_DIR: path.join(work, 'config'), LD_LIBRARY_PATH: '/nowhere' });
    expect(run.status, run.stderr).toBe(0);
    expect(readFileSync(path.join(stateDir, 'greeting'), 'utf8')).toBe('hello world\n');

    const location = path.join(stateDir, 'store', path.basename(app));
    const documented = {
      PATH: [path.join(location, 'bin'), ...COMMAND_PATH_DIRECTORIES].join(':'),
      FERRY_AGENT_ID: agentId,
      FERRY_CONFIG_ID: configId,
      FERRY_GENERATION: '1',
      FERRY_TARGET: location,
      FERRY_STATE_DIR: stateDir,
      FERRY_STORE_DIR: path.join(stateDir, 'store'),
      GREETING: 'hello world',
      TZ: 'UTC',
    };
    // What the shell adds itself (its working directory, nesting level, last command) is not the agent's.
    const shellOwn = new Set(['PWD', 'OLDPWD', 'SHLVL', '_']);
    for (const [file, command] of [['activation.env', 'activation'], ['health.env', 'health-check']] as const) {
      const seen = parseEnv(readFileSync(path.join(stateDir, file), 'utf8'));
      expect(Object.fromEntries(Object.entries(seen).filter(([key]) => !shellOwn.has(key))), file).toEqual({ ...documented, FERRY_COMMAND: command });
      for (const key of ['FERRY_TEST_SECRET', 'FERRY_CONFIG_DIR', 'HOME', 'LD_LIBRARY_PATH', 'USER', 'LANG']) expect(seen[key], `${file}: ${key}`).toBeUndefined();
    }
    expect(test.coordinator.state.get('agents', agentId)).toMatchObject({ currentConfig: configId, phase: 'active' });
  }, 60_000);

  it('defect 8: a config setting LD_PRELOAD, PATH or a FERRY_* variable is refused at submission, naming the key', async () => {
    for (const [key, reason] of [
      ['LD_PRELOAD', /it makes the dynamic loader load other code/],
      ['LD_LIBRARY_PATH', /dynamic loader/],
      ['BASH_ENV', /changes how the shell running the command reads and runs it/],
      ['PATH', /the agent sets a fixed PATH/],
      ['FERRY_STORE_DIR', /FERRY_\* variables are reserved/],
    ] as const) {
      const error = await test.adminClient.post('/v1/graphs/env-refused/configs', signed(body('env-refused', 'true', null, { GREETING: 'hi', [key]: '/tmp/x' }))).catch((thrown: unknown) => thrown);
      expect(error, key).toBeInstanceOf(ApiError);
      expect(error, key).toMatchObject({ status: 400, code: 'INVALID' });
      expect((error as ApiError).message, key).toContain(`body.activation.environment.${key}: ${key} is refused: `);
      expect((error as ApiError).message, key).toMatch(reason);
    }
    expect(test.coordinator.state.get('graphs', 'env-refused')).toBeUndefined();
  });

  it('defect 8: the agent refuses such a config even when the coordinator hands it out (a log recorded before the refusal), running nothing', async () => {
    // An old log may hold one: the replay schema still accepts it, so the coordinator serves it.
    const config = body('env-old', 'touch "$FERRY_STATE_DIR/ran"', null, { LD_PRELOAD: '/tmp/evil.so' });
    const id = configIdOf(config as ConfigBody);
    test.coordinator.record(coordinatorActor(test.coordinator), () => ({
      action: 'config.submit',
      subject: 'env-old',
      payload: { id, body: config as ConfigBody, signature: signed(config).signature, previousHead: null, forced: false },
    }));
    const stateDir = path.join(work, 'agent-old');
    const { agentId } = await enrollStateDir(test, { stateDir, name: 'env-old-agent' });
    await test.adminClient.call('agents.assign', { agentId, graph: 'env-old' });
    const agent = new Agent(stateDir, { log: () => undefined });
    try {
      expect(await agent.runOnce()).toBe('failed');
    } finally {
      await agent.close();
    }
    expect(existsSync(path.join(stateDir, 'ran'))).toBe(false);
    expect(existsSync(path.join(stateDir, 'generations'))).toBe(false);
    expect(test.coordinator.state.get('agents', agentId)).toMatchObject({ phase: 'failed' });
    expect(test.coordinator.state.get('agents', agentId)!.lastError).toMatch(/^activation\.environment: LD_PRELOAD is refused: it makes the dynamic loader/);
  }, 60_000);
});
