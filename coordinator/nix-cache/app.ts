/**
 * The coordinator as a Nix binary cache (HTTP), mounted under `/nix-cache`
 * of the coordinator's HTTP API:
 *
 *   GET  /nix-cache/nix-cache-info          public: StoreDir, WantMassQuery, Priority
 *   GET  /nix-cache/public-key              public: the `trusted-public-keys` line
 *   GET  /nix-cache/<hash>.narinfo          signed with the coordinator's key
 *   GET  /nix-cache/nar/<hash>-<narhash>.nar[.zst]
 *                                           the NAR, rebuilt from castore as it streams;
 *                                           uncompressed ones with Content-Length and Range
 *   PUT  /nix-cache/nar/<sha256>.nar[.zst|.xz]
 *                                           `nix copy --to` (xz by default): spooled, checked
 *                                           against its name; stored in castore form once its
 *                                           narinfo verifies (decompressed, bounded: decompress.ts)
 *   PUT  /nix-cache/<hash>.narinfo          `nix copy --to`: verified, ingested, registered, audited
 *
 * (HEAD works wherever GET does.) Reads need netrc credentials of a key
 * with a reading role unless the cache is public; writes need a pusher,
 * operator or admin key (see access.ts, credentials.ts). Handlers throw;
 * this app's own `onError` answers with the status and code of the one
 * mapping (api/error-replies.ts), as `text/plain` `CODE: message` (what Nix
 * shows its user), not JSON. Refusals are logged and never change state.
 * docs/nix-cache.md is the user's guide.
 */
import path from 'node:path';
import { Hono, type Context } from 'hono';
import { exportNar } from '../../castore/index.js';
import { FerryError } from '../../protocol/errors.js';
import { errorReplyOf, requestWhere } from '../api/error-replies.js';
import { readBoundedBody } from '../api/request-body.js';
import type { Coordinator } from '../coordinator.js';
import type { ClosureAccess } from '../api/data-operations.js';
import { NixCacheGate } from './access.js';
import { NixCacheKey } from './cache-key.js';
import { decideRange } from './http-range.js';
import { NarSpool, SPOOL_NAME_DESCRIPTION, SPOOL_NAME_PATTERN } from './nar-spool.js';
import { NarInfoUploads } from './narinfo-upload.js';
import { SERVED_NAR_PATTERN, servedNarInfo, type ServedCompression } from './served-narinfo.js';
import { zstdCompress } from '../../protocol/compression/zstd.js';

export interface NixCacheOptions {
  /** Serve narinfos and NARs without credentials (default false: a reading key is required). */
  publicRead?: boolean;
  /** Compression of the NARs narinfos point to (default 'none'); both kinds of URL are always served. */
  compression?: ServedCompression;
  /** `Priority:` in nix-cache-info (default 30; lower is preferred; cache.nixos.org is 40). */
  priority?: number;
  /** Largest NAR accepted by upload, as uploaded and as its NarSize (default 32 GiB). */
  maxNarBytes?: number;
  /** Largest total of NAR bytes waiting in the upload spool (default 64 GiB). */
  maxSpoolBytes?: number;
  /** Spooled NARs unused this long are deleted (default 1 hour). */
  spoolStaleAfterMs?: number;
  /** A spooled NAR stays this long after a narinfo was ingested from it (default 2 minutes). */
  spoolGraceMs?: number;
  /** Where refusals and internal errors are logged (default: stderr). */
  log?: (line: string) => void;
}

declare module '../api/http.js' {
  interface HttpApiOptions {
    /** Options of the Nix binary cache under /nix-cache (see coordinator/nix-cache/app.ts). */
    nixCache?: NixCacheOptions;
  }
}

const GiB = 1024 * 1024 * 1024;
const MAX_NARINFO_BYTES = 64 * 1024;
const NARINFO_PATTERN = /^([0-9a-df-np-sv-z]{32})\.narinfo$/;

/** Chunks (of up to 64 KiB) produced ahead of the socket: keeps castore reads and socket writes overlapping. */
const READ_AHEAD_CHUNKS = 8;

/**
 * Turns a byte generator into a response body that pulls ahead a little
 * (bounded: READ_AHEAD_CHUNKS) and stops the generator when the client goes away.
 */
function responseBody(chunks: AsyncGenerator<Uint8Array>, onError: (error: unknown) => void): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await chunks.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      } catch (error) {
        onError(error);
        controller.error(error);
      }
    },
    async cancel() {
      await chunks.return(undefined);
    },
  }, new CountQueuingStrategy({ highWaterMark: READ_AHEAD_CHUNKS }));
}

/**
 * The Nix cache's answer to a failed request: the status and code of the
 * one mapping (errorReplyOf), as `CODE: message` text. Refusals other than
 * 404 are logged (with the key, once its credentials verified); a 401 asks
 * for Basic credentials, which is what makes Nix send its netrc ones.
 */
function refusal(c: Context, error: unknown, log: (line: string) => void): Response {
  const where = requestWhere(c);
  const { status, body } = errorReplyOf(error, log, `nix-cache ${where}`);
  const { code, message, details } = body.error;
  if (status !== 404 && status !== 500) log(`ferry coordinator: nix-cache refused ${where}: ${code} ${message}${details?.keyId ? ` (key ${details.keyId})` : ''}`);
  const headers: Record<string, string> = { 'content-type': 'text/plain; charset=utf-8' };
  if (status === 401) headers['www-authenticate'] = 'Basic realm="ferry nix-cache", charset="UTF-8"';
  return new Response(c.req.method === 'HEAD' ? null : `${code}: ${message}\n`, { status, headers });
}

/**
 * The Nix binary cache as a hono app, to mount at `/nix-cache` of the
 * coordinator's HTTP API. Spools uploads under `<data dir>/nix-cache/spool`
 * (stale files there are swept at creation and periodically). Serves
 * whatever the castore registry holds, whoever pushed it. An agent reads
 * what `closureAccess` (the data plane's) lets it read.
 */
export function createNixCacheApp(coordinator: Coordinator, closureAccess: ClosureAccess, options: NixCacheOptions = {}): Hono {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const compression = options.compression ?? 'none';
  const priority = options.priority ?? 30;
  const maxNarBytes = options.maxNarBytes ?? 32 * GiB;
  const gate = new NixCacheGate(coordinator, closureAccess, options.publicRead === true);
  const key = new NixCacheKey(coordinator.identity, () => coordinator.name);
  const spool = new NarSpool(path.join(coordinator.dataDir, 'nix-cache', 'spool'), {
    maxFileBytes: maxNarBytes,
    maxSpoolBytes: options.maxSpoolBytes ?? 64 * GiB,
    staleAfterMs: options.spoolStaleAfterMs ?? 60 * 60 * 1000,
    consumedGraceMs: options.spoolGraceMs ?? 2 * 60 * 1000,
  });
  const uploads = new NarInfoUploads(coordinator, spool, maxNarBytes);
  const cacheInfo = `StoreDir: /nix/store\nWantMassQuery: 1\nPriority: ${priority}\n`;

  const notFound = (what: string): FerryError => new FerryError('NOT_FOUND', `${what} is not in this cache`);
  const streamError = (what: string) => (error: unknown) => log(`ferry coordinator: nix-cache failed streaming ${what}: ${error instanceof Error ? error.message : String(error)}`);

  const app = new Hono();
  app.onError((error, c) => refusal(c, error, log));

  app.get('/nix-cache-info', (c) => c.body(cacheInfo, 200, { 'content-type': 'text/x-nix-cache-info' }));
  app.get('/public-key', (c) => c.body(`${key.publicKeyLine}\n`, 200, { 'content-type': 'text/plain; charset=utf-8' }));

  app.get('/:file', (c) => {
    const match = NARINFO_PATTERN.exec(c.req.param('file'));
    if (!match) throw notFound(c.req.param('file'));
    const actor = gate.authorize(c.req.header('authorization'), 'read');
    const info = coordinator.castore.getStorePathByHashPart(match[1]!);
    if (!info || !gate.mayRead(actor, info.storePath)) throw notFound(`${match[1]}.narinfo`);
    const text = servedNarInfo(info, compression, key);
    return new Response(c.req.method === 'HEAD' ? null : text, { status: 200, headers: { 'content-type': 'text/x-nix-narinfo', 'content-length': String(Buffer.byteLength(text)) } });
  });

  app.get('/nar/:file', (c) => {
    const file = c.req.param('file');
    const spooled = SPOOL_NAME_PATTERN.exec(file);
    if (spooled) {
      // `nix copy --to` asks whether a NAR it is about to upload is already here: only uploaders see the spool.
      gate.authorize(c.req.header('authorization'), 'write');
      const stat = spool.stat(file);
      if (!stat) throw notFound(`nar/${file}`);
      const contentType = spooled[2] === '.zst' ? 'application/zstd' : spooled[2] === '.xz' ? 'application/x-xz' : 'application/x-nix-nar';
      const headers = { 'content-type': contentType, 'content-length': String(stat.bytes) };
      if (c.req.method === 'HEAD') return c.body(null, 200, headers);
      return new Response(responseBody((async function* () { yield* spool.read(file); })(), streamError(file)), { status: 200, headers });
    }
    const match = SERVED_NAR_PATTERN.exec(`nar/${file}`);
    if (!match) throw notFound(`nar/${file}`);
    const actor = gate.authorize(c.req.header('authorization'), 'read');
    const [, hashPart, narHash32, zst] = match;
    const info = coordinator.castore.getStorePathByHashPart(hashPart!);
    if (!info || info.narHash !== `sha256:${narHash32}` || !gate.mayRead(actor, info.storePath)) throw notFound(`nar/${file}`);
    if (zst) {
      const headers = { 'content-type': 'application/zstd' };
      if (c.req.method === 'HEAD') return c.body(null, 200, headers);
      return new Response(responseBody(zstdCompress(exportNar(coordinator.castore, info.root)), streamError(file)), { status: 200, headers });
    }
    const etag = `"${narHash32}"`;
    const size = info.narSize;
    const decision = decideRange(c.req.header('range'), size, c.req.header('if-range'), etag);
    const common = { 'content-type': 'application/x-nix-nar', 'accept-ranges': 'bytes', etag };
    if (decision.kind === 'unsatisfiable') return c.body(null, 416, { ...common, 'content-range': `bytes */${size}` });
    const { start, end } = decision.kind === 'partial' ? decision : { start: 0, end: size };
    const headers: Record<string, string> = { ...common, 'content-length': String(end - start) };
    if (decision.kind === 'partial') headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
    const status = decision.kind === 'partial' ? 206 : 200;
    if (c.req.method === 'HEAD') return c.body(null, status, headers);
    return new Response(responseBody(exportNar(coordinator.castore, info.root, { start, end }), streamError(file)), { status, headers });
  });

  app.put('/nar/:file', async (c) => {
    gate.authorize(c.req.header('authorization'), 'write');
    const file = c.req.param('file');
    if (!SPOOL_NAME_PATTERN.test(file)) {
      if (/\.nar\.(bz2|br|gz|lz4|lzip)$/.test(file)) {
        throw new FerryError('UNSUPPORTED_COMPRESSION', `${file}: only xz (Nix's default), zstd and uncompressed NARs are accepted (nix copy --to '…/nix-cache', '…?compression=zstd' or '…?compression=none')`);
      }
      throw new FerryError('BAD_NAR_NAME', `'nar/${file}' is not ${SPOOL_NAME_DESCRIPTION}`);
    }
    const lengthHeader = c.req.header('content-length');
    const declared = lengthHeader === undefined ? undefined : Number(lengthHeader);
    const body = (c.req.raw.body as AsyncIterable<Uint8Array> | null) ?? (async function* () {})();
    const { bytes } = await spool.receive(file, body, declared !== undefined && Number.isFinite(declared) ? declared : undefined);
    return c.text(`spooled nar/${file} (${bytes} bytes)\n`, 200);
  });

  app.put('/:file', async (c) => {
    const actor = gate.authorize(c.req.header('authorization'), 'write')!;
    const match = NARINFO_PATTERN.exec(c.req.param('file'));
    if (!match) throw new FerryError('UNSUPPORTED_UPLOAD', `'${c.req.param('file')}': only NARs and narinfos are accepted`);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(await readBoundedBody(c, MAX_NARINFO_BYTES));
    } catch (error) {
      if (error instanceof FerryError) throw error;
      throw new FerryError('BAD_NARINFO', 'narinfo is not UTF-8 text');
    }
    const result = await uploads.accept(actor, match[1]!, text);
    return c.text(result.registered ? `registered ${result.storePath} (audit event ${result.seq})\n` : `${result.storePath} was already registered\n`, 200);
  });

  app.all('*', (c) => {
    throw new FerryError('NOT_FOUND', `no route ${requestWhere(c)} in the Nix cache`);
  });
  return app;
}
