/**
 * The coordinator's data plane over raw QUIC (`@currentspace/http3`,
 * portable runtime, ALPN `ferry/1`). One request per bidirectional stream
 * (protocol/data-protocol.ts). A session starts unauthenticated: `hello`
 * gives it a random challenge, `auth` proves the caller's ed25519 key by
 * signing it; every later request is checked against the key's current
 * role, so revoking a key takes effect on open sessions too. A bad frame,
 * an unknown operation or a refused request ends only its own stream.
 */
import { createQuicServer, type QuicServerSession, type QuicStream } from '@currentspace/http3';
import { randomBytes } from 'node:crypto';
import { ed25519Verify } from '../protocol/ed25519.js';
import { publicKeyOf } from '../protocol/identity.js';
import { DataRequestSchema, FERRY_ALPN, MAX_REQUEST_HEADER_BYTES, sessionAuthMessage } from '../protocol/data-protocol.js';
import { MAX_STREAMS_PER_CONNECTION, quicStreamChunks, writeToQuicStream } from '../protocol/quic-streams.js';
import { FrameReader } from '../protocol/framing.js';
import { isAuthRefusal, resolveActor } from './api/actors.js';
import { FerryError } from '../protocol/errors.js';
import { DATA_ACCESS, runDataOperation, type ClosureAccess, type DataReply } from './api/data-operations.js';
import { replyFrames } from './api/data-replies.js';
import { FERRY_VERSION } from '../protocol/version.js';
import type { Coordinator } from './coordinator.js';
import type { Actor } from './domain/commands.js';
import { countedChunks, type CoordinatorMetrics } from './metrics/index.js';

export interface QuicServerOptions {
  certificatePem: string;
  privateKeyPem: string;
  /** Which configs and objects each agent may read: the coordinator's one instance (startCoordinator builds it), shared with the HTTP API. */
  closureAccess: ClosureAccess;
  /** A session with no packets for this long is closed (default 30 s; clients ping every 10 s). */
  idleTimeoutMs?: number;
  log?: (line: string) => void;
  /** Where data-plane bytes are counted (the coordinator's metrics). */
  metrics?: CoordinatorMetrics;
}

export interface RunningQuicServer {
  /** `host:port` */
  address: string;
  port: number;
  /** Sessions open now, and opened since the start. */
  sessions(): { open: number; opened: number };
  close(): Promise<void>;
}

/** Requests one connection may have in flight (protocol/quic-streams.ts); re-exported for the tests that measure it. */
export { MAX_STREAMS_PER_CONNECTION };

/**
 * After the reply: the request is read no further, and whatever the client
 * still sends on the stream (a refused upload's body, bytes after a request
 * that takes none) is dropped as it arrives, never queued, until the client
 * ends the stream or the session closes. @currentspace/http3 0.9.0 credits
 * the sender for all it receives, paused or not, and queues it in the
 * stream object: a refused stream that kept sending grew the coordinator's
 * memory without bound, by every byte sent (test/hostile-data-plane.test.ts,
 * memory). Closing the stream instead (stream.close: STOP_SENDING) is no
 * option with that version: every later large request on the same
 * connection then stalled until the idle timeout, as if the bytes in flight
 * on the closed stream were never credited back.
 */
function discardRest(stream: QuicStream, reader: FrameReader): void {
  void reader.cancel().catch(() => undefined);
  if (stream.destroyed || stream.readableEnded) return;
  stream.on('data', () => undefined);
  stream.resume();
}

interface SessionState {
  challenge: string;
  keyId?: string;
  signature?: string;
}

/** Writes frames to a stream with backpressure, then ends it; aborts the stream if producing them fails. */
async function writeFrames(stream: QuicStream, frames: AsyncIterable<Uint8Array>): Promise<void> {
  try {
    for await (const frame of frames) if (!(await writeToQuicStream(stream, frame))) return;
    stream.end();
  } catch (error) {
    stream.destroy(error as Error);
  }
}

/** Listens for QUIC on `host:port` (port 0 picks one); resolves once listening. */
export async function startQuicServer(coordinator: Coordinator, host: string, port: number, options: QuicServerOptions): Promise<RunningQuicServer> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const access = options.closureAccess;
  const server = createQuicServer({
    key: options.privateKeyPem,
    cert: options.certificatePem,
    alpn: [FERRY_ALPN],
    runtimeMode: 'portable',
    maxIdleTimeoutMs: options.idleTimeoutMs ?? 30_000,
    initialMaxStreamsBidi: MAX_STREAMS_PER_CONNECTION,
  });

  function actorOf(state: SessionState, operation: keyof typeof DATA_ACCESS): Actor {
    if (!state.keyId || !state.signature) throw new FerryError('UNAUTHENTICATED', 'this QUIC session has not authenticated (send hello, then auth)');
    return resolveActor(coordinator, state.keyId, state.signature, DATA_ACCESS[operation], operation);
  }

  async function decide(session: QuicServerSession, state: SessionState, reader: FrameReader): Promise<DataReply> {
    const request = DataRequestSchema.parse(await reader.readHeader(MAX_REQUEST_HEADER_BYTES));
    if (request.op === 'hello') return { header: { challenge: state.challenge, coordinatorKey: coordinator.identity.keyId, version: FERRY_VERSION } };
    if (request.op === 'auth') {
      const { keyId, signature } = request;
      const where = `QUIC session from ${session.remoteAddress}:${session.remotePort}`;
      try {
        if (!ed25519Verify(publicKeyOf(keyId), sessionAuthMessage(state.challenge, keyId), Buffer.from(signature, 'base64'))) {
          throw new FerryError('UNAUTHENTICATED', 'the session challenge signature does not verify');
        }
        const actor = resolveActor(coordinator, keyId, signature, 'public', 'auth');
        Object.assign(state, { keyId, signature });
        return { header: { keyId, role: actor.role } };
      } catch (error) {
        if (isAuthRefusal(error)) log(`ferry coordinator: refused ${where}: ${error.code} ${error.message} (key ${keyId})`);
        throw error;
      }
    }
    let actor: Actor;
    try {
      actor = actorOf(state, request.op);
    } catch (error) {
      if (isAuthRefusal(error)) log(`ferry coordinator: refused QUIC ${request.op} from ${session.remoteAddress}: ${error.code} ${error.message}${state.keyId ? ` (key ${state.keyId})` : ''}`);
      throw error;
    }
    if (actor.role === 'agent') coordinator.presence.touch(actor.keyId);
    return runDataOperation(coordinator, access, actor, request, reader);
  }

  const sessions = { open: 0, opened: 0 };
  server.on('session', (session: QuicServerSession) => {
    sessions.open++;
    sessions.opened++;
    session.once('close', () => sessions.open--);
    const state: SessionState = { challenge: randomBytes(32).toString('hex') };
    session.on('error', (error: Error) => log(`ferry coordinator: QUIC session ${session.remoteAddress}:${session.remotePort}: ${error.message}`));
    session.on('stream', (stream: QuicStream) => {
      stream.on('error', () => undefined);
      const metrics = options.metrics;
      const chunks = quicStreamChunks(stream);
      const reader = new FrameReader(metrics ? countedChunks(chunks, (bytes) => metrics.countData('quic', 'received', bytes)) : chunks);
      const replied = replyFrames(() => decide(session, state, reader), log, `a QUIC data request from ${session.remoteAddress}`);
      const frames = metrics ? countedChunks(replied, (bytes) => metrics.countData('quic', 'sent', bytes)) : replied;
      void writeFrames(stream, frames).then(() => discardRest(stream, reader));
    });
  });
  const address = await server.listen(port, host);
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    address: `${shownHost}:${address.port}`,
    port: address.port,
    sessions: () => ({ ...sessions }),
    close: () => server.close(),
  };
}
