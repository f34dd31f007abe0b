// The error model end to end (docs/errors.md), on real sockets on
// 127.0.0.1: an unexpected failure in a route of the API, of the viewer or
// of the data plane answers INTERNAL in the JSON (or frame) shape, logged
// with its stack, never hono's plain-text 500; the Nix cache keeps its
// text bodies; and a client facing a newer coordinator's unknown code (the
// API client, the data client, the CLI) keeps and shows it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { startHttpServer, type RunningServer } from '../coordinator/server.js';
import { DataClient, DataError } from '../protocol/data-client.js';
import { isSentErrorCode, ErrorCodeSchema } from '../protocol/errors.js';
import { encodeHeaderFrame } from '../protocol/framing.js';
import { ApiError, CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity } from '../protocol/identity.js';
import { bootstrap } from './fleet-simulator.js';
import { rawRequest, signedHeaders, type RawResponse } from './hostile-http.js';

const ferryBin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'ferry');

let dir: string;
let coordinator: Coordinator;
let server: RunningServer;
let admin: Identity;
const log: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-error-model-'));
  coordinator = Coordinator.open(dir);
  admin = bootstrap(coordinator).admin;
  server = await startHttpServer(coordinator, '127.0.0.1', 0, { log: (line) => log.push(line), nixCache: { publicRead: true } });
});
afterAll(async () => {
  vi.restoreAllMocks();
  await server?.close();
  coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function signedGet(target: string): Promise<RawResponse> {
  return rawRequest(server.url, { method: 'GET', path: target, headers: signedHeaders(admin, 'GET', target, undefined, Date.now()) });
}

/** Asserts a JSON error answer: status, content type, and a code the enum has with that status. */
function expectJsonError(response: RawResponse, status: number, code: string): void {
  expect({ status: response.status, code: response.error?.code }, response.body.toString('utf8').slice(0, 300)).toEqual({ status, code });
  expect(response.headers['content-type']).toMatch(/^application\/json/);
  expect(isSentErrorCode(ErrorCodeSchema.parse(code))).toBe(true);
}

/** Runs `send` with `fault` in place, expecting the failure to be logged once as an internal error with its stack. */
async function withFault<T>(fault: () => void, send: () => Promise<T>, marker: string): Promise<T> {
  const before = log.length;
  fault();
  try {
    return await send();
  } finally {
    vi.restoreAllMocks();
    const logged = log.slice(before).filter((line) => line.includes(marker));
    expect(logged, log.slice(before).join('\n')).toHaveLength(1);
    expect(logged[0]).toMatch(/internal error in .*\n\s+at /);
  }
}

describe('an unexpected error in a route', () => {
  it('answers 500 INTERNAL as JSON on the API, the message generic, the error in the log', async () => {
    const response = await withFault(
      () => vi.spyOn(coordinator, 'checkpoint').mockImplementation(() => {
        throw new Error('disk on fire (export)');
      }),
      () => signedGet('/v1/audit/export'),
      'disk on fire (export)',
    );
    expectJsonError(response, 500, 'INTERNAL');
    expect(response.error!.message).toBe('internal error (see the coordinator log)');
    expect(response.body.toString('utf8')).not.toMatch(/disk on fire|\bat /);
  });

  it('answers 500 INTERNAL as JSON on the viewer, with its security headers', async () => {
    const response = await withFault(
      () => vi.spyOn(coordinator.state, 'get').mockImplementation(() => {
        throw new Error('state on fire (viewer)');
      }),
      () => signedGet('/viewer/api/info'),
      'state on fire (viewer)',
    );
    expectJsonError(response, 500, 'INTERNAL');
    expect(response.headers['x-content-type-options']).toBe('nosniff');
  });

  it('answers an INTERNAL error frame on the data plane’s HTTP fallback', async () => {
    const client = new DataClient({ identity: admin, httpUrl: server.url, httpOnly: true, retries: 0 });
    const refused = await withFault(
      () => vi.spyOn(coordinator.castore, 'missingBlobs').mockImplementation(() => {
        throw new Error('castore on fire (data)');
      }),
      () => client.call({ op: 'missing', blobs: ['0'.repeat(64)] }).then(() => undefined, (error: unknown) => error),
      'castore on fire (data)',
    );
    await client.close();
    expect(refused).toBeInstanceOf(DataError);
    expect({ code: (refused as DataError).code, message: (refused as DataError).message }).toEqual({ code: 'INTERNAL', message: 'internal error (see the coordinator log)' });
  });

  it('answers 500 INTERNAL as text on the Nix cache', async () => {
    const response = await withFault(
      () => vi.spyOn(coordinator.castore, 'getStorePathByHashPart').mockImplementation(() => {
        throw new Error('castore on fire (nix cache)');
      }),
      () => rawRequest(server.url, { method: 'GET', path: `/nix-cache/${'a'.repeat(32)}.narinfo` }),
      'castore on fire (nix cache)',
    );
    expect(response.status).toBe(500);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    expect(response.body.toString('utf8')).toBe('INTERNAL: internal error (see the coordinator log)\n');
  });
});

describe('refusals keep their codes and shapes', () => {
  it('answers an unknown route with 404 NOT_FOUND as JSON', async () => {
    expectJsonError(await rawRequest(server.url, { method: 'GET', path: '/v2/nothing' }), 404, 'NOT_FOUND');
    expectJsonError(await rawRequest(server.url, { method: 'DELETE', path: '/v1/agents' }), 404, 'NOT_FOUND');
  });

  it('answers the Nix cache’s refusals as `CODE: message` text with the enum’s status', async () => {
    const missing = await rawRequest(server.url, { method: 'GET', path: `/nix-cache/${'a'.repeat(32)}.narinfo` });
    expect({ status: missing.status, type: missing.headers['content-type'] }).toEqual({ status: 404, type: 'text/plain; charset=utf-8' });
    expect(missing.body.toString('utf8')).toMatch(/^NOT_FOUND: .+\n$/);
    const unsigned = await rawRequest(server.url, { method: 'PUT', path: `/nix-cache/${'a'.repeat(32)}.narinfo`, body: 'StorePath: x\n' });
    expect(unsigned.status).toBe(401);
    expect(unsigned.headers['www-authenticate']).toMatch(/^Basic /);
    expect(unsigned.body.toString('utf8')).toMatch(/^UNAUTHENTICATED: .+\n$/);
    const route = await rawRequest(server.url, { method: 'GET', path: '/nix-cache/a/b/c' });
    expect(route.status).toBe(404);
    expect(route.body.toString('utf8')).toMatch(/^NOT_FOUND: no route GET \/nix-cache\/a\/b\/c in the Nix cache\n$/);
  });

  it('refuses through the API client with the code the enum gives, typed', async () => {
    const error = await new CoordinatorHttpClient(server.url, Identity.generate()).call('agents.list').then(
      () => undefined,
      (refusal: unknown) => refusal,
    );
    expect(error).toBeInstanceOf(ApiError);
    expect({ status: (error as ApiError).status, code: (error as ApiError).code }).toEqual({ status: 401, code: 'UNKNOWN_KEY' });
  });
});

describe('a coordinator newer than its clients', () => {
  let future: Server;
  let futureUrl: string;
  const body = { error: { code: 'QUOTA_EXCEEDED', message: 'graph web holds 1000 configs' } };

  beforeAll(async () => {
    future = createServer((request, response) => {
      request.resume();
      if (request.url === '/v1/data') {
        // Error frames travel with HTTP 200: the frame is the answer.
        response.writeHead(200, { 'content-type': 'application/x-ferry-frames' });
        response.end(encodeHeaderFrame(body));
      } else {
        response.writeHead(409, { 'content-type': 'application/json' });
        response.end(JSON.stringify(body));
      }
    });
    await new Promise<void>((resolve) => future.listen(0, '127.0.0.1', resolve));
    futureUrl = `http://127.0.0.1:${(future.address() as { port: number }).port}`;
  });
  afterAll(() => {
    future.closeAllConnections();
    future.close();
  });

  it('reaches the data client as UNKNOWN_CODE, the code kept as sent', async () => {
    const client = new DataClient({ identity: admin, httpUrl: futureUrl, httpOnly: true, retries: 0 });
    const error = await client.call({ op: 'missing' }).then(
      () => undefined,
      (refusal: unknown) => refusal,
    );
    await client.close();
    expect(error).toBeInstanceOf(DataError);
    expect({ code: (error as DataError).code, sentCode: (error as DataError).sentCode, message: (error as DataError).message }).toEqual({
      code: 'UNKNOWN_CODE',
      sentCode: 'QUOTA_EXCEEDED',
      message: 'graph web holds 1000 configs',
    });
  });

  it('is shown by the CLI as sent: `ferry: error [QUOTA_EXCEEDED]: …`, exit code 1', async () => {
    const home = mkdtempSync(path.join(tmpdir(), 'ferry-error-model-cli-'));
    try {
      const keyFile = path.join(home, 'admin.key');
      writeFileSync(keyFile, admin.toKeyFile(), { mode: 0o600 });
      // Not spawnSync: the fake coordinator answers from this process.
      const child = spawn(process.execPath, [ferryBin, 'agents', 'ls', '--url', futureUrl, '--key', keyFile], { env: { ...process.env, FERRY_CONFIG_DIR: home } });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
      expect({ status, stderr }).toEqual({ status: 1, stderr: 'ferry: error [QUOTA_EXCEEDED]: graph web holds 1000 configs\n' });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
