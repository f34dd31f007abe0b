/**
 * NAR -> castore: decodes a NAR stream (strictly: see nix/nar) into blobs
 * and directories, computing its NarHash and NarSize on the way. The NAR is
 * never held in memory: file contents flow into blob writers as they arrive.
 */
import { BackgroundSha256, decodeNar, encodeNixBase32, type NarEvent, type NarLimits } from '../nix/index.js';
import { CastoreError } from './errors.js';
import type { Entry, Node } from './node.js';
import type { HashPartSet } from './references/index.js';
import type { BlobWriter } from './services/blob-service.js';
import type { Ingest } from './services/castore-services.js';

export interface NarIngestResult {
  root: Node;
  /** `sha256:<nix32>` of the NAR bytes, as Nix records it. */
  narHash: string;
  narSize: number;
}

export interface NarIngestOptions {
  limits?: Partial<NarLimits>;
  /**
   * The hash parts of the store path this NAR is and of its references:
   * every regular file is then written reference-aware
   * (Ingest.templateWriter), so a file that embeds them is stored as its
   * normalized blob plus a template. Symlink targets are not normalized.
   */
  hashParts?: HashPartSet;
  /** Called with the number of NAR bytes consumed so far (for progress display). */
  onProgress?: (bytes: number) => void;
}

async function* hashing(
  source: AsyncIterable<Uint8Array>,
  sha256: BackgroundSha256,
  counter: { bytes: number },
  onProgress?: (bytes: number) => void,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    await sha256.update(chunk);
    counter.bytes += chunk.length;
    onProgress?.(counter.bytes);
    yield chunk;
  }
}

function baseName(entryPath: string): string {
  return entryPath.slice(entryPath.lastIndexOf('/') + 1);
}

/**
 * Ingests one NAR into `session` (nothing is visible until the session
 * commits). Refuses hostile or malformed NARs with the decoder's NixError
 * (code and byte offset); on any failure, the blob being written is
 * discarded and the caller should abort the session.
 */
export async function ingestNar(
  session: Ingest,
  source: AsyncIterable<Uint8Array>,
  options: NarIngestOptions = {},
): Promise<NarIngestResult> {
  const sha256 = new BackgroundSha256();
  const counter = { bytes: 0 };
  const stack: Entry[][] = [];
  let root: Node | undefined;
  let blob: BlobWriter | undefined;
  let fileMeta: { size: number; executable: boolean } | undefined;

  const place = (entryPath: string, node: Node): void => {
    const parent = stack[stack.length - 1];
    if (parent) parent.push({ ...node, name: baseName(entryPath) });
    else root = node;
  };

  try {
    const events: AsyncIterable<NarEvent> = decodeNar(hashing(source, sha256, counter, options.onProgress), options.limits);
    for await (const event of events) {
      switch (event.type) {
        case 'directory':
          stack.push([]);
          break;
        case 'directory-end':
          place(event.path, session.putDirectory(stack.pop()!));
          break;
        case 'file':
          blob = options.hashParts ? session.templateWriter(event.size, options.hashParts) : session.blobWriter(event.size);
          fileMeta = { size: event.size, executable: event.executable };
          break;
        case 'data':
          blob!.write(event.chunk);
          break;
        case 'file-end': {
          const digest = blob!.finish();
          blob = undefined;
          place(event.path, { type: 'file', digest, size: fileMeta!.size, executable: fileMeta!.executable });
          break;
        }
        case 'symlink':
          place(event.path, { type: 'symlink', target: event.target });
          break;
      }
    }
  } catch (error) {
    blob?.discard();
    sha256.abandon();
    throw error;
  }
  if (!root) {
    sha256.abandon();
    throw new CastoreError('INGEST_ABORTED', 'the NAR ended without a root node');
  }
  return { root, narHash: `sha256:${encodeNixBase32(await sha256.digest())}`, narSize: counter.bytes };
}
