// The API client against a hostile server (a real HTTP server on
// 127.0.0.1 standing in for a compromised coordinator or something on the
// path of plain HTTP): a gzip bomb and an endless reply are refused before
// they are read into memory; an error code this client does not know (a
// newer coordinator's) still reaches the caller; a reply that does not
// match its route's description (protocol/api/routes.ts, and the audit
// viewer's: viewer-routes.ts) is refused BAD_RESPONSE, naming the field.
import { createServer, type Server } from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, CoordinatorHttpClient, MAX_REPLY_BYTES } from './http-client.js';
import { Identity } from './identity.js';

let server: Server;
let url: string;
/** 256 MiB of JSON whitespace in ~256 KB of gzip. */
const bomb = gzipSync(Buffer.alloc(256 * 1024 * 1024, 0x20));
let acceptEncoding: string | undefined;
/** What the server answers for `/v1/…` and `/viewer/api/…` paths, by method and path (with the query); what it was asked, in order. */
const scripted = new Map<string, { status: number; body: unknown }>();
const asked: { method: string; url: string; body: string }[] = [];

beforeAll(async () => {
  server = createServer(async (request, response) => {
    acceptEncoding = request.headers['accept-encoding'];
    if (request.url?.startsWith('/v1/') || request.url?.startsWith('/viewer/api/')) {
      let body = '';
      for await (const chunk of request) body += String(chunk);
      asked.push({ method: request.method!, url: request.url, body });
      const answer = scripted.get(`${request.method} ${request.url}`) ?? { status: 404, body: { error: { code: 'NOT_FOUND', message: 'not scripted' } } };
      response.writeHead(answer.status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(answer.body));
    } else if (request.url?.startsWith('/bomb')) {
      response.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      response.end(bomb);
    } else if (request.url?.startsWith('/endless')) {
      response.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const write = (): void => {
        while (response.write(chunk));
        response.once('drain', write);
      };
      response.on('close', () => response.removeAllListeners('drain'));
      write();
    } else if (request.url?.startsWith('/future')) {
      // What a newer coordinator may answer: a code this client does not know.
      response.writeHead(409, { 'content-type': 'application/json' });
      response.end('{"error":{"code":"QUOTA_EXCEEDED","message":"graph web holds 1000 configs","details":{"limit":1000}}}');
    } else if (request.url?.startsWith('/proxy')) {
      response.writeHead(502, { 'content-type': 'text/html' });
      response.end('<html>Bad Gateway</html>');
    } else {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"ok":true}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
});

async function refusal(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ApiError) return error;
    throw error;
  }
  throw new Error('expected a refusal');
}

describe('the API client bounds what a server can make it read', () => {
  it('asks for uncompressed replies and reads a normal one', async () => {
    expect(await new CoordinatorHttpClient(url, Identity.generate()).get('/ok')).toEqual({ ok: true });
    expect(acceptEncoding).toBe('identity');
  });

  it('refuses an HTTP-compressed reply without decompressing it', async () => {
    const before = process.memoryUsage().rss;
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).get('/bomb'));
    expect(error.code).toBe('BAD_RESPONSE');
    expect(error.message).toMatch(/gzip-encoded/);
    expect(process.memoryUsage().rss - before).toBeLessThan(128 * 1024 * 1024);
  });

  it(`stops reading a reply at ${MAX_REPLY_BYTES} bytes`, async () => {
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).get('/endless'));
    expect(error.code).toBe('BAD_RESPONSE');
    expect(error.message).toMatch(/larger than/);
  });
});

describe('the API client reads error codes against the enum', () => {
  it('keeps a code it does not know as sent, with the status, message and details', async () => {
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).get('/future'));
    expect({ status: error.status, code: error.code, sentCode: error.sentCode, message: error.message, details: error.details }).toEqual({
      status: 409,
      code: 'UNKNOWN_CODE',
      sentCode: 'QUOTA_EXCEEDED',
      message: 'graph web holds 1000 configs',
      details: { limit: 1000 },
    });
  });

  it('reads an answer that is not a Ferry error (a proxy’s page) as BAD_RESPONSE, keeping its status', async () => {
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).get('/proxy'));
    expect({ status: error.status, code: error.code }).toEqual({ status: 502, code: 'BAD_RESPONSE' });
    expect(error.message).toMatch(/HTTP 502 <html>Bad Gateway/);
  });
});

describe("the API client checks every reply against its route's description", () => {
  const agentId = 'a'.repeat(64);
  const configId = 'c'.repeat(64);
  const agent = {
    id: agentId,
    name: 'gw-1',
    type: 'gateway',
    status: 'enrolled',
    labels: { site: 'barn' },
    tokenId: '0123456789abcdef',
    factsRevision: 1,
    system: 'x86_64-linux',
    desiredGraph: 'edge',
    pinnedConfig: null,
    currentConfig: configId,
    phase: 'active',
    lastError: null,
    control: 'rules',
    rule: null,
    health: 'healthy',
    healthReason: null,
    healthConfig: configId,
    healthAt: 1_700_000_000_000,
    recordedPresence: null,
    retrySeq: null,
    stopRequested: false,
    enrolledSeq: 3,
    updatedSeq: 9,
    desiredConfig: configId,
    lastSeen: 1_700_000_000_000,
    presence: 'online',
    activity: null,
    facts: { system: 'x86_64-linux', hostname: 'gw-1' },
    params: [],
  };

  it('fills the path parameters, sends the rest as the query of a GET, and returns the checked reply', async () => {
    scripted.set(`GET /v1/agents/${agentId}`, { status: 200, body: agent });
    scripted.set('GET /v1/agents?limit=2&where=site%3Dbarn&where=status%3Denrolled', { status: 200, body: { agents: [], next: null } });
    const client = new CoordinatorHttpClient(url, Identity.generate());
    expect(await client.call('agents.show', { agentId })).toEqual(agent);
    expect(await client.call('agents.list', { limit: 2, where: ['site=barn', 'status=enrolled'] })).toEqual({ agents: [], next: null });
  });

  it('sends the rest of a POST as its JSON body', async () => {
    scripted.set('POST /v1/graphs/edge/rollback', { status: 201, body: { graph: 'edge', from: configId, to: 'd'.repeat(64), seq: 12 } });
    const reply = await new CoordinatorHttpClient(url, Identity.generate()).call('graphs.rollback', { graph: 'edge', to: 'd'.repeat(64) });
    expect(reply.to).toBe('d'.repeat(64));
    expect(asked.at(-1)).toEqual({ method: 'POST', url: '/v1/graphs/edge/rollback', body: JSON.stringify({ to: 'd'.repeat(64) }) });
  });

  it('refuses a reply whose field has the wrong type, naming the field', async () => {
    scripted.set(`GET /v1/agents/${'b'.repeat(64)}`, { status: 200, body: { ...agent, id: 'b'.repeat(64), lastSeen: 'yesterday' } });
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).call('agents.show', { agentId: 'b'.repeat(64) }));
    expect({ status: error.status, code: error.code, details: error.details }).toEqual({ status: 200, code: 'BAD_RESPONSE', details: { field: 'lastSeen' } });
    expect(error.message).toMatch(/^agents\.show: the reply does not match its description: lastSeen: /);
  });

  it('refuses a reply that lacks a field, or nests a wrong one, naming it', async () => {
    const { phase: _phase, ...withoutPhase } = agent;
    scripted.set(`GET /v1/agents/${'e'.repeat(64)}`, { status: 200, body: withoutPhase });
    scripted.set('GET /v1/agents?limit=1', { status: 200, body: { agents: [{ ...agent, status: 'sleeping' }], next: null } });
    const client = new CoordinatorHttpClient(url, Identity.generate());
    expect((await refusal(client.call('agents.show', { agentId: 'e'.repeat(64) }))).details).toEqual({ field: 'phase' });
    expect((await refusal(client.call('agents.list', { limit: 1 }))).details).toEqual({ field: 'agents.0.status' });
  });

  it('refuses a field the description does not name, where the coordinator controls the shape', async () => {
    scripted.set('POST /v1/graphs/web/rollback', { status: 201, body: { graph: 'web', from: configId, to: configId, seq: 4, extra: true } });
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).call('graphs.rollback', { graph: 'web' }));
    expect({ code: error.code, details: error.details }).toEqual({ code: 'BAD_RESPONSE', details: { field: 'extra' } });
  });
});

describe("the API client checks the audit viewer's replies against their description too", () => {
  const verification = { ok: true, events: 9, verifiedThrough: 9, lastCheckpoint: null, firstBad: null, checkedAt: 1_700_000_000_000, checkedThrough: 9, lastSeq: 9, durationMs: 3, checkpointSeqs: [] };
  const entry = { seq: 7, hlc: 'h', wallTime: 1_700_000_000_000, actorKey: 'k', actorRole: 'admin', action: 'graph.rollback', subject: 'edge', agent: null, graph: 'edge', summary: 'rolled back', headMove: { from: 'a', to: 'b' } };

  it('calls a viewer route by name, its parameters in its path, and returns the checked reply', async () => {
    scripted.set('GET /viewer/api/verify?refresh=1', { status: 200, body: verification });
    scripted.set('GET /viewer/api/events?graph=edge&limit=5', { status: 200, body: { entries: [entry], total: 1, hasOlder: false, hasNewer: false } });
    scripted.set('POST /viewer/api/session', { status: 201, body: { loginPath: '/viewer/login?token=abc', expiresAt: 1_700_000_120_000, lastSeq: 9 } });
    const client = new CoordinatorHttpClient(url, Identity.generate());
    expect(await client.call('viewer.verify', { refresh: '1' })).toEqual(verification);
    expect((await client.call('viewer.events', { graph: 'edge', limit: '5' })).entries).toEqual([entry]);
    expect(await client.call('viewer.session')).toMatchObject({ loginPath: '/viewer/login?token=abc' });
    expect(asked.at(-1)).toEqual({ method: 'POST', url: '/viewer/api/session', body: '{}' });
  });

  it('refuses a viewer reply of the wrong shape, naming the field', async () => {
    scripted.set('GET /viewer/api/verify', { status: 200, body: { ...verification, checkpointSeqs: [3, 'four'] } });
    scripted.set('GET /viewer/api/events?around=7', { status: 200, body: { entries: [{ ...entry, headMove: { from: 'a' } }], total: 1, hasOlder: false, hasNewer: false } });
    scripted.set('GET /viewer/api/events/7', { status: 200, body: { entry, event: {}, extra: 1 } });
    const client = new CoordinatorHttpClient(url, Identity.generate());
    const verify = await refusal(client.call('viewer.verify'));
    expect({ status: verify.status, code: verify.code, details: verify.details }).toEqual({ status: 200, code: 'BAD_RESPONSE', details: { field: 'checkpointSeqs.1' } });
    expect(verify.message).toMatch(/^viewer\.verify: the reply does not match its description: checkpointSeqs\.1: /);
    expect((await refusal(client.call('viewer.events', { around: '7' }))).details).toEqual({ field: 'entries.0.headMove.to' });
    const event = await refusal(client.call('viewer.event', { seq: '7' }));
    expect({ code: event.code, details: event.details }).toEqual({ code: 'BAD_RESPONSE', details: { field: 'event.seq' } });
  });

  it('refuses a login link that leads anywhere but the viewer’s login (the CLI opens it)', async () => {
    scripted.set('POST /viewer/api/session', { status: 201, body: { loginPath: 'https://elsewhere.example/viewer/login?token=abc', expiresAt: 1, lastSeq: 9 } });
    const error = await refusal(new CoordinatorHttpClient(url, Identity.generate()).call('viewer.session'));
    expect({ code: error.code, details: error.details }).toEqual({ code: 'BAD_RESPONSE', details: { field: 'loginPath' } });
  });
});
