/**
 * The data plane's typed client: raw QUIC to the coordinator (its
 * certificate pinned), falling back to HTTP when QUIC cannot connect (UDP
 * blocked), with retries and backoff on transport failures. It moves
 * frames and bytes; verifying objects against their ids is the caller's
 * job (castore/transfer), and nothing here stores anything.
 */
import { connectQuicAsync, type QuicClientSession } from '@currentspace/http3';
import {
  COORDINATOR_TLS_NAME,
  DATA_RESPONSES,
  FERRY_ALPN,
  MAX_REPLY_HEADER_BYTES,
  RELAY_ALPN,
  sessionAuthMessage,
  type DataOperationName,
  type DataRequest,
  type DataResponse,
} from './data-protocol.js';
import { quicStreamChunks, writeToQuicStream } from './quic-streams.js';
import { WIRE_ENCODINGS } from './compression/wire.js';
import { FerryError, readErrorBody, type ReceivedError } from './errors.js';
import { encodeHeaderFrame, FrameError, FrameReader } from './framing.js';
import type { Identity } from './identity.js';
import { fetchFor, pinningFailure, type FetchFunction } from './pinned-fetch.js';
import { signRequest } from './request-signing.js';

/**
 * A reply that delivers nothing for this long is abandoned and retried (a
 * stalled stream, a dead session). Short, because @currentspace/http3
 * 0.9.0 occasionally never delivers a reply's last bytes (about 1 in 40
 * fetches of a 195 MB closure here, more under load): a retry of the one
 * request is cheap, waiting is not. The coordinator starts replying at once
 * and streams without pauses, so 5 s of silence is not a slow reply.
 */
const REPLY_INACTIVITY_MS = 5_000;

/**
 * An error the coordinator answered with (or a reply this client refuses:
 * BAD_RESPONSE, BAD_PROOF). Its own class because the retry policy tells it
 * by type from TransportError: an answer is not retried.
 */
export class DataError extends FerryError {
  override readonly name = 'DataError';

  /** The error an error frame carried. */
  static received({ code, message, sentCode, details }: ReceivedError): DataError {
    return new DataError(code, message, { sentCode, ...(details ? { details } : {}) });
  }
}

/**
 * The connection failed (not the request): retried, and reported only when
 * retries are exhausted. Its own class for that retry policy.
 */
export class TransportError extends FerryError {
  override readonly name = 'TransportError';
  constructor(message: string) {
    super('TRANSPORT', message);
  }
}

export interface DataReplyStream<N extends DataOperationName> {
  header: DataResponse<N>;
  /** The reply's body bytes; read them all (or abandon the reply). */
  body: FrameReader;
}

type RequestBody = Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Headers each request carries besides its signature: fixed, or asked for at each request (a relay grant renewed meanwhile). */
export type ExtraHeaders = Readonly<Record<string, string>> | (() => Readonly<Record<string, string>>);

const headersNow = (headers: ExtraHeaders | undefined): Readonly<Record<string, string>> => (typeof headers === 'function' ? headers() : (headers ?? {}));

/** Bytes on the wire, counted where they enter and leave the transports. */
interface WireBytes {
  received: number;
  sent: number;
}

interface Transport {
  readonly kind: 'quic' | 'http';
  send(header: DataRequest, body?: RequestBody): Promise<FrameReader>;
  close(): Promise<void>;
}

async function readReply<N extends DataOperationName>(op: N, reader: FrameReader): Promise<DataReplyStream<N>> {
  const header = await reader.readHeader(MAX_REPLY_HEADER_BYTES);
  const failure = readErrorBody(header);
  if (failure) throw DataError.received(failure);
  const parsed = DATA_RESPONSES[op].safeParse(header);
  if (!parsed.success) throw new DataError('BAD_RESPONSE', `the coordinator's ${op} reply does not match the protocol: ${parsed.error.issues[0]?.message}`);
  return { header: parsed.data as DataResponse<N>, body: reader };
}

class QuicTransport implements Transport {
  readonly kind = 'quic';
  private readonly keepalive: NodeJS.Timeout;

  private constructor(
    private readonly session: QuicClientSession,
    idleTimeoutMs: number,
    private readonly counter: WireBytes,
    /** Set for a relay (RELAY_ALPN): the identity that signs each request, and the headers each carries besides. */
    private readonly signed?: { identity: Identity; headers: ExtraHeaders },
  ) {
    // Keep NAT bindings and the coordinator's idle timer fresh; a dead peer ends the session at its idle timeout.
    this.keepalive = setInterval(() => {
      // A ping on a session that is already failing throws; the idle timeout and the next request report that.
      try {
        session.ping();
      } catch {
        /* noticed elsewhere */
      }
    }, Math.min(10_000, idleTimeoutMs / 3));
    this.keepalive.unref();
  }

  /**
   * Connects to `address`, trusting only `certificatePem`. To a coordinator
   * the session authenticates (hello, auth); with `signedRequests` (a
   * relay) it does not, and every request carries its own signature and
   * those headers instead (RELAY_ALPN).
   */
  static async connect(
    address: string,
    certificatePem: string,
    identity: Identity,
    timeoutMs: number,
    idleTimeoutMs: number,
    counter: WireBytes,
    signedRequests?: { headers: ExtraHeaders },
  ): Promise<QuicTransport> {
    let session: QuicClientSession;
    try {
      session = await connectQuicAsync(address, {
        ca: certificatePem,
        servername: COORDINATOR_TLS_NAME,
        alpn: [signedRequests ? RELAY_ALPN : FERRY_ALPN],
        runtimeMode: 'portable',
        connectTimeoutMs: timeoutMs,
        maxIdleTimeoutMs: idleTimeoutMs,
      });
    } catch (error) {
      throw new TransportError(`QUIC connection to ${address} failed: ${(error as Error).message}`);
    }
    session.on('error', () => undefined);
    const transport = new QuicTransport(session, idleTimeoutMs, counter, signedRequests && { identity, headers: signedRequests.headers });
    if (signedRequests) return transport;
    try {
      const hello = await readReply('hello', await transport.send({ op: 'hello' }));
      const signature = Buffer.from(identity.sign(sessionAuthMessage(hello.header.challenge, identity.keyId))).toString('base64');
      await readReply('auth', await transport.send({ op: 'auth', keyId: identity.keyId, signature }));
    } catch (error) {
      await transport.close();
      throw error;
    }
    return transport;
  }

  get closed(): boolean {
    return this.session.closed;
  }

  async send(header: DataRequest, body?: RequestBody): Promise<FrameReader> {
    if (this.session.closed) throw new TransportError('the QUIC session is closed');
    let stream: ReturnType<QuicClientSession['openStream']>;
    try {
      stream = this.session.openStream();
    } catch (error) {
      throw new TransportError(`cannot open a QUIC stream: ${(error as Error).message}`);
    }
    stream.on('error', () => undefined);
    // Write concurrently with reading: a large upload must not wait for the reply, nor the reply for the upload.
    const writing = (async () => {
      const frame = encodeHeaderFrame(header);
      // To a relay: first the headers HTTPS would carry, signed over the same request frame (relays.ts RelayRequestHeadersSchema).
      const headers = this.signed && encodeHeaderFrame({ headers: { ...headersNow(this.signed.headers), ...signRequest(this.signed.identity, 'POST', '/v1/data', frame.subarray(4)) } });
      this.counter.sent += frame.length + (headers?.length ?? 0);
      if (headers && !(await writeToQuicStream(stream, headers))) return;
      if (!(await writeToQuicStream(stream, frame))) return;
      if (body) for await (const chunk of body) if (!(await writeToQuicStream(stream, chunk))) return;
      stream.end();
    })().catch((error: Error) => stream.destroy(error));
    void writing;
    return new FrameReader(streamChunks(quicStreamChunks(stream), this.counter, () => stream.destroy()));
  }

  async close(): Promise<void> {
    clearInterval(this.keepalive);
    await this.session.close().catch(() => undefined);
  }
}

/**
 * A reply's chunks, with a stream error (reset, closed session) turned into
 * a TransportError; abandoning it part-way (FrameReader.cancel) aborts the
 * reply, so the coordinator stops sending what nobody reads.
 */
async function* streamChunks(stream: AsyncIterable<unknown>, counter: WireBytes, abort?: () => void): AsyncGenerator<Uint8Array> {
  let complete = false;
  const iterator = stream[Symbol.asyncIterator]();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TransportError(`no reply bytes for ${REPLY_INACTIVITY_MS / 1000} s`)), REPLY_INACTIVITY_MS);
      });
      const next = await Promise.race([iterator.next(), stalled]).finally(() => clearTimeout(timer));
      if (next.done) break;
      counter.received += (next.value as Uint8Array).length;
      yield next.value as Uint8Array;
    }
    complete = true;
  } catch (error) {
    throw error instanceof TransportError ? error : new TransportError(`stream failed: ${(error as Error).message}`);
  } finally {
    if (!complete) {
      abort?.();
      void iterator.return?.().catch(() => undefined);
    }
  }
}

class HttpTransport implements Transport {
  readonly kind = 'http';
  private readonly fetch: FetchFunction;

  constructor(
    private readonly baseUrl: string,
    private readonly identity: Identity,
    pinnedFingerprint: string | undefined,
    private readonly counter: WireBytes,
    private readonly extraHeaders: ExtraHeaders = {},
    private readonly replyTimeoutMs?: number,
  ) {
    this.fetch = fetchFor(pinnedFingerprint);
  }

  async send(header: DataRequest, body?: RequestBody): Promise<FrameReader> {
    const frame = encodeHeaderFrame(header);
    const headers = { ...headersNow(this.extraHeaders), 'content-type': 'application/x-ferry-frames', 'accept-encoding': 'identity', ...signRequest(this.identity, 'POST', '/v1/data', frame.subarray(4)) };
    this.counter.sent += frame.length;
    const iterator = (async function* () {
      yield frame;
      if (body) yield* body;
    })();
    const requestBody = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const next = await iterator.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
    });
    let response: Response;
    // Until the reply's header: a peer that accepts the request and never answers costs this long, not the client's idle timeout.
    // Raced too, not only signalled: the pinned client's connect (TCP, TLS) does not see the signal.
    const deadline = this.replyTimeoutMs === undefined ? undefined : new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      if (!deadline) return;
      timer = setTimeout(() => {
        const reason = new TransportError(`no reply from ${this.baseUrl} within ${this.replyTimeoutMs! / 1000} s`);
        deadline.abort(reason);
        reject(reason);
      }, this.replyTimeoutMs);
    });
    expired.catch(() => undefined);
    try {
      const fetching = this.fetch(new URL('/v1/data', this.baseUrl), { method: 'POST', headers, body: requestBody, duplex: 'half', ...(deadline ? { signal: deadline.signal } : {}) } as RequestInit);
      if (deadline) fetching.catch(() => undefined);
      response = await (deadline ? Promise.race([fetching, expired]) : fetching);
    } catch (error) {
      if (deadline?.signal.aborted) throw deadline.signal.reason as TransportError;
      // A certificate that is not the pinned one is not a transport hiccup: never retried.
      const pinning = pinningFailure(error);
      if (pinning) throw pinning;
      throw new TransportError(`cannot reach the coordinator at ${this.baseUrl}: ${(error as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok || !response.body) throw new TransportError(`the coordinator answered HTTP ${response.status} to a data request`);
    // Frames are bounded by their declared sizes; an HTTP-compressed reply would be expanded before any of that applies.
    const encoding = response.headers.get('content-encoding');
    if (encoding && encoding.toLowerCase() !== 'identity') throw new DataError('BAD_RESPONSE', `the coordinator's data reply is ${encoding}-encoded; refusing it`);
    return new FrameReader(streamChunks(response.body as unknown as AsyncIterable<Uint8Array>, this.counter));
  }

  async close(): Promise<void> {}
}

export interface DataClientOptions {
  identity: Identity;
  /** The coordinator's HTTP base URL: the fallback, and where its certificate is fetched. */
  httpUrl: string;
  /** When httpUrl is the coordinator's own port: its certificate fingerprint, so the fallback goes over TLS pinned to it (pinned-fetch.ts). */
  pinnedFingerprint?: string;
  /** `host:port` of its QUIC listener; without it (or the certificate) only HTTP is used. */
  quicAddress?: string;
  /** The coordinator's certificate, already checked against its pinned fingerprint. */
  certificatePem?: string;
  /** Skip QUIC (e.g. `--http`). */
  httpOnly?: boolean;
  /** Retries of a failed transport before giving up (default 5). */
  retries?: number;
  connectTimeoutMs?: number;
  /** A QUIC session silent for this long is dead (default 30 s): requests on it fail and are retried on a new one. */
  idleTimeoutMs?: number;
  /**
   * The caller's HTTPS connection to the coordinator is usually warm (a
   * daemon's watch and reports keep it open): requests other than
   * `blobs.stream` go over it, when it is TLS (pinned or https), unless a
   * QUIC session is already open. A QUIC session costs a handshake and the
   * session's auth on this thread, more than a small fetch takes
   * (bench/README.md, "Shaped links", second session of issue 17). Closure
   * streams and bulk transfers (startBulkTransfer) connect it.
   */
  warmHttps?: boolean;
  /** Told about fallbacks and retries. */
  onNotice?: (message: string) => void;
  /** Called when QUIC was offered but could not connect (then requests go over HTTP): a caller that remembered the address forgets it. */
  onQuicUnreachable?: (error: Error) => void;
  /**
   * Headers every HTTP request carries besides the signature's (not signed:
   * what they say must prove itself, as a relay grant does, protocol/relays.ts).
   * A function is asked at each request.
   */
  headers?: ExtraHeaders;
  /**
   * The QUIC peer is a relay (RELAY_ALPN): no session auth; each request
   * carries its signature and `headers` in a frame before it, as it would
   * over HTTPS.
   */
  quicSignedRequests?: boolean;
  /**
   * HTTP: how long a request may wait for its reply's header (connecting
   * included) before it fails as a transport error; default: the HTTP
   * client's idle timeout (300 s). A relay's clients set it short.
   */
  replyTimeoutMs?: number;
  /**
   * zstd on the wire (docs/data-plane.md, "Compression on the wire"):
   * 'zstd' asks for it (`accept`) and compresses pushes; 'off' moves bytes
   * as they are. Default: 'off' when the coordinator is on loopback
   * (localhost, 127.0.0.0/8, ::1), where compressing only costs time, and
   * 'zstd' otherwise.
   */
  compression?: 'zstd' | 'off';
}

/** Whether `httpUrl` names this machine. */
function isLoopback(httpUrl: string): boolean {
  const host = new URL(httpUrl).hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Requests with retries: a transport failure (connection refused, reset,
 * cut mid-reply) reconnects — falling back from QUIC to HTTP when QUIC
 * cannot reconnect — and retries with exponential backoff and jitter;
 * an error the coordinator answered (DataError) is thrown at once.
 */
export class DataClient {
  private quic: QuicTransport | undefined;
  private quicConnecting: Promise<QuicTransport | undefined> | undefined;
  /** Why QUIC cannot be used: set once it failed to connect (or is not offered); requests then go over HTTP. */
  private quicFailed = false;
  /** The coordinator refused this client on QUIC (e.g. its key): every request fails with it. */
  private quicRefusal: DataError | undefined;
  private http: HttpTransport | undefined;
  private lastTransport: Transport | undefined;
  /** Set by startBulkTransfer. */
  private bulk = false;
  /** Whether the HTTP fallback is TLS (pinned, or an https URL): only then may it carry what QUIC would. */
  private readonly httpEncrypted: boolean;
  /** Whether requests ask for zstd and pushes compress (DataClientOptions.compression). */
  readonly compression: boolean;
  /** Bytes this client received and sent on the wire (reply and request frames, headers included), over all transports. */
  readonly wireBytes = { received: 0, sent: 0 };

  constructor(private readonly options: DataClientOptions) {
    if (options.httpOnly || !options.quicAddress || !options.certificatePem) this.quicFailed = true;
    this.compression = (options.compression ?? (isLoopback(options.httpUrl) ? 'off' : 'zstd')) === 'zstd';
    this.httpEncrypted = options.pinnedFingerprint !== undefined || new URL(options.httpUrl).protocol === 'https:';
  }

  /** What to put in `accept` of blobs.get and blob.get: undefined (the field left out) when not compressing. */
  get accept(): string[] | undefined {
    return this.compression ? [...WIRE_ENCODINGS] : undefined;
  }

  /** Which transport carried the last request. */
  get transportKind(): 'quic' | 'http' | undefined {
    return this.lastTransport?.kind;
  }

  /** Whether QUIC was offered but could not be reached (its address may have changed). */
  get quicUnreachable(): boolean {
    return this.quicFailed && Boolean(this.options.quicAddress && this.options.certificatePem && !this.options.httpOnly);
  }

  /**
   * Says that a large transfer follows (a cold deploy, a big change): from
   * now on every request goes over QUIC, whatever `warmHttps` says, and the
   * session starts connecting at once.
   */
  startBulkTransfer(): void {
    this.bulk = true;
    if (!this.quicFailed && !this.quic) void this.connectQuic();
  }

  /** The QUIC session, connecting it once however many requests wait; undefined when QUIC is unusable (then HTTP is). */
  private connectQuic(): Promise<QuicTransport | undefined> {
    this.quicConnecting ??= QuicTransport.connect(this.options.quicAddress!, this.options.certificatePem!, this.options.identity, this.options.connectTimeoutMs ?? 3000, this.options.idleTimeoutMs ?? 30_000, this.wireBytes, this.options.quicSignedRequests ? { headers: this.options.headers ?? {} } : undefined)
      .then(
        (quic) => (this.quic = quic),
        (error: Error) => {
          if (error instanceof DataError) this.quicRefusal = error;
          else {
            this.quicFailed = true;
            this.options.onNotice?.(`${error.message}; falling back to HTTP`);
            this.options.onQuicUnreachable?.(error);
          }
          return undefined;
        },
      )
      .finally(() => (this.quicConnecting = undefined));
    return this.quicConnecting;
  }

  /**
   * The transport for a request of `op`: QUIC (connected on demand) unless
   * it cannot connect, then HTTP; with `warmHttps`, HTTP for all but
   * `blobs.stream` until a QUIC session is open or a bulk transfer starts.
   */
  private async transportFor(op: DataOperationName): Promise<Transport> {
    if (this.quic?.closed) this.quic = undefined;
    if (this.quic) return this.quic;
    const viaWarmHttps = this.options.warmHttps === true && !this.bulk && op !== 'blobs.stream' && this.httpEncrypted;
    if (!this.quicFailed && !this.quicRefusal && !viaWarmHttps) {
      const quic = await this.connectQuic();
      if (quic) return quic;
    }
    if (this.quicRefusal) throw this.quicRefusal;
    this.http ??= new HttpTransport(this.options.httpUrl, this.options.identity, this.options.pinnedFingerprint, this.wireBytes, this.options.headers, this.options.replyTimeoutMs);
    return this.http;
  }

  /**
   * Sends one request and returns its reply header and body reader.
   * `request` may be a function, called again for each retry. When
   * `body` is given it must be re-iterable (an array) for retries to
   * resend it. `consume` reads the body inside the retry loop: a failure
   * while reading retries the whole request.
   */
  async call<N extends DataOperationName, R = DataReplyStream<N>>(
    request: (DataRequest<N> & { op: N }) | (() => DataRequest<N> & { op: N }),
    options: { body?: readonly Uint8Array[] | (() => RequestBody); consume?: (reply: DataReplyStream<N>) => Promise<R> } = {},
  ): Promise<R> {
    const retries = this.options.retries ?? 5;
    let header = typeof request === 'function' ? request() : request;
    for (let attempt = 0; ; attempt++) {
      const transport = await this.transportFor(header.op).catch((error: Error) => {
        throw error instanceof DataError ? error : new TransportError(error.message);
      });
      this.lastTransport = transport;
      let reader: FrameReader | undefined;
      try {
        // Evaluated per attempt, so a retry can resume where verified bytes stopped.
        header = typeof request === 'function' ? request() : request;
        const body = typeof options.body === 'function' ? options.body() : options.body;
        reader = await transport.send(header as DataRequest, body === undefined ? undefined : this.counted(body, 'sent'));
        const reply = await readReply(header.op, reader);
        return options.consume ? await options.consume(reply) : (reply as R);
      } catch (error) {
        await reader?.cancel().catch(() => undefined);
        const transient = error instanceof TransportError || (error instanceof FrameError && error.code === 'FRAME_TRUNCATED');
        if (!transient || attempt >= retries) throw error;
        if (transport instanceof QuicTransport) {
          await transport.close();
          if (this.quic === transport) this.quic = undefined;
        }
        const delay = Math.min(5000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2);
        this.options.onNotice?.(`${header.op} failed over ${transport.kind} (${(error as Error).message}); retrying in ${Math.round(delay)} ms`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  private async *counted(chunks: RequestBody, direction: 'sent' | 'received'): AsyncGenerator<Uint8Array> {
    for await (const chunk of chunks) {
      this.wireBytes[direction] += chunk.length;
      yield chunk;
    }
  }

  /** Closes the QUIC session, waiting for one still connecting (so nothing is left open). */
  async close(): Promise<void> {
    const quic = this.quic ?? (await this.quicConnecting);
    this.quic = undefined;
    await quic?.close();
  }
}
