/**
 * The relay process (`ferry relay run`): serves the data-plane operations
 * an agent fetches with (closure.manifest, directories.get, blob.get,
 * blobs.get) over QUIC (ALPN ferry-relay/1, UDP on the HTTPS port's
 * number) and over HTTPS (HTTP/2, HTTP/1.1) at `POST /v1/data`, the same
 * frames as the coordinator's data plane, with its own self-signed
 * certificate, which agents pin by the fingerprint the coordinator gives
 * them (for QUIC they fetch it from `GET /v1/quic` over that pinned HTTPS).
 * Both transports hand each request to one handler (respond): a QUIC
 * stream starts with a frame of the headers the HTTPS request carries, so
 * the signature, grant, nonce and access checks are the same code.
 *
 * Each request must be signed by an agent, or a relay downstream of this
 * one (protocol/request-signing.ts: the key id is its public key, nothing
 * else is needed to check it) and carry a coordinator-signed grant naming
 * that key (protocol/relays.ts; a downstream relay's come with its
 * prefetch answer, fetch-sources.ts), checked alike for both;
 * the relay then serves only the granted config's closure, as the
 * coordinator's signed manifest names it. A `blobs.stream` is served only
 * as the relay's own upstream copy received it (stream-recordings.ts). It
 * refuses what it does not serve (any other stream, blobs.templates,
 * blobs.delta: INVALID, which makes an agent fetch in batches, without
 * templates, whole; uploads and queries: FORBIDDEN), so an agent never
 * depends on it for more than time.
 */
import { createQuicServer, type QuicServerSession, type QuicStream } from '@currentspace/http3';
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { CastoreError, LocalCastore, type Digest } from '../castore/index.js';
import { openDataClient } from '../protocol/connect.js';
import { DataRequestSchema, RELAY_ALPN, MAX_BATCH_BYTES, MAX_BATCHED_BLOB_BYTES, MAX_REQUEST_HEADER_BYTES, type DataResponseInput, type ParsedDataRequest } from '../protocol/data-protocol.js';
import type { DataClient } from '../protocol/data-client.js';
import { FerryError, isSentErrorCode } from '../protocol/errors.js';
import { encodeHeaderFrame, FrameReader, parseHeaderJson } from '../protocol/framing.js';
import { loadIdentity, type Identity } from '../protocol/identity.js';
import { MAX_REQUEST_SKEW_MS, requestNonce, verifyRequestSignature } from '../protocol/request-signing.js';
import {
  decodeRelayGrant,
  MAX_RELAY_HEADERS_FRAME_BYTES,
  RELAY_GRANT_HEADER,
  RELAY_QUIC_INFO_PATH,
  relayGrantProblem,
  RelayRequestHeadersSchema,
  type RelayGrant,
  type RelayQuicInfo,
  type RelayStatus,
} from '../protocol/relays.js';
import { MAX_STREAMS_PER_CONNECTION, quicStreamChunks, writeToQuicStream } from '../protocol/quic-streams.js';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { PARTIAL_READ_MAX_BYTES, RelayCache, type BlobSource } from './relay-cache.js';
import { RelayPrefetcher } from './relay-prefetch.js';
import { FetchSources } from './fetch-sources.js';
import { RelayMetrics } from './relay-metrics.js';
import { startMetricsServer, type RunningMetricsServer } from '../protocol/metrics-server.js';
import { readRelayState, relayCertificate, relayPaths, writeFileAtomic, type RelayState } from './relay-state.js';

/** A request body larger than this is refused unread (a header frame of MAX_REQUEST_HEADER_BYTES, and a delta's chaining values). */
const MAX_RELAY_REQUEST_BYTES = MAX_REQUEST_HEADER_BYTES + 4 + 4 * 1024 * 1024;
/** Nonces remembered (each for the signature skew window): a replayed request is refused. */
const MAX_NONCES = 200_000;
/** How often the status file is rewritten while requests come. */
const STATUS_INTERVAL_MS = 500;

/** A QUIC session with no packets for this long is closed (clients ping every 10 s). */
const QUIC_IDLE_TIMEOUT_MS = 30_000;

/** A request's header, as HTTPS carried it or a QUIC stream's headers frame did. */
type HeaderOf = (name: string) => string | undefined;

/** One request as either transport read it: its headers, and its body (the request frame). */
interface ReceivedRequest {
  header: HeaderOf;
  body: Buffer;
}

type Transport = 'https' | 'quic';

interface Reply {
  header: DataResponseInput<'closure.manifest' | 'directories.get' | 'blob.get' | 'blobs.get' | 'blobs.stream'>;
  body?: AsyncIterable<Uint8Array>;
}

export interface RelayServerOptions {
  /** Where to listen; default: relay.json's `listen`. */
  host?: string;
  port?: number;
  log?: (line: string) => void;
  /**
   * Test only (FERRY_RELAY_TEST_FAULT=flip-blob-bytes): flip one byte of
   * every blob served, to show agents refuse it. Never set in use.
   */
  flipBlobBytes?: boolean;
  /** Prefetch the closures the coordinator says the relay's agents are to run (default true; relay-prefetch.ts). */
  prefetch?: boolean;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics (relay-metrics.ts); default: not served. */
  metricsListen?: { host: string; port: number };
  /** Listen for QUIC too, on UDP at the HTTPS port's number (default true; `--no-quic`). */
  quic?: boolean;
}

/**
 * Reads an HTTPS request's body, at most MAX_RELAY_REQUEST_BYTES of it.
 * By events, not for-await: leaving a for-await early destroys the request,
 * and with it the stream the refusal goes out on. Past the bound, bytes are
 * dropped as they arrive (as the coordinator's QUIC server does) and the
 * refusal follows the body's end: an HTTP/2 reply sent while the request
 * still streams is reset.
 */
function readHttpBody(request: Http2ServerRequest): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_RELAY_REQUEST_BYTES) chunks.push(chunk);
      else chunks.length = 0;
    });
    request.once('end', () => {
      if (size > MAX_RELAY_REQUEST_BYTES) reject(new FerryError('INVALID', `a request of ${size} bytes is more than a relay reads (${MAX_RELAY_REQUEST_BYTES})`));
      else resolve(Buffer.concat(chunks, size));
    });
    request.once('error', reject);
  });
}

/**
 * Reads a QUIC stream's request: its headers frame (RelayRequestHeadersSchema),
 * then the request itself, at most MAX_RELAY_REQUEST_BYTES; past the bound,
 * bytes are dropped as they arrive and the refusal (INVALID) follows the
 * stream's end, as over HTTPS.
 */
async function readQuicRequest(chunks: AsyncIterable<Uint8Array>): Promise<ReceivedRequest> {
  const limit = 4 + MAX_RELAY_HEADERS_FRAME_BYTES + MAX_RELAY_REQUEST_BYTES;
  const kept: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    size += chunk.length;
    if (size <= limit) kept.push(chunk);
    else kept.length = 0;
  }
  if (size > limit) throw new FerryError('INVALID', `a request of ${size} bytes is more than a relay reads (${limit})`);
  const whole = Buffer.concat(kept, size);
  const length = whole.length >= 4 ? whole.readUInt32BE(0) : -1;
  if (length < 0 || length > MAX_RELAY_HEADERS_FRAME_BYTES || 4 + length > whole.length) {
    throw new FerryError('INVALID', `a QUIC request to a relay starts with a headers frame of at most ${MAX_RELAY_HEADERS_FRAME_BYTES} bytes`);
  }
  let headers: Map<string, string>;
  try {
    const parsed = RelayRequestHeadersSchema.safeParse(parseHeaderJson(whole.subarray(4, 4 + length)));
    if (!parsed.success) throw new FerryError('INVALID', `not a relay request's headers frame: ${parsed.error.issues[0]?.message}`);
    headers = new Map(Object.entries(parsed.data.headers));
  } catch (error) {
    throw error instanceof FerryError && error.code === 'INVALID' ? error : new FerryError('INVALID', `not a relay request's headers frame: ${(error as Error).message}`);
  }
  return { header: (name) => headers.get(name), body: whole.subarray(4 + length) };
}

function refused(message: string): FerryError {
  return new FerryError('FORBIDDEN', message);
}

/** One byte flipped in each chunk (the fault switch): what a corrupting relay sends. */
async function* flipped(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    const copy = new Uint8Array(chunk);
    if (copy.length > 0) copy[copy.length >> 1]! ^= 0x01;
    yield copy;
  }
}

export class RelayServer {
  private readonly nonces = new Map<string, number>();
  private readonly agents = new Set<string>();
  private bytesServed = 0;
  private refusals = 0;
  /** Requests answered (refusals included), by the transport they came over. */
  private readonly requests = { https: 0, quic: 0 };
  private quic: { server: ReturnType<typeof createQuicServer>; info: RelayQuicInfo; address: string } | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private listening: string | null = null;
  private prefetcher: RelayPrefetcher | undefined;
  /** Where its metrics are served, when they are (--metrics-listen). */
  metrics: RunningMetricsServer | undefined;

  private constructor(
    private readonly stateDir: string,
    private readonly state: RelayState,
    private readonly identity: Identity,
    private readonly upstream: DataClient,
    readonly cache: RelayCache,
    private readonly server: Http2SecureServer,
    private readonly options: RelayServerOptions,
  ) {}

  /**
   * Starts the relay of `stateDir` (enrolled: relay.json): connects to its
   * coordinator with its own key, opens its cache and listens. Refuses
   * (Error) a state dir with no enrolled relay, and a coordinator whose
   * certificate is not the pinned one.
   */
  static async start(stateDir: string, options: RelayServerOptions = {}): Promise<RelayServer> {
    const state = readRelayState(stateDir);
    const paths = relayPaths(stateDir);
    const identity = loadIdentity(paths.identity);
    const { client } = await openDataClient(state.coordinator.httpUrl, identity, {
      tlsFingerprint: state.coordinator.tlsFingerprint,
      pinnedTls: state.coordinator.pinnedTls,
      // zstd even to a coordinator on loopback: a relay is there to spare its uplink, and pays the CPU for it.
      compression: 'zstd',
      onNotice: (message) => options.log?.(`ferry relay: ${message}`),
    });
    const store = LocalCastore.open(paths.castore);
    const sources = new FetchSources(client, identity, state.coordinator.coordinatorKey, {
      ...(options.log ? { log: options.log } : {}),
      // An upstream relay serves objects of a closure whose manifest it was asked for: asked again when this relay kept one.
      prime: async (upstream, configId) => {
        const manifest = cache.manifestOf(configId);
        if (manifest) await upstream.call({ op: 'closure.manifest', configId, system: manifest.system });
      },
    });
    const cache: RelayCache = new RelayCache(store, sources, state.coordinator.coordinatorKey, stateDir, state.cacheBytes, options.log);
    const certificate = relayCertificate(stateDir);
    const server = createSecureServer({ cert: certificate.certificatePem, key: certificate.privateKeyPem, allowHTTP1: true });
    const relay = new RelayServer(stateDir, state, identity, client, cache, server, options);
    // The prefetch watch also says where to fetch from (an upstream relay and grants there): it runs with --no-prefetch too, prefetching nothing.
    const http = new CoordinatorHttpClient(state.coordinator.httpUrl, identity, state.coordinator.pinnedTls ? { pinnedFingerprint: state.coordinator.tlsFingerprint } : {});
    relay.prefetcher = new RelayPrefetcher(cache, http, {
      log: options.log,
      onProgress: () => relay.statusSoon(),
      fetchClosures: options.prefetch !== false,
      onUpstream: (offer, challenge) => {
        sources.accept(offer, challenge);
        relay.statusSoon();
      },
    });
    server.on('request', (request: Http2ServerRequest, response: Http2ServerResponse) => void relay.handleHttps(request, response));
    server.on('sessionError', () => undefined);
    const listen = new URL(`https://${state.listen}`);
    const host = options.host ?? listen.hostname.replace(/^\[|\]$/g, '');
    const port = options.port ?? Number(listen.port || 443);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as AddressInfo;
    relay.listening = `${address.address}:${address.port}`;
    if (options.quic !== false) {
      try {
        await relay.listenQuic(host, address.port, certificate.certificatePem, certificate.privateKeyPem);
      } catch (error) {
        await relay.close();
        throw new Error(`cannot listen for QUIC on UDP ${host}:${address.port} (${(error as Error).message}); free that port or run with --no-quic`);
      }
    }
    if (options.metricsListen) {
      try {
        relay.metrics = await startMetricsServer(new RelayMetrics(() => relay.status()), options.metricsListen.host, options.metricsListen.port);
      } catch (error) {
        await relay.close();
        throw error;
      }
    }
    relay.writeStatus();
    relay.prefetcher?.start();
    return relay;
  }

  /** Listens for QUIC on UDP `host:port`: each stream is one request, answered by respond as an HTTPS one is. */
  private async listenQuic(host: string, port: number, certificatePem: string, privateKeyPem: string): Promise<void> {
    const server = createQuicServer({
      key: privateKeyPem,
      cert: certificatePem,
      alpn: [RELAY_ALPN],
      runtimeMode: 'portable',
      maxIdleTimeoutMs: QUIC_IDLE_TIMEOUT_MS,
      initialMaxStreamsBidi: MAX_STREAMS_PER_CONNECTION,
    });
    server.on('session', (session: QuicServerSession) => {
      session.on('error', (error: Error) => this.options.log?.(`ferry relay: QUIC session ${session.remoteAddress}:${session.remotePort}: ${error.message}`));
      session.on('stream', (stream: QuicStream) => void this.handleQuic(stream));
    });
    const address = await server.listen(port, host);
    const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.quic = { server, info: { port: address.port, certificatePem }, address: `${shownHost}:${address.port}` };
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** What `ferry relay status` prints. */
  status(): RelayStatus {
    const counters = this.cache.counters;
    return {
      relayId: this.identity.keyId,
      coordinator: this.state.coordinator.httpUrl,
      listening: this.listening,
      quicListening: this.quic?.address ?? null,
      requests: { ...this.requests },
      cache: { bytes: this.cache.bytes(), limitBytes: this.cache.limitBytes, blobs: this.cache.store.stats().blobs, evictions: counters.evictions },
      hits: counters.hits,
      misses: counters.misses,
      bytesServed: this.bytesServed,
      bytesFetched: counters.bytesFetched,
      refused: this.refusals,
      agentsServed: this.agents.size,
      ...(this.prefetcher && this.options.prefetch !== false ? { prefetch: this.prefetcher.status() } : {}),
      upstream: this.cache.sources.status(),
      streams: { ...this.cache.streams.counters, bytes: this.cache.streams.bytes() },
    };
  }

  private writeStatus(): void {
    writeFileAtomic(relayPaths(this.stateDir).status, `${JSON.stringify(this.status())}\n`, 0o644);
  }

  private statusSoon(): void {
    this.statusTimer ??= setTimeout(() => {
      this.statusTimer = undefined;
      this.writeStatus();
    }, STATUS_INTERVAL_MS);
  }

  async close(): Promise<void> {
    await this.prefetcher?.stop();
    await this.metrics?.close();
    clearTimeout(this.statusTimer);
    await this.quic?.server.close().catch(() => undefined);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.cache.sources.close();
    await this.upstream.close();
    this.writeStatus();
    this.cache.store.close();
  }

  /**
   * One request, however it came: reads it (`read`), answers it (answer)
   * and returns the reply's frames, or the error frame refusing it. Counts
   * it by transport, and refusals.
   */
  private async respond(transport: Transport, read: () => Promise<ReceivedRequest>): Promise<AsyncIterable<Uint8Array>> {
    this.requests[transport]++;
    let reply: Reply;
    try {
      const request = await read();
      reply = await this.answer(request.header, request.body);
    } catch (error) {
      const ferry = error instanceof FerryError && isSentErrorCode(error.code);
      if (error instanceof FerryError && ['FORBIDDEN', 'UNAUTHENTICATED', 'STALE_REQUEST', 'REPLAYED_NONCE', 'INVALID'].includes(error.code)) this.refusals++;
      if (!ferry) this.options.log?.(`ferry relay: ${(error as Error).stack ?? String(error)}`);
      const body = ferry ? { error: { code: (error as FerryError).code, message: (error as Error).message } } : { error: { code: 'INTERNAL', message: 'the relay failed to answer' } };
      return (async function* () {
        yield encodeHeaderFrame(body);
      })();
    }
    return (async function* () {
      yield encodeHeaderFrame(reply.header);
      if (reply.body) yield* reply.body;
    })();
  }

  private async handleHttps(request: Http2ServerRequest, response: Http2ServerResponse): Promise<void> {
    if (request.method === 'GET' && request.url === RELAY_QUIC_INFO_PATH && this.quic) {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.quic.info));
      return;
    }
    if (request.method !== 'POST' || request.url !== '/v1/data') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('a relay serves POST /v1/data only\n');
      return;
    }
    const frames = await this.respond('https', async () => {
      const headers = request.headers;
      return { header: (name) => (Array.isArray(headers[name]) ? headers[name][0] : (headers[name] as string | undefined)), body: await readHttpBody(request) };
    });
    response.writeHead(200, { 'content-type': 'application/x-ferry-frames' });
    try {
      for await (const chunk of frames) {
        // A reader gone (closed) ends the wait too: nothing is left waiting for a drain that never comes.
        if (!response.write(chunk)) {
          await new Promise<void>((resolve) => {
            // Both listeners go once either fires: a slow agent's reply waits for many drains (MaxListenersExceededWarning otherwise).
            const done = (): void => {
              response.off('drain', done);
              response.off('close', done);
              resolve();
            };
            response.once('drain', done);
            response.once('close', done);
          });
        }
        if (response.destroyed) return;
      }
      response.end();
    } catch (error) {
      // The header is out: a failure now can only cut the reply, which the agent sees as truncated and verifies anyway.
      this.options.log?.(`ferry relay: reply cut: ${(error as Error).message}`);
      response.stream?.close();
      response.destroy();
    }
    this.statusSoon();
  }

  private async handleQuic(stream: QuicStream): Promise<void> {
    stream.on('error', () => undefined);
    const frames = await this.respond('quic', () => readQuicRequest(quicStreamChunks(stream)));
    try {
      for await (const frame of frames) if (!(await writeToQuicStream(stream, frame))) return;
      stream.end();
    } catch (error) {
      // As over HTTPS: the reply is cut, and the agent verifies what it got.
      this.options.log?.(`ferry relay: QUIC reply cut: ${(error as Error).message}`);
      stream.destroy(error as Error);
    }
    this.statusSoon();
  }

  /** Authenticates and authorizes one request (its headers and its request frame); the reply, or a FerryError refusing it. */
  private async answer(header: HeaderOf, whole: Buffer): Promise<Reply> {
    const reader = new FrameReader((async function* () {
      yield whole;
    })());
    const headerBytes = await reader.readHeaderBytes(MAX_REQUEST_HEADER_BYTES);
    const verdict = verifyRequestSignature(header, 'POST', '/v1/data', headerBytes);
    if (!verdict.ok) throw new FerryError(verdict.reason === 'stale' ? 'STALE_REQUEST' : 'UNAUTHENTICATED', verdict.message);
    const grant = decodeRelayGrant(header(RELAY_GRANT_HEADER));
    if (!grant) throw refused(`a relay serves agents with a grant (${RELAY_GRANT_HEADER}) only`);
    const problem = relayGrantProblem(this.state.coordinator.coordinatorKey, grant, verdict.keyId, undefined);
    if (problem) throw refused(`${problem}: refused`);
    // After the grant: any key signs its own requests, so only an agent the coordinator granted spends a nonce here.
    this.checkNonce(requestNonce(header)!);
    const parsed = DataRequestSchema.safeParse(parseHeaderJson(headerBytes));
    if (!parsed.success) throw new FerryError('INVALID', `not a data request: ${parsed.error.issues[0]?.message}`);
    const reply = await this.run(parsed.data, grant);
    this.agents.add(verdict.keyId);
    void this.cache.evictIfNeeded().catch((error: unknown) => this.options.log?.(`ferry relay: eviction failed: ${(error as Error).message}`));
    return reply;
  }

  /**
   * Refuses (REPLAYED_NONCE) a nonce seen within the skew window. When
   * MAX_NONCES unexpired ones are held, the request is refused instead of
   * forgetting one (which would let it be replayed): the agent then fetches
   * from the coordinator.
   */
  private checkNonce(nonce: string): void {
    const now = Date.now();
    if (this.nonces.has(nonce)) throw new FerryError('REPLAYED_NONCE', 'this request was sent before (its nonce is used)');
    if (this.nonces.size >= MAX_NONCES) {
      for (const [kept, expires] of this.nonces) if (expires < now) this.nonces.delete(kept);
      if (this.nonces.size >= MAX_NONCES) throw new FerryError('INTERNAL', `the relay holds ${MAX_NONCES} recent requests' nonces: busy, fetch from the coordinator`);
    }
    this.nonces.set(nonce, now + 2 * MAX_REQUEST_SKEW_MS);
  }

  private async run(request: ParsedDataRequest, grant: RelayGrant): Promise<Reply> {
    const store = this.cache.store;
    switch (request.op) {
      case 'closure.manifest': {
        if (request.configId !== grant.configId) throw refused(`the grant is for config ${grant.configId}, not ${request.configId}`);
        return { header: await this.cache.manifest(request.configId, request.system) };
      }
      case 'directories.get': {
        const closure = await this.cache.closure(grant.configId);
        for (const id of request.ids) if (closure.objects.get(id)?.kind !== 'directory') throw refused(`directory ${id} is not part of the granted config's closure`);
        await this.cache.ensureDirectories(request.ids);
        const encodings = request.ids.map((id) => store.readDirectoryBytes(id));
        return { header: { directories: request.ids.map((id, index) => ({ id, size: encodings[index]!.length })) }, body: (async function* () { yield* encodings; })() };
      }
      case 'blob.get': {
        const closure = await this.cache.closure(grant.configId);
        const object = closure.objects.get(request.id);
        if (object?.kind !== 'file') throw refused(`blob ${request.id} is not part of the granted config's closure`);
        if (request.length === 0) {
          // Its outboard alone (an agent about to verify a stream's large blobs): not waited for behind the copy.
          if (request.offset > object.size) throw new FerryError('INVALID', `offset ${request.offset} is beyond the end of blob ${request.id} (${object.size} bytes)`);
          const outboard = request.outboard ? await this.cache.outboard(grant.configId, request.id as Digest) : new Uint8Array(0);
          return { header: { id: request.id, size: object.size, offset: request.offset, length: 0, outboardSize: outboard.length }, body: (async function* () { yield outboard; })() };
        }
        let source: BlobSource;
        if (object.size > MAX_BATCHED_BLOB_BYTES) source = await this.cache.blobSource(closure, request.id);
        else {
          await this.cache.ensureBlobs(closure, [request.id]);
          source = { size: object.size, outboard: store.readOutboard(request.id), waitFor: async () => undefined, read: (offset, length) => store.readBlob(request.id, { offset, length }), stored: Promise.resolve() };
        }
        if (request.offset > source.size) throw new FerryError('INVALID', `offset ${request.offset} is beyond the end of blob ${request.id} (${source.size} bytes)`);
        const length = Math.min(request.length ?? source.size - request.offset, source.size - request.offset);
        // The header goes once the range is there (a segment of a blob being fetched through: once it is verified).
        if (length <= PARTIAL_READ_MAX_BYTES) await source.waitFor(request.offset + length);
        const outboard = request.outboard ? source.outboard : new Uint8Array(0);
        this.bytesServed += length;
        const data = source.read(request.offset, length);
        const flip = this.options.flipBlobBytes === true;
        return {
          header: { id: request.id, size: source.size, offset: request.offset, length, outboardSize: outboard.length },
          body: (async function* () {
            yield outboard;
            yield* flip ? flipped(data) : data;
          })(),
        };
      }
      case 'blobs.get': {
        const closure = await this.cache.closure(grant.configId);
        for (const id of request.ids) {
          const object = closure.objects.get(id);
          if (object?.kind !== 'file') throw refused(`blob ${id} is not part of the granted config's closure`);
          if (object.size > MAX_BATCHED_BLOB_BYTES) throw new FerryError('INVALID', `blob ${id} has ${object.size} bytes: blobs over ${MAX_BATCHED_BLOB_BYTES} bytes are fetched one by one (blob.get)`);
        }
        await this.cache.ensureBlobs(closure, request.ids);
        let blobs: ReturnType<LocalCastore['readBlobBatch']>;
        try {
          blobs = store.readBlobBatch(request.ids as Digest[], MAX_BATCH_BYTES);
        } catch (error) {
          if (error instanceof CastoreError && error.code === 'BATCH_TOO_LARGE') throw new FerryError('INVALID', `${error.message}; ask for fewer blobs`);
          throw error;
        }
        this.bytesServed += blobs.sizes.reduce((sum, size) => sum + size, 0);
        return {
          header: { blobs: request.ids.map((id, index) => ({ id, size: blobs.sizes[index]!, outboardSize: 0 })) },
          body: this.options.flipBlobBytes ? flipped(blobs.bytes) : (async function* () { yield* blobs.bytes; })(),
        };
      }
      case 'blobs.stream': {
        const closure = await this.cache.closure(grant.configId);
        for (const id of request.ids) if (closure.objects.get(id)?.kind !== 'file') throw refused(`blob ${id} is not part of the granted config's closure`);
        // Served only as its copy received it (stream-recordings.ts); INVALID is every agent's "ask in batches".
        const recording = await this.cache.streams.find(request.ids as Digest[], () => this.cache.copies.active());
        if (!recording) throw new FerryError('INVALID', 'the relay has no stream of these blobs: ask for them in batches');
        if (recording.encoding !== 'identity' && !request.accept?.includes(recording.encoding)) throw new FerryError('INVALID', `the relay keeps this stream ${recording.encoding}-encoded, which the request does not accept`);
        this.bytesServed += recording.size;
        const wire = this.cache.streams.read(recording);
        return { header: { size: recording.size, encoding: recording.encoding }, body: this.options.flipBlobBytes ? flipped(wire) : wire };
      }
      case 'blobs.templates':
      case 'blobs.delta':
        // Understood by every agent as "not here": no templates, whole blobs.
        throw new FerryError('INVALID', `a relay does not serve ${request.op}`);
      default:
        throw refused(`a relay serves reads of granted closures only, not ${request.op}`);
    }
  }
}
