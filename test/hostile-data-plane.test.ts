// Hostile input against the data plane (protocol/data-protocol.ts), on both
// transports of a real coordinator on 127.0.0.1: raw QUIC streams
// (coordinator/quic-server.ts) and the HTTP fallback (POST /v1/data). Frames
// that are not JSON, too long, or cut short; a length prefix claiming 4 GB;
// unknown operations and fields; batches over their bounds; blob ranges that
// are negative, unaligned or beyond the end; uploads whose declared sizes or
// ids lie; wrong roles; QUIC sessions that never authenticated or did so
// with a bad signature; HTTP requests unsigned, stale, replayed or signed
// over another header. Each case asserts the exact error code, that nothing
// was stored, audited or became visible, and (QUIC) that the same session
// still serves the next good request. Last, a coordinator in a child process
// takes 200 oversized and lying requests, and its peak RSS must stay bounded.
// Issue 16, the systematic part of the hostile suite.
import { connectQuicAsync, type QuicClientSession } from '@currentspace/http3';
import { procStatus, resetPeakRss } from '../bench/harness.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blake3, LocalCastore, digestFromBytes, directoryId, encodeDirectory, type Digest, type Entry, type StorePathInfo } from '../castore/index.js';
import { writeToQuicStream, quicStreamChunks } from '../protocol/quic-streams.js';
import {
  COORDINATOR_TLS_NAME,
  FERRY_ALPN,
  MAX_BATCH_BYTES,
  MAX_BATCH_OBJECTS,
  MAX_DELTA_BLOBS,
  MAX_DELTA_GROUPS,
  DELTA_CV_BYTES,
  MAX_QUERY_ITEMS,
  MAX_REGISTER_PATHS,
  MAX_REPLY_HEADER_BYTES,
  MAX_REQUEST_HEADER_BYTES,
  TRANSFER_GROUP_SIZE,
  sessionAuthMessage,
} from '../protocol/data-protocol.js';
import { FrameReader } from '../protocol/framing.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Identity, loadIdentity } from '../protocol/identity.js';
import { signRequest } from '../protocol/request-signing.js';
import { addTreeAsStorePath, enrollAgent, fakeStorePath, pushToCoordinator, signedConfig, startTestCoordinator, type TestCoordinator } from './data-plane-fixture.js';
import { rawRequest, visibleState } from './hostile-http.js';

const MiB = 1024 * 1024;
let test: TestCoordinator;
let work: string;
let source: LocalCastore;
const app = fakeStorePath('hostile-app-1.0');
/** A file of 100,000 bytes (7 transfer groups, the last partial) in `app`. */
const bigBytes = Buffer.alloc(100_000).map((_, index) => (index * 31 + 7) & 0xff);
const bigId = digestFromBytes(blake3(bigBytes));
let appInfo: StorePathInfo;
let configId: string;
let agent: Identity;
let viewer: Identity;
let pendingAgent: Identity;
let revoked: Identity;
const stranger = Identity.generate();

// --- frames --------------------------------------------------------------------

interface Frame {
  /** The header's bytes (what an HTTP request signature covers). */
  header: Buffer;
  /** Replaces the 4-byte length prefix (a lie about the header's length). */
  prefix?: Buffer;
  /** Bytes after the header. */
  body?: Buffer[];
}

const u32 = (n: number): Buffer => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n);
  return out;
};
const json = (value: unknown, body?: Buffer[]): Frame => ({ header: Buffer.from(JSON.stringify(value)), ...(body ? { body } : {}) });
const bytesOf = (frame: Frame): Buffer[] => [frame.prefix ?? u32(frame.header.length), frame.header, ...(frame.body ?? [])];
const hex64 = (): Digest => randomBytes(32).toString('hex') as Digest;
const idOf = (bytes: Uint8Array): Digest => digestFromBytes(blake3(bytes));

/** A reply header (any operation's, checked field by field), or `{ error: { code, message } }`. */
type Reply = Record<string, any>;

/** The first frame of a reply: its JSON header. */
function firstFrame(bytes: Buffer): Reply {
  expect(bytes.length, 'a reply frame').toBeGreaterThanOrEqual(4);
  const length = bytes.readUInt32BE(0);
  return JSON.parse(bytes.subarray(4, 4 + length).toString('utf8')) as Reply;
}

// --- the two transports ----------------------------------------------------------

/** POST /v1/data with exactly these bytes, signed by `as` over the header bytes (or not at all). */
async function httpData(frame: Frame, options: { as?: Identity; at?: number; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers = { 'content-type': 'application/x-ferry-frames', ...(options.as ? signRequest(options.as, 'POST', '/v1/data', frame.header, options.at ?? Date.now()) : {}), ...options.headers };
  const response = await rawRequest(test.http.url, { method: 'POST', path: '/v1/data', headers, body: Buffer.concat(bytesOf(frame)) });
  // Refusals are frames in a 200 answer: the data plane's one error shape on both transports.
  expect(response.status, response.body.toString().slice(0, 200)).toBe(200);
  return firstFrame(response.body);
}

/** A raw QUIC session to the coordinator: frames written exactly as given, one stream per request. */
class RawQuic {
  private constructor(readonly session: QuicClientSession) {}

  /** A session to the test coordinator, authenticated as `identity` if given. */
  static open(identity?: Identity): Promise<RawQuic> {
    return RawQuic.connect(test.quic.address, test.coordinator.tls.certificatePem, identity);
  }

  static async connect(address: string, certificatePem: string, identity?: Identity): Promise<RawQuic> {
    const session = await connectQuicAsync(address, { ca: certificatePem, servername: COORDINATOR_TLS_NAME, alpn: [FERRY_ALPN], runtimeMode: 'portable' });
    session.on('error', () => undefined);
    const raw = new RawQuic(session);
    if (identity) {
      const reply = await raw.auth(identity);
      expect(reply, 'auth').toMatchObject({ keyId: identity.keyId });
    }
    return raw;
  }

  /**
   * Sends the frame's bytes on a new stream and reads the reply's header;
   * then drops the stream. With `end: false` the stream is neither ended nor
   * dropped: it goes on sending what it was given, whatever the reply.
   */
  async send(frame: Frame | Buffer[], options: { end?: boolean } = {}): Promise<Reply> {
    const stream = this.session.openStream();
    stream.on('error', () => undefined);
    // Written while the reply is read: a server that refuses early must not wait for the rest, nor we for it.
    void (async () => {
      for (const chunk of Array.isArray(frame) ? frame : bytesOf(frame)) if (!(await writeToQuicStream(stream, chunk))) return;
      if (options.end !== false) stream.end();
    })().catch(() => undefined);
    const reader = new FrameReader(quicStreamChunks(stream));
    let timer: NodeJS.Timeout | undefined;
    try {
      return (await Promise.race([
        reader.readHeader(MAX_REPLY_HEADER_BYTES),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no reply within 10 s')), 10_000))),
      ])) as Reply;
    } finally {
      clearTimeout(timer);
      if (options.end !== false) stream.destroy();
    }
  }

  async challenge(): Promise<string> {
    return (await this.send(json({ op: 'hello' }))).challenge as string;
  }

  async auth(identity: Identity, options: { challenge?: string; keyId?: string } = {}): Promise<Reply> {
    const challenge = options.challenge ?? (await this.challenge());
    const keyId = options.keyId ?? identity.keyId;
    const signature = Buffer.from(identity.sign(sessionAuthMessage(challenge, keyId))).toString('base64');
    return this.send(json({ op: 'auth', keyId, signature }));
  }

  close(): Promise<void> {
    return this.session.close().catch(() => undefined);
  }
}

type Transport = 'quic' | 'http';
const sessions = new Map<string, RawQuic>();

/** Sends `frame` as `as` over `transport`: over QUIC on a session authenticated once per identity and kept. */
async function send(transport: Transport, as: Identity, frame: Frame): Promise<Reply> {
  if (transport === 'http') return httpData(frame, { as });
  let session = sessions.get(as.keyId);
  if (!session) sessions.set(as.keyId, (session = await RawQuic.open(as)));
  return session.send(frame);
}

/** A request each identity may make, to show a session still serves after a refusal. */
function goodRequest(as: Identity): Frame {
  if (as === agent) return json({ op: 'closure.manifest', configId, system: 'x86_64-linux' });
  if (as === viewer) return json({ op: 'hello' }); // a viewer may do nothing else on the data plane
  return json({ op: 'missing', blobs: [bigId] });
}

const castoreTemp = (): string[] => {
  try {
    return readdirSync(path.join(test.coordinator.castore.dataDir, 'tmp'));
  } catch {
    return [];
  }
};

/**
 * Sends `frame` over `transport` and expects the error `code` (and `message`);
 * then that nothing was stored, audited or became visible, that no temp file
 * was left behind, and (QUIC) that the same session serves a good request.
 */
async function expectRefused(transport: Transport, as: Identity, frame: Frame, code: string, message?: RegExp): Promise<void> {
  const before = visibleState(test.coordinator);
  const temp = castoreTemp();
  const reply = await send(transport, as, frame);
  expect(reply.error?.code, `${transport}: ${JSON.stringify(reply).slice(0, 300)}`).toBe(code);
  if (message) expect(reply.error.message).toMatch(message);
  expect(visibleState(test.coordinator)).toBe(before);
  expect(castoreTemp()).toEqual(temp);
  if (transport === 'quic') {
    const next = await send('quic', as, goodRequest(as));
    expect(next.error, `the session serves the next request: ${JSON.stringify(next).slice(0, 200)}`).toBeUndefined();
  }
}

// --- fixture -----------------------------------------------------------------------

beforeAll(async () => {
  test = await startTestCoordinator();
  work = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-data-'));
  source = LocalCastore.open(path.join(work, 'source'));
  mkdirSync(path.join(work, 'app'));
  writeFileSync(path.join(work, 'app', 'big'), bigBytes);
  writeFileSync(path.join(work, 'app', 'small'), 'small file\n');
  await addTreeAsStorePath(source, path.join(work, 'app'), app);
  appInfo = source.getStorePath(app)!;
  await pushToCoordinator(test, source, [app]);
  configId = (await test.adminClient.call('graphs.submit', { graph: 'hostile', ...signedConfig(test.admin, 'hostile', [], { 'x86_64-linux': app }) })).configId;
  agent = await enrollAgent(test, 'hostile');
  viewer = Identity.generate();
  revoked = Identity.generate();
  await test.adminClient.call('keys.add', { keyId: viewer.keyId, role: 'viewer' });
  await test.adminClient.call('keys.add', { keyId: revoked.keyId, role: 'operator' });
  await test.adminClient.call('keys.revoke', { keyId: revoked.keyId });
  pendingAgent = Identity.generate();
  const { token } = await test.adminClient.call('tokens.create', { uses: 1 });
  await new CoordinatorHttpClient(test.http.url, pendingAgent).call('enroll', { token, name: 'pending', facts: { system: 'x86_64-linux', hostname: 'p' } });
}, 60_000);

afterAll(async () => {
  for (const session of sessions.values()) await session.close();
  source?.close();
  await test?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

// --- the cases ---------------------------------------------------------------------

const TRANSPORTS: Transport[] = ['quic', 'http'];

describe.each(TRANSPORTS)('frames over %s', (transport) => {
  it('refuses headers that are not JSON, too long, or cut short (FRAME_* codes), and values that are no request (INVALID)', async () => {
    const pusher = test.pusher;
    const cases: [string, Frame, string][] = [
      ['not JSON', { header: Buffer.from('{"op": missing}') }, 'FRAME_NOT_JSON'],
      ['invalid UTF-8', { header: Buffer.from([0x7b, 0x22, 0x6f, 0x70, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]) }, 'FRAME_NOT_JSON'],
      ['an empty header', { header: Buffer.alloc(0) }, 'FRAME_NOT_JSON'],
      ['a length prefix claiming 4 GB', { header: Buffer.from('{}'), prefix: u32(0xffffffff) }, 'FRAME_TOO_LARGE'],
      ['a length prefix one over the limit', { header: Buffer.from('{}'), prefix: u32(MAX_REQUEST_HEADER_BYTES + 1) }, 'FRAME_TOO_LARGE'],
      ['a prefix longer than the header sent', { header: Buffer.from('{"op":"missing"}'), prefix: u32(1000) }, 'FRAME_TRUNCATED'],
      ['half a prefix', { header: Buffer.alloc(0), prefix: Buffer.from([0, 0]) }, 'FRAME_TRUNCATED'],
      ['nothing at all', { header: Buffer.alloc(0), prefix: Buffer.alloc(0) }, 'FRAME_TRUNCATED'],
      ['an array', json([]), 'INVALID'],
      ['a number', json(42), 'INVALID'],
      ['null', json(null), 'INVALID'],
      ['no op', json({ blobs: [] }), 'INVALID'],
      ['an unknown op', json({ op: 'castore.delete', ids: [bigId] }), 'INVALID'],
      ['an op that is not a string', json({ op: ['missing'] }), 'INVALID'],
      ['an op in another case', json({ op: 'MISSING' }), 'INVALID'],
      ['an unknown field', json({ op: 'missing', blobs: [], colour: 'blue' }), 'INVALID'],
    ];
    for (const [what, frame, code] of cases) {
      try {
        await expectRefused(transport, pusher, frame, code);
      } catch (error) {
        throw new Error(`${what}: ${(error as Error).message}`);
      }
    }
  });

  it('refuses a header longer than MAX_REQUEST_HEADER_BYTES when its bytes are actually sent (FRAME_TOO_LARGE)', async () => {
    const header = Buffer.alloc(MAX_REQUEST_HEADER_BYTES + 1, 0x20);
    await expectRefused(transport, test.pusher, { header }, 'FRAME_TOO_LARGE', new RegExp(`limit of ${MAX_REQUEST_HEADER_BYTES}`));
  });

  // Operations that take no body (missing, closure.manifest, blob.get, blobs.get, directories.get,
  // upload.storePaths) once never checked that none followed: the bytes stayed queued on the server.
  it('refuses bytes after a request that takes no body (FRAME_TRAILING_BYTES)', async () => {
    for (const request of [{ op: 'missing', blobs: [] }, { op: 'blob.get', id: bigId }, { op: 'blobs.get', ids: [bigId] }]) {
      await expectRefused(transport, test.pusher, { header: Buffer.from(JSON.stringify(request)), body: [Buffer.from('unexpected')] }, 'FRAME_TRAILING_BYTES');
    }
  });

  it('refuses batches over their bounds, and empty ones (INVALID naming the field)', async () => {
    const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => i.toString(16).padStart(64, '0'));
    const cases: [unknown, string][] = [
      [{ op: 'directories.get', ids: ids(MAX_BATCH_OBJECTS + 1) }, 'ids'],
      [{ op: 'directories.get', ids: [] }, 'ids'],
      [{ op: 'blobs.get', ids: ids(MAX_BATCH_OBJECTS + 1) }, 'ids'],
      [{ op: 'missing', blobs: ids(MAX_QUERY_ITEMS + 1) }, 'blobs'],
      [{ op: 'blobs.stream', ids: ids(MAX_QUERY_ITEMS + 1) }, 'ids'],
      [{ op: 'blobs.stream', ids: [] }, 'ids'],
      [{ op: 'missing', directories: ids(MAX_QUERY_ITEMS + 1) }, 'directories'],
      [{ op: 'missing', storePaths: Array.from({ length: MAX_QUERY_ITEMS + 1 }, () => app) }, 'storePaths'],
      [{ op: 'upload.blobs', blobs: ids(MAX_BATCH_OBJECTS + 1).map((id) => ({ id, size: 1 })) }, 'blobs'],
      [{ op: 'upload.blobs', blobs: [] }, 'blobs'],
      [{ op: 'upload.directories', directories: ids(MAX_BATCH_OBJECTS + 1).map((id) => ({ id, size: 1 })) }, 'directories'],
      [{ op: 'upload.directories', directories: [{ id: hex64(), size: 16 * MiB + 1 }] }, 'directories.0.size'],
      [{ op: 'upload.storePaths', roots: Array.from({ length: 1001 }, () => app), storePaths: [], stats: { bytesSent: 0, blobsSent: 0, directoriesSent: 0 } }, 'roots'],
      [{ op: 'upload.storePaths', roots: [app], storePaths: Array.from({ length: MAX_REGISTER_PATHS + 1 }, () => appInfo), stats: { bytesSent: 0, blobsSent: 0, directoriesSent: 0 } }, 'storePaths'],
    ];
    for (const [request, field] of cases) await expectRefused(transport, test.pusher, json(request), 'INVALID', new RegExp(`^${field.replace(/\./g, '\\.')}\\b`));
    // Within the count, over the bytes: two blobs whose sizes add up to more than a batch may carry.
    const half = MAX_BATCH_BYTES / 2 + 1;
    await expectRefused(transport, test.pusher, json({ op: 'upload.blobs', blobs: [{ id: hex64(), size: half }, { id: hex64(), size: half }] }), 'INVALID', /exceeds/);
  });

  // A directory batch's bytes were once unbounded (4096 x 16 MiB, every decoded directory held until
  // the batch ended: 16 x 16 MiB grew a child coordinator's peak RSS by 344 MiB); now refused from
  // the header like upload.blobs.
  it('refuses a directory batch declared larger than MAX_BATCH_BYTES before reading it (INVALID)', async () => {
    const directories = Array.from({ length: MAX_BATCH_BYTES / (16 * MiB) + 1 }, () => ({ id: hex64(), size: 16 * MiB }));
    await expectRefused(transport, test.pusher, json({ op: 'upload.directories', directories }), 'INVALID', /exceeds/);
  });

  it('refuses blob ranges that are negative, unaligned, fractional or beyond the end (INVALID), and unknown blobs (NOT_FOUND)', async () => {
    const beyond = Math.ceil(bigBytes.length / TRANSFER_GROUP_SIZE + 1) * TRANSFER_GROUP_SIZE;
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ offset: -TRANSFER_GROUP_SIZE }, 'INVALID', /^offset\b/],
      [{ offset: 100 }, 'INVALID', /^offset\b/],
      [{ offset: TRANSFER_GROUP_SIZE + 0.5 }, 'INVALID', /^offset\b/],
      [{ offset: '16384' }, 'INVALID', /^offset\b/],
      [{ offset: 2 ** 60 }, 'INVALID', /^offset\b|beyond the end/],
      [{ offset: beyond }, 'INVALID', /beyond the end/],
      [{ length: -1 }, 'INVALID', /^length\b/],
      [{ length: 1e300 }, 'INVALID', /^length\b/],
      [{ outboard: 'yes' }, 'INVALID', /^outboard\b/],
      [{ id: bigId.toUpperCase() }, 'INVALID', /^id\b/],
      [{ id: '../../../../etc/passwd' }, 'INVALID', /^id\b/],
      [{ id: hex64() }, 'NOT_FOUND', /not in the store/],
    ];
    for (const [fields, code, message] of cases) await expectRefused(transport, test.pusher, json({ op: 'blob.get', id: bigId, ...fields }), code, message);
    // The last group, and the end itself, are fine: the boundaries are where they should be.
    const lastGroup = Math.floor(bigBytes.length / TRANSFER_GROUP_SIZE) * TRANSFER_GROUP_SIZE;
    expect(await send(transport, test.pusher, json({ op: 'blob.get', id: bigId, offset: lastGroup, outboard: false }))).toMatchObject({ offset: lastGroup, length: bigBytes.length - lastGroup });
  });

  // blobs.delta (castore/transfer/group-delta.ts): the body is the receiver's basis chaining values,
  // one per group it claims; what it claims only chooses groups to leave out, never what it may read.
  it('refuses blobs.delta requests whose basis does not fit the blob or the body (INVALID / FRAME_TRUNCATED / FRAME_TRAILING_BYTES), one-group and unknown blobs (INVALID / NOT_FOUND), and over-bound batches', async () => {
    const groups = Math.ceil(bigBytes.length / TRANSFER_GROUP_SIZE);
    const cvs = (n: number): Buffer[] => [randomBytes(n * DELTA_CV_BYTES)];
    const small = idOf(Buffer.from('small file\n'));
    const cases: [Frame, string, RegExp][] = [
      [json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: groups + 1 }] }, cvs(groups + 1)), 'INVALID', /basis groups for blob .* which has 7/],
      [json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 3 }] }, cvs(2)), 'FRAME_TRUNCATED', /basis chaining values/],
      [json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 2 }] }, cvs(3)), 'FRAME_TRAILING_BYTES', /./],
      [json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 0 }] }), 'INVALID', /^blobs\.0\.basisGroups\b/],
      [json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 1.5 }] }, cvs(1)), 'INVALID', /^blobs\.0\.basisGroups\b/],
      [json({ op: 'blobs.delta', blobs: [] }), 'INVALID', /^blobs\b/],
      [json({ op: 'blobs.delta', blobs: Array.from({ length: MAX_DELTA_BLOBS + 1 }, () => ({ id: bigId, basisGroups: 1 })) }), 'INVALID', /^blobs\b/],
      [json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: MAX_DELTA_GROUPS }, { id: bigId, basisGroups: 1 }] }), 'INVALID', /^blobs\b.*basis groups per request/],
      [json({ op: 'blobs.delta', blobs: [{ id: small, basisGroups: 1 }] }, cvs(1)), 'INVALID', /one group/],
      [json({ op: 'blobs.delta', blobs: [{ id: hex64(), basisGroups: 1 }] }, cvs(1)), 'NOT_FOUND', /not in the store/],
    ];
    for (const [frame, code, message] of cases) await expectRefused(transport, test.pusher, frame, code, message);
    // Basis values that match nothing: no delta, the receiver fetches the blob whole.
    expect(await send(transport, test.pusher, json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 2 }] }, cvs(2)))).toMatchObject({ blobs: [{ id: bigId, size: bigBytes.length, runs: null }] });
    // An agent reads deltas of its own closure only, whatever basis it claims.
    await expectRefused(transport, agent, json({ op: 'blobs.delta', blobs: [{ id: idOf(Buffer.from('not in any closure')), basisGroups: 1 }] }, cvs(1)), 'FORBIDDEN');
    expect((await send(transport, agent, json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 1 }] }, cvs(1)))).blobs[0].runs).toBeNull();
  });

  it('refuses blob uploads whose sizes or ids lie, storing nothing (FRAME_TRUNCATED / FRAME_TRAILING_BYTES / BLOB_CORRUPT)', async () => {
    const bytes = randomBytes(5000);
    const id = idOf(bytes);
    const large = randomBytes(2 * MiB + 123);
    const largeId = idOf(large);
    const cases: [string, Frame, string][] = [
      ['a body shorter than declared', json({ op: 'upload.blobs', blobs: [{ id, size: bytes.length + 10 }] }, [bytes]), 'FRAME_TRUNCATED'],
      ['a body longer than declared', json({ op: 'upload.blobs', blobs: [{ id, size: bytes.length }] }, [bytes, Buffer.from('x')]), 'FRAME_TRAILING_BYTES'],
      ['bytes that hash to another id', json({ op: 'upload.blobs', blobs: [{ id: hex64(), size: bytes.length }] }, [bytes]), 'BLOB_CORRUPT'],
      ['a good blob, then a lying one', json({ op: 'upload.blobs', blobs: [{ id, size: bytes.length }, { id: hex64(), size: 3 }] }, [bytes, Buffer.from('abc')]), 'BLOB_CORRUPT'],
      ['a large blob cut short', json({ op: 'upload.blobs', blobs: [{ id: largeId, size: large.length }] }, [large.subarray(0, MiB)]), 'FRAME_TRUNCATED'],
      ['a large blob with a byte flipped', json({ op: 'upload.blobs', blobs: [{ id: largeId, size: large.length }] }, [Buffer.concat([large.subarray(0, MiB), Buffer.from([large[MiB]! ^ 1]), large.subarray(MiB + 1)])]), 'BLOB_CORRUPT'],
      ['a large blob declared 1 TB, cut short', json({ op: 'upload.blobs', blobs: [{ id: largeId, size: 2 ** 40 }] }, [large]), 'FRAME_TRUNCATED'],
      ['a negative size', json({ op: 'upload.blobs', blobs: [{ id, size: -1 }] }, [bytes]), 'INVALID'],
      ['a size beyond 2^53', json({ op: 'upload.blobs', blobs: [{ id, size: 2 ** 64 }] }, [bytes]), 'INVALID'],
    ];
    for (const [what, frame, code] of cases) {
      try {
        await expectRefused(transport, test.pusher, frame, code);
      } catch (error) {
        throw new Error(`${what}: ${(error as Error).message}`);
      }
      expect(test.coordinator.castore.hasBlob(id), what).toBe(false);
      expect(test.coordinator.castore.hasBlob(largeId), what).toBe(false);
    }
  });

  it('refuses directory uploads that lie about their size, id, encoding or children (FRAME_* / BLOB_CORRUPT / DIRECTORY_NOT_CANONICAL / NOT_FOUND)', async () => {
    const smallId = idOf(Buffer.from('small file\n'));
    const entries = (name: string): Entry[] => [{ type: 'symlink', name, target: '/nix/store/somewhere' }];
    const encoding = (name: string): Buffer => Buffer.from(encodeDirectory(entries(name)));
    const a = encoding(`a-${transport}`);
    const garbage = Buffer.from('not a directory encoding');
    const missingChild = Buffer.from(encodeDirectory([{ type: 'file', name: 'f', digest: hex64(), size: 5, executable: false }]));
    const wrongSize = Buffer.from(encodeDirectory([{ type: 'file', name: 'f', digest: smallId, size: 5, executable: false }]));
    const missingSubdirectory = Buffer.from(encodeDirectory([{ type: 'directory', name: 'd', digest: hex64(), size: 1 }]));
    const upload = (parts: [id: string, size: number][], body: Buffer[]): Frame => json({ op: 'upload.directories', directories: parts.map(([id, size]) => ({ id, size })) }, body);
    const cases: [string, Frame, string][] = [
      ['a body shorter than declared', upload([[directoryId(a), a.length + 1]], [a]), 'FRAME_TRUNCATED'],
      ['a body longer than declared', upload([[directoryId(a), a.length]], [a, Buffer.from('x')]), 'FRAME_TRAILING_BYTES'],
      ['bytes that hash to another id', upload([[hex64(), a.length]], [a]), 'BLOB_CORRUPT'],
      ['bytes that are no directory', upload([[directoryId(garbage), garbage.length]], [garbage]), 'DIRECTORY_NOT_CANONICAL'],
      ['a file that was never uploaded', upload([[directoryId(missingChild), missingChild.length]], [missingChild]), 'NOT_FOUND'],
      ['a file whose size lies', upload([[directoryId(wrongSize), wrongSize.length]], [wrongSize]), 'BLOB_CORRUPT'],
      ['a subdirectory that was never uploaded', upload([[directoryId(missingSubdirectory), missingSubdirectory.length]], [missingSubdirectory]), 'NOT_FOUND'],
      ['a good directory, then a lying one', upload([[directoryId(a), a.length], [hex64(), a.length]], [a, a]), 'BLOB_CORRUPT'],
    ];
    for (const [what, frame, code] of cases) {
      try {
        await expectRefused(transport, test.pusher, frame, code);
      } catch (error) {
        throw new Error(`${what}: ${(error as Error).message}`);
      }
      expect(test.coordinator.castore.hasDirectory(directoryId(a)), what).toBe(false);
    }
  });

  it('refuses store-path registrations that lie about their objects, hashes or references (NOT_FOUND / BLOB_CORRUPT / MISSING_STORE_PATH / INVALID)', async () => {
    const stats = { bytesSent: 0, blobsSent: 0, directoriesSent: 0 };
    const liar = fakeStorePath(`liar-${transport}`);
    const as = (change: Partial<StorePathInfo>): StorePathInfo => ({ ...appInfo, storePath: liar, ...change });
    const register = (infos: StorePathInfo[], roots = [liar]): Frame => json({ op: 'upload.storePaths', roots, storePaths: infos, stats });
    const cases: [string, Frame, string][] = [
      ['a root that is neither registered nor pushed', register([], [liar]), 'NOT_FOUND'],
      ['a root directory that was never uploaded', register([as({ root: { type: 'directory', digest: hex64(), size: 2 } })]), 'NOT_FOUND'],
      ['a file root whose blob was never uploaded', register([as({ root: { type: 'file', digest: hex64(), size: 3, executable: false } })]), 'NOT_FOUND'],
      ['a NAR size that lies', register([as({ narSize: appInfo.narSize + 8 })]), 'BLOB_CORRUPT'],
      ['a NAR hash that lies', register([as({ narHash: `sha256:${'0'.repeat(52)}` })]), 'BLOB_CORRUPT'],
      ['a reference to a path nobody pushed', register([as({ references: [fakeStorePath('nobody-pushed-this')] })]), 'MISSING_STORE_PATH'],
      ['the same path twice', register([as({}), as({})]), 'INVALID'],
      ['stats that are negative', json({ op: 'upload.storePaths', roots: [liar], storePaths: [as({})], stats: { ...stats, bytesSent: -1 } }), 'INVALID'],
    ];
    for (const [what, frame, code] of cases) {
      try {
        await expectRefused(transport, test.pusher, frame, code);
      } catch (error) {
        throw new Error(`${what}: ${(error as Error).message}`);
      }
      expect(test.coordinator.castore.getStorePath(liar), what).toBeUndefined();
    }
  });

  it('refuses operations to roles below them: agents upload nothing, viewers read nothing (FORBIDDEN), enrolling agents nothing (NOT_APPROVED)', async () => {
    const bytes = Buffer.from('x');
    const writes: Frame[] = [
      json({ op: 'missing', blobs: [] }),
      json({ op: 'upload.blobs', blobs: [{ id: idOf(bytes), size: 1 }] }, [bytes]),
      json({ op: 'upload.directories', directories: [{ id: hex64(), size: 1 }] }, [bytes]),
      json({ op: 'upload.storePaths', roots: [app], storePaths: [], stats: { bytesSent: 0, blobsSent: 0, directoriesSent: 0 } }),
    ];
    const reads: Frame[] = [
      json({ op: 'closure.manifest', configId, system: 'x86_64-linux' }),
      json({ op: 'blob.get', id: bigId }),
      json({ op: 'blobs.get', ids: [bigId] }),
      json({ op: 'blobs.stream', ids: [bigId] }),
      json({ op: 'blobs.delta', blobs: [{ id: bigId, basisGroups: 1 }] }, [randomBytes(DELTA_CV_BYTES)]),
      json({ op: 'directories.get', ids: [appInfo.root.type === 'directory' ? appInfo.root.digest : ''] }),
    ];
    for (const frame of writes) await expectRefused(transport, agent, frame, 'FORBIDDEN');
    for (const frame of [...reads, ...writes]) await expectRefused(transport, viewer, frame, 'FORBIDDEN');
    expect(test.coordinator.castore.hasBlob(idOf(bytes))).toBe(false);
    // Over QUIC these keys are refused at `auth` already; over HTTP, on every request.
    if (transport === 'http') {
      for (const frame of [...reads, ...writes]) {
        expect((await httpData(frame, { as: pendingAgent })).error.code).toBe('NOT_APPROVED');
        expect((await httpData(frame, { as: revoked })).error.code).toBe('REVOKED');
        expect((await httpData(frame, { as: stranger })).error.code).toBe('UNKNOWN_KEY');
      }
    }
  });
});

describe('the HTTP fallback alone', () => {
  const missing = json({ op: 'missing', blobs: [bigId] });

  it('refuses hello and auth: HTTP requests are signed one by one (INVALID)', async () => {
    for (const as of [test.pusher, agent, stranger]) {
      expect((await httpData(json({ op: 'hello' }), { as })).error).toMatchObject({ code: 'INVALID', message: expect.stringMatching(/QUIC sessions/) });
      const auth = json({ op: 'auth', keyId: as.keyId, signature: Buffer.from(as.sign(sessionAuthMessage('0'.repeat(64), as.keyId))).toString('base64') });
      expect((await httpData(auth, { as })).error).toMatchObject({ code: 'INVALID', message: expect.stringMatching(/QUIC sessions/) });
    }
  });

  it('refuses requests unsigned, stale, replayed, or signed over another header (401 codes in the frame)', async () => {
    const before = visibleState(test.coordinator);
    expect((await httpData(missing)).error.code).toBe('UNAUTHENTICATED');
    expect((await httpData(missing, { as: test.pusher, at: Date.now() - 10 * 60_000 })).error.code).toBe('STALE_REQUEST');
    expect((await httpData(missing, { as: test.pusher, at: Date.now() + 10 * 60_000 })).error.code).toBe('STALE_REQUEST');
    // Signed over one header, sent with another: the signature covers the header's exact bytes.
    const signedFor = signRequest(test.pusher, 'POST', '/v1/data', Buffer.from('{"op":"missing"}'));
    expect((await httpData(missing, { headers: signedFor })).error.code).toBe('UNAUTHENTICATED');
    // Signed for another path.
    expect((await httpData(missing, { headers: signRequest(test.pusher, 'POST', '/v1/info', missing.header) })).error.code).toBe('UNAUTHENTICATED');
    // Replayed: the first answers, the same bytes again are refused.
    const headers = signRequest(test.pusher, 'POST', '/v1/data', missing.header);
    expect((await httpData(missing, { headers })).error).toBeUndefined();
    expect((await httpData(missing, { headers })).error.code).toBe('REPLAYED_NONCE');
    expect(visibleState(test.coordinator)).toBe(before);
  });

  it('refuses a body that never ends after a refused header without reading it (answers at once)', async () => {
    // A header refused for its size, then 64 MiB more: the answer must come before the body is read.
    const response = await rawRequest(test.http.url, { method: 'POST', path: '/v1/data', chunked: 64 * MiB, headers: {} });
    expect(response.status).toBe(200);
    // 'aaaa' as a length prefix is 0x61616161 bytes: far over the limit.
    expect(firstFrame(response.body).error.code).toBe('FRAME_TOO_LARGE');
    expect(response.sent).toBeLessThan(16 * MiB);
  });
});

describe('QUIC sessions', () => {
  const ops = (): Frame[] => [
    json({ op: 'missing', blobs: [] }),
    json({ op: 'closure.manifest', configId, system: 'x86_64-linux' }),
    json({ op: 'blob.get', id: bigId }),
    json({ op: 'upload.blobs', blobs: [{ id: bigId, size: 1 }] }, [Buffer.from('x')]),
  ];

  it('refuses every operation before auth, and after a failed auth (UNAUTHENTICATED)', async () => {
    const session = await RawQuic.open();
    try {
      const before = visibleState(test.coordinator);
      for (const frame of ops()) expect((await session.send(frame)).error?.code).toBe('UNAUTHENTICATED');
      const challenge = await session.challenge();
      const other = await RawQuic.open();
      const otherChallenge = await other.challenge();
      await other.close();
      const attempts: [string, Promise<Reply>][] = [
        ['a signature of random bytes', session.send(json({ op: 'auth', keyId: test.admin.keyId, signature: randomBytes(64).toString('base64') }))],
        ['the admin’s key id, signed by someone else', session.auth(stranger, { challenge, keyId: test.admin.keyId })],
        ['another session’s challenge', session.auth(test.pusher, { challenge: otherChallenge })],
        ['a challenge of its own making', session.auth(test.pusher, { challenge: '0'.repeat(64) })],
        ['the challenge, signed for another key id', session.send(json({ op: 'auth', keyId: test.pusher.keyId, signature: Buffer.from(test.pusher.sign(sessionAuthMessage(challenge, test.admin.keyId))).toString('base64') }))],
      ];
      for (const [what, attempt] of attempts) expect((await attempt).error?.code, what).toBe('UNAUTHENTICATED');
      expect((await session.auth(stranger)).error?.code).toBe('UNKNOWN_KEY');
      expect((await session.auth(revoked)).error?.code).toBe('REVOKED');
      expect((await session.auth(pendingAgent)).error?.code).toBe('NOT_APPROVED');
      expect((await session.send(json({ op: 'auth', keyId: 'admin', signature: 'x' }))).error?.code).toBe('INVALID');
      for (const frame of ops()) expect((await session.send(frame)).error?.code).toBe('UNAUTHENTICATED');
      expect(visibleState(test.coordinator)).toBe(before);
      // The session itself is fine: a good auth now works.
      expect(await session.auth(test.pusher)).toMatchObject({ keyId: test.pusher.keyId, role: 'pusher' });
      expect((await session.send(json({ op: 'missing', blobs: [bigId] }))).blobs).toEqual([]);
    } finally {
      await session.close();
    }
  });

  it('keeps who a session is when a later auth fails: an agent cannot become the admin by trying', async () => {
    const session = await RawQuic.open(agent);
    try {
      expect((await session.auth(stranger, { keyId: test.admin.keyId })).error?.code).toBe('UNAUTHENTICATED');
      expect((await session.send(json({ op: 'missing', blobs: [] }))).error?.code).toBe('FORBIDDEN');
      expect((await session.send(json({ op: 'closure.manifest', configId, system: 'x86_64-linux' }))).target).toBe(app);
    } finally {
      await session.close();
    }
  });

  it('refuses the next request of a session whose key was revoked since its auth (REVOKED)', async () => {
    const operator = Identity.generate();
    await test.adminClient.call('keys.add', { keyId: operator.keyId, role: 'operator' });
    const session = await RawQuic.open(operator);
    try {
      expect((await session.send(json({ op: 'missing', blobs: [bigId] }))).blobs).toEqual([]);
      await test.adminClient.call('keys.revoke', { keyId: operator.keyId });
      const before = visibleState(test.coordinator);
      for (const frame of ops()) expect((await session.send(frame)).error?.code).toBe('REVOKED');
      expect((await session.auth(operator)).error?.code).toBe('REVOKED');
      expect(visibleState(test.coordinator)).toBe(before);
    } finally {
      await session.close();
    }
  });

  it('refuses a stream that sends half a header and ends, and keeps the session', async () => {
    const session = await RawQuic.open(test.pusher);
    try {
      expect((await session.send([u32(64), Buffer.from('{"op":')])).error?.code).toBe('FRAME_TRUNCATED');
      expect((await session.send([Buffer.from([0])])).error?.code).toBe('FRAME_TRUNCATED');
      expect((await session.send(json({ op: 'missing', blobs: [bigId] }))).blobs).toEqual([]);
    } finally {
      await session.close();
    }
  });
});

describe('the coordinator log', () => {
  it('recorded no internal error for any of the refusals above', () => {
    expect(test.log.filter((line) => /internal error/.test(line))).toEqual([]);
    expect(test.log.some((line) => /refused QUIC .*UNAUTHENTICATED/.test(line))).toBe(true);
  });
});

// --- memory, in a child process --------------------------------------------------

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');


/**
 * How much the coordinator's peak RSS may grow over the 200 requests. They
 * go one at a time; the most any of them may make the coordinator hold is
 * one 8 MiB header (MAX_REQUEST_HEADER_BYTES, read whole, then its decoded
 * text) or a 2 MiB blob, plus a QUIC stream's 4 MiB read queue. Beyond
 * that, only garbage V8 has not collected yet: measured growth 60-95 MiB
 * here. The ~700 MiB the requests send are far above the bound: a defect
 * that keeps any real part of what a refused request sent exceeds it (the
 * one fixed in quic-server.ts, a refused stream's further bytes kept
 * queued, grew it by 289 MiB in this test).
 */
const MEMORY_BOUND = 160 * MiB;

describe('memory under 200 oversized and lying requests, in a child process', () => {
  let dir: string;
  let child: ChildProcess | undefined;
  let childLog = '';
  afterAll(() => {
    child?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the coordinator’s peak RSS within a bound while refusing every one of them', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostile-memory-'));
    // `ferry coordinator serve` from the sources (bench/fixtures/ferry-cli.ts: what bin/ferry runs once built), so the child runs the code under test even when build/ is stale.
    const entry = path.join(repo, 'bench', 'fixtures', 'ferry-cli.ts');
    const env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'config'), FERRY_DATA_DIR: path.join(dir, 'data') };
    const ferryArgs = (...args: string[]): string[] => ['--import', 'tsx', entry, ...args];
    const init = spawnSync(process.execPath, ferryArgs('coordinator', 'init', '--name', 'hostile'), { env });
    expect(init.status, init.stderr.toString()).toBe(0);
    child = spawn(process.execPath, ferryArgs('coordinator', 'serve', '--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0'), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr!.on('data', (chunk: Buffer) => (childLog += chunk.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child!.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /HTTP API:\s+(http:\/\/\S+)/.exec(out);
        if (match) resolve(match[1]!);
      });
      child!.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}${childLog}`)));
    });
    const admin = loadIdentity(path.join(dir, 'config', 'keys', 'hostile-admin.key'));
    const pusher = Identity.generate();
    await new CoordinatorHttpClient(url, admin).call('keys.add', { keyId: pusher.keyId, role: 'pusher' });
    const info = await new CoordinatorHttpClient(url).call('info');
    const pid = child.pid!;

    const certificate = await (await fetch(`${url}/v1/tls-certificate`)).text();
    const quic = await RawQuic.connect(`127.0.0.1:${info.quicPort}`, certificate, pusher);
    const quicRequest = (parts: Buffer[], options: { end?: boolean } = {}): Promise<Reply> => quic.send(parts, options);
    const httpFrames = async (frame: Frame, signed = true): Promise<Reply> => {
      const headers = signed ? signRequest(pusher, 'POST', '/v1/data', frame.header) : {};
      const response = await rawRequest(url, { method: 'POST', path: '/v1/data', headers, body: Buffer.concat(bytesOf(frame)) });
      return firstFrame(response.body);
    };

    // The hostile requests: each lies about a size or sends more than any bound allows.
    const junk = Buffer.alloc(16 * MiB, 0x7a);
    const kinds: [string, string, () => Promise<string | undefined>][] = [
      ['API body declared as 1 GiB', 'BODY_TOO_LARGE', async () => (await rawRequest(url, { method: 'POST', path: '/v1/tokens', declaredLength: 2 ** 30, body: '{' })).error?.code],
      ['API body chunked, 2 MiB', 'BODY_TOO_LARGE', async () => (await rawRequest(url, { method: 'POST', path: '/v1/tokens', chunked: 2 * MiB })).error?.code],
      ['HTTP: 4 GB length prefix', 'FRAME_TOO_LARGE', async () => (await httpFrames({ header: Buffer.from('{}'), prefix: u32(0xffffffff) }, false)).error?.code],
      ['HTTP: 8 MiB header of junk', 'FRAME_NOT_JSON', async () => (await httpFrames({ header: junk.subarray(0, MAX_REQUEST_HEADER_BYTES) }, false)).error?.code],
      ['HTTP: blob declared 1 TB, 2 MiB sent', 'FRAME_TRUNCATED', async () => (await httpFrames(json({ op: 'upload.blobs', blobs: [{ id: hex64(), size: 2 ** 40 }] }, [junk.subarray(0, 2 * MiB)]))).error?.code],
      ['HTTP: 16 MiB directory, 2 MiB sent', 'FRAME_TRUNCATED', async () => (await httpFrames(json({ op: 'upload.directories', directories: [{ id: hex64(), size: 16 * MiB }] }, [junk.subarray(0, 2 * MiB)]))).error?.code],
      ['HTTP: a 2 MiB blob that is not its id', 'BLOB_CORRUPT', async () => (await httpFrames(json({ op: 'upload.blobs', blobs: [{ id: hex64(), size: 2 * MiB }] }, [junk.subarray(0, 2 * MiB)]))).error?.code],
      ['QUIC: 4 GB length prefix', 'FRAME_TOO_LARGE', async () => (await quicRequest([u32(0xffffffff), Buffer.from('{}')])).error?.code],
      ['QUIC: 8 MiB header of junk', 'FRAME_NOT_JSON', async () => (await quicRequest([u32(MAX_REQUEST_HEADER_BYTES), junk.subarray(0, MAX_REQUEST_HEADER_BYTES)])).error?.code],
      ['QUIC: blob declared 1 TB, 2 MiB sent', 'FRAME_TRUNCATED', async () => (await quicRequest(bytesOf(json({ op: 'upload.blobs', blobs: [{ id: hex64(), size: 2 ** 40 }] }, [junk.subarray(0, 2 * MiB)])))).error?.code],
      ['QUIC: 16 MiB directory, 2 MiB sent', 'FRAME_TRUNCATED', async () => (await quicRequest(bytesOf(json({ op: 'upload.directories', directories: [{ id: hex64(), size: 16 * MiB }] }, [junk.subarray(0, 2 * MiB)])))).error?.code],
      ['QUIC: a 2 MiB blob that is not its id', 'BLOB_CORRUPT', async () => (await quicRequest(bytesOf(json({ op: 'upload.blobs', blobs: [{ id: hex64(), size: 2 * MiB }] }, [junk.subarray(0, 2 * MiB)])))).error?.code],
      // Refused at its prefix, then 16 MiB more that nobody asked for, the stream never ended:
      // before the fix in quic-server.ts (discardRest), each one stayed queued in the coordinator.
      ['QUIC: a refused stream that keeps sending', 'FRAME_TOO_LARGE', async () => (await quicRequest([u32(0xffffffff), junk], { end: false })).error?.code],
    ];
    // Warm up (every code path once: lazily loaded modules, JIT), then measure from here.
    for (const [name, code, run] of kinds) expect(await run().catch((error: Error) => `${name}: ${error.message}`), `${name}\n${childLog}`).toBe(code);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const reset = resetPeakRss(pid);
    const start = reset ? procStatus(pid, 'VmRSS') : procStatus(pid, 'VmHWM');
    const started = Date.now();
    const refusals: string[] = [];
    for (let index = 0; index < 200; index++) {
      const [name, , run] = kinds[index % kinds.length]!;
      refusals.push(`${name}: ${await run()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const peak = procStatus(pid, 'VmHWM');
    await quic.close();
    expect(refusals).toEqual(Array.from({ length: 200 }, (_, index) => `${kinds[index % kinds.length]![0]}: ${kinds[index % kinds.length]![1]}`));
    expect(peak - start, `peak RSS ${(start / MiB).toFixed(0)} → ${(peak / MiB).toFixed(0)} MiB over 200 requests in ${Date.now() - started} ms`).toBeLessThan(MEMORY_BOUND);
    // Nothing of it was stored or audited: the log's head is where the setup left it.
    expect((await new CoordinatorHttpClient(url).call('info')).lastSeq).toBe(info.lastSeq);
    expect(childLog).not.toMatch(/internal error/);
  }, 120_000);
});
