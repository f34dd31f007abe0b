// The API client against a hostile server (a real HTTP server on
// 127.0.0.1 standing in for a compromised coordinator or something on the
// path of plain HTTP): a gzip bomb and an endless reply are refused before
// they are read into memory; an error code this client does not know (a
// newer coordinator's) still reaches the caller.
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

beforeAll(async () => {
  server = createServer((request, response) => {
    acceptEncoding = request.headers['accept-encoding'];
    if (request.url?.startsWith('/bomb')) {
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
