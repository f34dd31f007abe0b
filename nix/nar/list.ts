/** Listing a NAR's entries without unpacking it (`nix nar ls -R`). */
import { decodeNar } from './decode.js';
import type { NarLimits } from './events.js';

export type NarEntry =
  | { path: string; type: 'directory' }
  | { path: string; type: 'regular'; size: number; executable: boolean; narOffset: number }
  | { path: string; type: 'symlink'; target: string };

/** Every entry of a NAR in NAR order; refuses hostile input as decodeNar does. */
export async function* listNar(source: AsyncIterable<Uint8Array>, limits: Partial<NarLimits> = {}): AsyncGenerator<NarEntry> {
  for await (const event of decodeNar(source, limits)) {
    if (event.type === 'directory') yield { path: event.path, type: 'directory' };
    else if (event.type === 'symlink') yield { path: event.path, type: 'symlink', target: event.target };
    else if (event.type === 'file') {
      yield { path: event.path, type: 'regular', size: event.size, executable: event.executable, narOffset: event.offset };
    }
  }
}
