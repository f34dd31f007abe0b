/**
 * Pack maintenance: after blobs are deleted (GC) or adopted (an agent's
 * store files), packs no blob lives in are deleted and sparse ones
 * rewritten with only their live blobs.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { Digest } from '../node.js';
import { endIngest, forgetIngest, registerIngest } from './ingest-registry.js';
import type { LocalContext } from './local-context.js';
import { packPath, PackWriter } from './pack-files.js';

/** A pack whose live bytes fall below this share of its size is rewritten. */
const COMPACT_BELOW = 0.5;

/**
 * Deletes packs no blob lives in any more and rewrites sparse ones: live
 * blobs are copied to a new pack (fsynced), their rows moved to it in one
 * transaction, then the old file is deleted. A failure leaves every blob
 * readable where its row says (the new pack is discarded).
 */
export function maintainPacks(context: LocalContext): { removed: number; compacted: number } {
  const { db, dataDir, packs } = context;
  const usage = db
    .prepare<[], { id: string; size: number; live: number }>(
      'SELECT p.id, p.size, COALESCE(SUM(b.size), 0) AS live FROM packs p LEFT JOIN blobs b ON b.pack = p.id GROUP BY p.id',
    )
    .all();
  let removed = 0;
  let compacted = 0;
  for (const pack of usage) {
    if (pack.live > 0 && pack.live >= pack.size * COMPACT_BELOW) continue;
    if (pack.live > 0) {
      const rows = db.prepare<[string], { id: Digest; size: number; offset: number }>('SELECT id, size, pack_offset AS offset FROM blobs WHERE pack = ? ORDER BY pack_offset').all(pack.id);
      const writer = new PackWriter(dataDir, `gc-${randomBytes(8).toString('hex')}`);
      // Registered like an ingest while it is written: another process's stale-file cleanup then
      // leaves the new pack alone, and finds it (the row left dead) if this process crashes.
      registerIngest(context, writer.packId);
      try {
        const moved: { id: Digest; offset: number }[] = [];
        // A few MiB at a time: a pack can hold a whole closure.
        for (let start = 0; start < rows.length; start += 256) {
          const chunk = rows.slice(start, start + 256);
          const offsets = writer.append(chunk.map((row) => packs.read(pack.id, row.offset, row.size, row.id)));
          chunk.forEach((row, index) => moved.push({ id: row.id, offset: offsets[index]! }));
        }
        writer.finish();
        db.transaction(() => {
          db.prepare('INSERT INTO packs (id, size, created_at) VALUES (?, ?, ?)').run(writer.packId, writer.size, context.clock());
          const move = db.prepare('UPDATE blobs SET pack = ?, pack_offset = ? WHERE id = ? AND pack = ?');
          for (const row of moved) move.run(writer.packId, row.offset, row.id, pack.id);
          db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
          forgetIngest(context, writer.packId);
        }).immediate();
      } catch (error) {
        writer.discard();
        forgetIngest(context, writer.packId);
        throw error;
      } finally {
        endIngest(writer.packId);
      }
      compacted++;
    } else {
      db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
      removed++;
    }
    packs.forget(pack.id);
    rmSync(packPath(dataDir, pack.id), { force: true });
  }
  return { removed, compacted };
}
