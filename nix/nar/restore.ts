/** NAR -> file tree, as `nix-store --restore` does, but all-or-nothing. */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, open, rename, rm, symlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { NixError } from '../errors.js';
import { decodeNar } from './decode.js';
import type { NarLimits } from './events.js';

/**
 * Unpacks a NAR into the new path `target` (a directory, file or symlink,
 * whatever the NAR's root is). Refuses to overwrite anything that exists.
 * The tree is built under a temporary sibling name and renamed into place
 * at the end, so a NAR refused half-way (see decodeNar) or an I/O error
 * leaves nothing behind. Names were validated by the decoder, so no entry
 * can land outside `target`.
 */
export async function restoreNar(source: AsyncIterable<Uint8Array>, target: string, limits: Partial<NarLimits> = {}): Promise<void> {
  const destination = path.resolve(target);
  if (existsSync(destination) || (await lstat(destination).catch(() => undefined))) {
    throw new NixError('PATH_EXISTS', `'${target}' already exists; restore only creates new paths`);
  }
  const staging = path.join(path.dirname(destination), `.${path.basename(destination)}.ferry-restore-${randomBytes(6).toString('hex')}`);
  const where = (entryPath: string): string => (entryPath === '' ? staging : path.join(staging, entryPath));
  let handle: FileHandle | undefined;
  try {
    for await (const event of decodeNar(source, limits)) {
      switch (event.type) {
        case 'directory':
          await mkdir(where(event.path), { mode: 0o755 });
          break;
        case 'file':
          handle = await open(where(event.path), 'wx', event.executable ? 0o755 : 0o644);
          break;
        case 'data': {
          let offset = 0;
          while (offset < event.chunk.length) offset += (await handle!.write(event.chunk, offset)).bytesWritten;
          break;
        }
        case 'file-end':
          await handle!.close();
          handle = undefined;
          break;
        case 'symlink':
          await symlink(event.target, where(event.path));
          break;
        case 'directory-end':
          break;
      }
    }
    await rename(staging, destination);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await chmod(staging, 0o755).catch(() => undefined);
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}
