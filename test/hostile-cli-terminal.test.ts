// Defect 6 of issue 16: text that agents and other clients send must not drive
// the admin's terminal. A real coordinator; an agent enrolled through the real
// API whose name, type, facts and error carry escape sequences; a token and a
// key with hostile labels; then the real `ferry` commands an admin runs, each
// in a child process, in human form and with --json.
//
// The CLI runs from source (node --import tsx, as bench/fixtures/ferry-cli.ts
// does), not bin/ferry: bin/ferry runs build/, which is only as fresh as the
// last build, and this test is about the code in the tree. The coordinator
// runs in this process, so the CLI is spawned asynchronously (spawnSync would
// block the server it talks to).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeForTerminal } from '../cli/terminal-text.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const ferrySource = path.join(repo, 'bench', 'fixtures', 'ferry-cli.ts');

// Clear screen and home, set the window title (OSC … BEL), the one-byte C1 CSI, carriage return and
// backspace (overwrite), a bidi override, DEL, a tab, and a newline that would forge a table row.
const hostileName = 'evil\x1b[2J\x1b[H\x1b]0;pwned\x07\u009b31m\u202etxt.exe\rspoof\bX\x7f\tT\nfake-row  approved';
const hostileType = 'gw\x1b[8mhidden\x1b]0;title\x07';
const hostileHostname = 'host\x1b[2J\u009b2J';
const hostileError = 'activation failed: exit 1; output:\n\x1b[2J\x1b]0;owned\x07line\u009b2J\r\x1b[8mhidden\x7f\u2066bidi\u2069\n\tlast line\x1b[0m';
const hostileNote = 'note\x1b[2J\x07\u009b\u202ereversed';
const hostileLabel = 'barn\x1b]0;x\x07';
const hostileKeyLabel = 'ci\x1b[2J\u009b1m';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  raw: Buffer;
}

function ferry(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ferrySource, ...args], { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (status) => {
      const raw = Buffer.concat([...out, ...err]);
      resolve({ status, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), raw });
    });
  });
}

/** The bytes a terminal would obey: ESC, BEL and every C0 but newline, DEL, and C1 (as UTF-8, e.g. U+009B is C2 9B). */
function terminalControls(run: Run): string[] {
  const found = new Set<string>();
  for (const byte of run.raw) if ((byte < 0x20 && byte !== 0x0a) || byte === 0x7f) found.add(`0x${byte.toString(16).padStart(2, '0')}`);
  for (const match of (run.stdout + run.stderr).matchAll(/[\u0080-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g)) found.add(`U+${match[0].charCodeAt(0).toString(16).padStart(4, '0')}`);
  return [...found];
}

describe('hostile input: the CLI shows what clients wrote, never lets it drive the terminal', () => {
  let test: TestCoordinator;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let agentId: string;
  let tokenId: string;
  let viewerKeyId: string;
  let enrollSeq: number;
  let reportSeq: number;

  beforeAll(async () => {
    test = await startTestCoordinator({ quic: false });
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-cli-'));
    const adminKey = path.join(dir, 'admin.key');
    writeFileSync(adminKey, test.admin.toKeyFile(), { mode: 0o600 });
    // The CLI's own config dir is empty: only --url and --key say where to go.
    env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_URL: test.http.url, FERRY_KEY: adminKey, FERRY_CONTEXT: '', NO_COLOR: '1' };

    // An operator's token with a hostile note and label, used by a hostile agent.
    const token = await test.adminClient.call('tokens.create', { uses: 1, autoApprove: true, label: hostileNote, labels: { site: hostileLabel } });
    tokenId = token.tokenId;
    const agent = Identity.generate();
    agentId = agent.keyId;
    const agentClient = new CoordinatorHttpClient(test.http.url, agent);
    await agentClient.call('enroll', { token: token.token, name: hostileName, type: hostileType, facts: { system: 'x86_64-linux', hostname: hostileHostname, os: hostileType } });
    await agentClient.call('agent.status', { configId: null, phase: 'failed', error: hostileError });
    // A key whose label an admin typed carelessly (or pasted from somewhere hostile).
    viewerKeyId = Identity.generate().keyId;
    await test.adminClient.call('keys.add', { keyId: viewerKeyId, role: 'viewer', label: hostileKeyLabel });

    const events = await test.adminClient.call('audit.events', { limit: '1000' });
    enrollSeq = events.events.find((event) => event.action === 'agent.enroll' && event.subject === agentId)!.seq;
    reportSeq = events.events.find((event) => event.action === 'agent.report' && event.subject === agentId)!.seq;
  }, 60_000);

  afterAll(async () => {
    await test?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('defect 6: agents ls/status/show/facts, tokens ls, keys ls, audit log/show print no terminal control, and --json keeps the exact strings', async () => {
    const commands: Record<string, string[]> = {
      'agents ls': ['agents', 'ls'],
      'agents status': ['agents', 'status'],
      'agents show': ['agents', 'show', agentId],
      'agents facts': ['agents', 'facts', agentId],
      'tokens ls': ['tokens', 'ls'],
      'keys ls': ['keys', 'ls'],
      'audit log': ['audit', 'log'],
      'audit show (enroll)': ['audit', 'show', String(enrollSeq)],
      'audit show (report)': ['audit', 'show', String(reportSeq)],
    };
    const names = Object.keys(commands);
    const [human, json] = await Promise.all([
      Promise.all(names.map((name) => ferry(commands[name]!, env))),
      Promise.all(names.map((name) => ferry([...commands[name]!, '--json'], env))),
    ]);
    const byName = (runs: Run[]) => Object.fromEntries(names.map((name, i) => [name, runs[i]!]));
    const shown = byName(human);
    const exact = byName(json);

    for (const name of names) {
      expect(shown[name]!.status, `${name}: ${shown[name]!.stderr}`).toBe(0);
      expect(exact[name]!.status, `${name} --json: ${exact[name]!.stderr}`).toBe(0);
      expect(terminalControls(shown[name]!), `${name} printed terminal controls`).toEqual([]);
    }

    // Shown, escaped, not dropped: a one-line cell per agent (the newline cannot forge a row) …
    expect(shown['agents ls']!.stdout).toContain(safeForTerminal(hostileName));
    expect(shown['agents ls']!.stdout).toContain(safeForTerminal(hostileType));
    expect(shown['agents ls']!.stdout.split('\n').filter((line) => line.includes('fake-row'))).toHaveLength(1);
    expect(shown['agents ls']!.stdout).not.toMatch(/^fake-row/m);
    expect(shown['agents status']!.stdout).toContain(safeForTerminal('activation failed: exit 1: '));
    expect(shown['agents status']!.stdout).toContain(safeForTerminal('last line\x1b[0m'));
    expect(shown['tokens ls']!.stdout).toContain(safeForTerminal(hostileNote));
    expect(shown['keys ls']!.stdout).toContain(safeForTerminal(hostileKeyLabel));
    expect(shown['audit log']!.stdout).toContain(agentId);
    // … and the whole error in `agents show`, its lines kept and indented under `error`.
    expect(shown['agents show']!.stdout).toContain(`error   activation failed: exit 1; output:\n        ${safeForTerminal('\x1b[2J\x1b]0;owned\x07line\u009b2J\r\x1b[8mhidden\x7f\u2066bidi\u2069')}\n`);
    expect(shown['agents show']!.stdout).toContain(`name    ${safeForTerminal(hostileName)} (${safeForTerminal(hostileType)})\n`);
    expect(shown['audit show (report)']!.stdout).toMatch(/payload:\n\{/);

    // --json is exact: the original strings come back from JSON.parse.
    const agents = JSON.parse(exact['agents ls']!.stdout) as { id: string; name: string; type: string }[];
    expect(agents.find((a) => a.id === agentId)).toMatchObject({ name: hostileName, type: hostileType });
    const statuses = JSON.parse(exact['agents status']!.stdout) as { id: string; lastError: string | null }[];
    expect(statuses.find((a) => a.id === agentId)?.lastError).toBe(hostileError);
    const detail = JSON.parse(exact['agents show']!.stdout) as { name: string; type: string; lastError: string; facts: { hostname: string }; labels: Record<string, string> };
    expect(detail).toMatchObject({ name: hostileName, type: hostileType, lastError: hostileError, facts: { hostname: hostileHostname }, labels: { site: hostileLabel } });
    const facts = JSON.parse(exact['agents facts']!.stdout) as { revisions: { facts: { hostname: string; os: string } }[] };
    expect(facts.revisions.at(-1)!.facts).toMatchObject({ hostname: hostileHostname, os: hostileType });
    const tokens = JSON.parse(exact['tokens ls']!.stdout) as { id: string; label: string }[];
    expect(tokens.find((t) => t.id === tokenId)?.label).toBe(hostileNote);
    const keys = JSON.parse(exact['keys ls']!.stdout) as { id: string; label: string }[];
    expect(keys.find((k) => k.id === viewerKeyId)?.label).toBe(hostileKeyLabel);
    const log = exact['audit log']!.stdout.trim().split('\n').map((line) => JSON.parse(line) as { seq: number; payload: { name?: string; error?: string } });
    expect(log.find((event) => event.seq === enrollSeq)?.payload.name).toBe(hostileName);
    expect(log.find((event) => event.seq === reportSeq)?.payload.error).toBe(hostileError);
    const enrollEvent = JSON.parse(exact['audit show (enroll)']!.stdout) as { event: { payload: { name: string; type: string } } };
    expect(enrollEvent.event.payload).toMatchObject({ name: hostileName, type: hostileType });
    const reportEvent = JSON.parse(exact['audit show (report)']!.stdout) as { event: { payload: { error: string } } };
    expect(reportEvent.event.payload.error).toBe(hostileError);
  }, 120_000);

  it('defect 6: error messages quoting a coordinator\'s answer or an argument are escaped too', async () => {
    // Whatever answers at the URL (a compromised or impersonated coordinator, or one quoting a
    // client's request) chooses the error code and message `ferry` prints.
    const hostile = createServer((request, response) => {
      if (request.url?.startsWith('/v1/agents')) {
        response.writeHead(403, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: { code: 'DENIED\x1b]0;pwned\x07', message: 'refused\x1b[2J\u009b31m\rforged line\nferry: all good' } }));
      } else {
        response.writeHead(500, { 'content-type': 'text/plain' });
        response.end('boom\x1b]0;title\x07\x1b[2J');
      }
    });
    await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}`;
      const [json, text] = await Promise.all([ferry(['agents', 'ls', '--url', url], env), ferry(['tokens', 'ls', '--url', url], env)]);
      expect(json.status, json.stderr).toBe(1);
      expect(json.stderr).toBe(`ferry: error [${safeForTerminal('DENIED\x1b]0;pwned\x07')}]: refused\\x1b[2J\\x9b31m\\rforged line\n  ferry: all good\n`); // indented: not a line of ferry's own
      expect(terminalControls(json)).toEqual([]);
      expect(text.status, text.stderr).toBe(1);
      expect(text.stderr).toContain(safeForTerminal('boom\x1b]0;title\x07\x1b[2J'));
      expect(terminalControls(text)).toEqual([]);
    } finally {
      await new Promise((resolve) => hostile.close(resolve));
    }
    // A usage error quotes the argument as typed (here pasted from somewhere hostile).
    const usage = await ferry(['agents', 'show', 'nobody\x1b]0;pwned\x07\x1b[2J'], env);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain(`no agent named or starting with '${safeForTerminal('nobody\x1b]0;pwned\x07\x1b[2J')}'`);
    expect(terminalControls(usage)).toEqual([]);
  }, 60_000);
});
