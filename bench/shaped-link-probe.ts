/**
 * The shaped-link bench's hand inside the coordinator's network namespace
 * (bench/shaped-link.bench.ts starts it with `ip netns exec`): the bench
 * itself runs outside both namespaces and cannot reach the coordinator's
 * address, so admin API calls and the wait for "agent active" go through
 * this process, over the coordinator namespace's own loopback (never over the
 * shaped veth, whose byte counters stay the agent's and the coordinator's).
 *
 * Protocol: one JSON request per stdin line, one JSON reply per stdout line,
 * answered in order.
 *   {"op":"get"|"post","path":"/v1/…","body":…}        -> {"ok":true,"value":…}
 *   {"op":"waitActive","agentId":"…","configId":"…","timeoutMs":N}
 *       polls GET /v1/agents/<id> every 50 ms          -> {"ok":true,"value":{"phase":"active",…}}
 *   {"op":"serveStatic","dir":"…","host":"…","port":N}  serves a binary cache -> {"ok":true,"value":"http://…"}
 * Failures answer {"ok":false,"error":"…"}; stdin closing ends the process.
 * Usage: node --import tsx bench/shaped-link-probe.ts <coordinator-url> <admin-key-file>
 */
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { loadIdentity } from '../protocol/identity.js';

const [url, keyFile] = process.argv.slice(2);
if (!url || !keyFile) {
  process.stderr.write('usage: shaped-link-probe.ts <coordinator-url> <admin-key-file>\n');
  process.exit(2);
}
const client = new CoordinatorHttpClient(url, loadIdentity(keyFile));

type ProbeRequest =
  | { op: 'get'; path: string }
  | { op: 'post'; path: string; body: unknown }
  | { op: 'waitActive'; agentId: string; configId: string; timeoutMs: number }
  | { op: 'serveStatic'; dir: string; host: string; port: number };

interface AgentRecord {
  phase: string | null;
  currentConfig: string | null;
  lastError?: string | null;
}

async function waitActive(agentId: string, configId: string, timeoutMs: number): Promise<AgentRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await client.call('agents.show', { agentId });
    if (record.phase === 'active' && record.currentConfig === configId) return record;
    if (record.phase === 'failed' || record.phase === 'rolled-back') throw new Error(`agent ${agentId}: ${record.phase} (${record.lastError ?? 'no error given'})`);
    if (Date.now() > deadline) throw new Error(`agent ${agentId} not active on ${configId} after ${timeoutMs} ms (phase ${record.phase})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A static file server for a `file://` binary cache (what any web server in
 * front of one does): keep-alive, Content-Length, HEAD, 404 for anything else.
 * Its CPU is this process's, which is otherwise idle while `nix copy` runs.
 */
function serveStatic(dir: string, host: string, port: number): Promise<string> {
  const server = createServer((request, response) => {
    const file = path.join(dir, path.normalize(decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname)));
    let size: number;
    try {
      const stats = statSync(file);
      if (!file.startsWith(`${dir}/`) || !stats.isFile()) throw new Error('not a file');
      size = stats.size;
    } catch {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-length': String(size), 'content-type': 'application/octet-stream' });
    if (request.method === 'HEAD') response.end();
    else createReadStream(file, { highWaterMark: 1 << 20 }).pipe(response);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(`http://${host}:${port}`));
  });
}

async function answer(request: ProbeRequest): Promise<unknown> {
  switch (request.op) {
    case 'get':
      return client.get(request.path);
    case 'post':
      return client.post(request.path, request.body);
    case 'waitActive':
      return waitActive(request.agentId, request.configId, request.timeoutMs);
    case 'serveStatic':
      return serveStatic(request.dir, request.host, request.port);
  }
}

// Requests are answered one at a time, in order.
let queue = Promise.resolve();
process.stdout.write(`${JSON.stringify({ ok: true, value: 'ready' })}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  queue = queue.then(async () => {
    let reply: unknown;
    try {
      reply = { ok: true, value: await answer(JSON.parse(line) as ProbeRequest) };
    } catch (error) {
      reply = { ok: false, error: (error as Error).message };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  });
});
