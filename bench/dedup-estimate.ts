/**
 * What each dedup granularity would move for the realistic corpus's
 * changes (issue 17: "Measure what each buys"), computed from the store
 * paths themselves, not from a transfer: for each variant against the base,
 * the bytes of
 *   - per-file dedup (what Ferry had): every file whose bytes are in no file
 *     of the base goes whole;
 *   - same-offset 16 KiB groups against the previous version of the same
 *     file (what `blobs.delta` does: the file at the same path in the store
 *     path of the same name);
 *   - content-defined chunks (FastCDC-style gear hash, 4/16/64 KiB
 *     min/average/max, as Attic chunks NARs) against every chunk of the base:
 *     what CDC would add, insertions included;
 * raw and compressed with zstd level 3 (each file's new bytes as one frame).
 *
 *   npx tsx bench/dedup-estimate.ts            # all three variants
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { compress } from 'zstd-napi';
import { buildRealCorpus, regularFiles, type RealCorpus, type RealCorpusVariant } from './fixtures/real-corpus.js';

const GROUP = 16 * 1024;
const CDC = { min: 4 * 1024, average: 16 * 1024, max: 64 * 1024 };

/** A deterministic gear table (mulberry32). */
const gear = (() => {
  const table = new Uint32Array(256);
  let state = 0x9e3779b9;
  for (let i = 0; i < 256; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    table[i] = (t ^ (t >>> 14)) >>> 0;
  }
  return table;
})();
/** Normalized chunking: a stricter mask before the average size, a looser one after (FastCDC). */
const MASK_SMALL = 0xfffc0000 >>> 0; // 14 bits
const MASK_LARGE = 0xfff00000 >>> 0; // 12 bits

function cdcChunks(bytes: Uint8Array): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let start = 0;
  while (start < bytes.length) {
    const end = Math.min(bytes.length, start + CDC.max);
    let cut = end;
    let hash = 0;
    for (let i = start + CDC.min; i < end; i++) {
      hash = ((hash << 1) + gear[bytes[i]!]!) >>> 0;
      const mask = i - start < CDC.average ? MASK_SMALL : MASK_LARGE;
      if ((hash & mask) === 0) {
        cut = i + 1;
        break;
      }
    }
    chunks.push(bytes.subarray(start, cut));
    start = cut;
  }
  return chunks;
}

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('base64');
const zstd = (parts: Uint8Array[]): number => {
  const total = parts.reduce((n, p) => n + p.length, 0);
  if (total === 0) return 0;
  return Math.min(total, compress(Buffer.concat(parts), { compressionLevel: 3 }).length);
};

interface Moved {
  raw: number;
  zstd: number;
}

async function estimate(base: RealCorpus, variant: RealCorpusVariant): Promise<Record<string, unknown>> {
  const other = await buildRealCorpus(variant);
  const baseFiles = new Set<string>();
  const baseChunks = new Set<string>();
  for (const p of base.paths) {
    for (const rel of regularFiles(p.path)) {
      const bytes = readFileSync(path.join(p.path, rel));
      baseFiles.add(sha(bytes));
      for (const chunk of cdcChunks(bytes)) baseChunks.add(sha(chunk));
    }
  }
  const baseByName = new Map(base.paths.map((p) => [p.name, p.path]));
  const perFile: Moved = { raw: 0, zstd: 0 };
  const groups: Moved = { raw: 0, zstd: 0 };
  const cdc: Moved = { raw: 0, zstd: 0 };
  let changedFiles = 0;
  for (const p of other.paths) {
    const was = baseByName.get(p.name);
    for (const rel of regularFiles(p.path)) {
      const now = readFileSync(path.join(p.path, rel));
      if (baseFiles.has(sha(now))) continue;
      changedFiles++;
      perFile.raw += now.length;
      perFile.zstd += zstd([now]);
      let before: Buffer | undefined;
      try {
        before = was ? readFileSync(path.join(was, rel)) : undefined;
      } catch {
        before = undefined;
      }
      const changedGroups: Uint8Array[] = [];
      for (let at = 0; at < now.length; at += GROUP) {
        const group = now.subarray(at, at + GROUP);
        // A one-group file is never a delta (blobs.delta needs two groups): it goes whole.
        if (now.length > GROUP && before && before.length >= at + group.length && before.subarray(at, at + group.length).equals(group)) continue;
        changedGroups.push(group);
      }
      groups.raw += changedGroups.reduce((n, g) => n + g.length, 0);
      groups.zstd += zstd(changedGroups);
      const newChunks = cdcChunks(now).filter((chunk) => !baseChunks.has(sha(chunk)));
      cdc.raw += newChunks.reduce((n, c) => n + c.length, 0);
      cdc.zstd += zstd(newChunks);
    }
  }
  return { variant, storePaths: other.paths.length, narBytes: other.narBytes, changedFiles, perFile, groups, cdc };
}

async function main(): Promise<void> {
  const base = await buildRealCorpus('base');
  const variants = (process.argv[2]?.split(',') ?? ['app-change', 'ten-percent', 'mass-rebuild']) as RealCorpusVariant[];
  for (const variant of variants) process.stdout.write(`${JSON.stringify(await estimate(base, variant))}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
