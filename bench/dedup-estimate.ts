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
 * And the same three after reference normalization (issue 20,
 * castore/references): each file's hash parts of its store path's
 * references and of the path itself replaced by the placeholder, on both
 * sides, so what is compared and sent is the normalized bytes:
 *   - normalized per file: every file whose normalized bytes are in no
 *     normalized file of the base;
 *   - normalized + same-offset 16 KiB groups against the previous version's
 *     normalized bytes;
 *   - normalized + CDC: chunks of the normalized bytes missing from every
 *     chunk of the base's normalized files.
 * Besides them, the site lists (format 1) the new closure's files carry:
 * all of them, and those that differ from the previous version's list when
 * a path's hash parts are ordered [itself, then its references by name].
 *
 *   npx tsx bench/dedup-estimate.ts                          # all three variants
 *   npx tsx bench/dedup-estimate.ts mass-rebuild             # one (comma-separated list)
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { compress } from 'zstd-napi';
import { encodeReferenceSites, HashPartSet, normalizeReferences } from '../castore/references/index.js';
import { parseStorePath } from '../nix/index.js';
import { buildRealCorpus, regularFiles, type RealCorpus, type RealCorpusPath, type RealCorpusVariant } from './fixtures/real-corpus.js';

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
const moved = (): Moved => ({ raw: 0, zstd: 0 });
const mb = (m: Moved): string => `${(m.raw / 1e6).toFixed(3)} / ${(m.zstd / 1e6).toFixed(3)}`;

/**
 * A path's hash parts in the order whose indices the site lists use: its own,
 * then its references (without itself) by name, then path. By name, not by
 * path: a rebuild changes every hash, and an order by hash would renumber
 * the refs, so the same binary's site list would differ for nothing.
 */
function hashPartsOf(p: RealCorpusPath): HashPartSet {
  const others = p.references.filter((r) => r !== p.path).map((r) => parseStorePath(r));
  others.sort((a, b) => (a.name === b.name ? (a.path < b.path ? -1 : 1) : a.name < b.name ? -1 : 1));
  return new HashPartSet([parseStorePath(p.path).hashPart, ...others.map((r) => r.hashPart)]);
}

interface FileForms {
  raw: Buffer;
  normalized: Uint8Array;
  /** The site list, format 1; undefined when the file has no site. */
  sites: Uint8Array | undefined;
}

function forms(file: string, set: HashPartSet): FileForms {
  const raw = readFileSync(file);
  const { normalized, refs } = normalizeReferences(raw, set);
  return { raw, normalized, sites: refs.length > 0 ? encodeReferenceSites(refs) : undefined };
}

/** The base, indexed: its files and CDC chunks, raw and normalized. */
interface BaseIndex {
  corpus: RealCorpus;
  files: Set<string>;
  chunks: Set<string>;
  normalizedFiles: Set<string>;
  normalizedChunks: Set<string>;
  byName: Map<string, RealCorpusPath>;
  sets: Map<string, HashPartSet>;
  siteBytes: number;
}

function indexBase(corpus: RealCorpus): BaseIndex {
  const index: BaseIndex = {
    corpus, files: new Set(), chunks: new Set(), normalizedFiles: new Set(), normalizedChunks: new Set(),
    byName: new Map(corpus.paths.map((p) => [p.name, p])), sets: new Map(), siteBytes: 0,
  };
  for (const p of corpus.paths) {
    const set = hashPartsOf(p);
    index.sets.set(p.path, set);
    for (const rel of regularFiles(p.path)) {
      const { raw, normalized, sites } = forms(path.join(p.path, rel), set);
      index.files.add(sha(raw));
      index.normalizedFiles.add(sha(normalized));
      const rawChunks = cdcChunks(raw).map(sha);
      for (const chunk of rawChunks) index.chunks.add(chunk);
      // A file with no site is its own normalized form: same chunks.
      for (const chunk of sites ? cdcChunks(normalized).map(sha) : rawChunks) index.normalizedChunks.add(chunk);
      index.siteBytes += sites?.length ?? 0;
    }
  }
  return index;
}

/** The 16 KiB groups of `now` that differ from `before` at the same offset (a one-group file goes whole). */
function changedGroups(now: Uint8Array, before: Uint8Array | undefined): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < now.length; at += GROUP) {
    const group = now.subarray(at, at + GROUP);
    // A one-group file is never a delta (blobs.delta needs two groups): it goes whole.
    if (now.length > GROUP && before && before.length >= at + group.length && Buffer.from(before.buffer, before.byteOffset + at, group.length).equals(group)) continue;
    out.push(group);
  }
  return out;
}

function add(m: Moved, parts: Uint8Array[]): void {
  m.raw += parts.reduce((n, p) => n + p.length, 0);
  m.zstd += zstd(parts);
}

async function estimate(base: BaseIndex, variant: RealCorpusVariant): Promise<Record<string, unknown>> {
  const other = await buildRealCorpus(variant);
  const perFile = moved();
  const groups = moved();
  const cdc = moved();
  const normalizedPerFile = moved();
  const normalizedGroups = moved();
  const normalizedCdc = moved();
  let changedFiles = 0;
  let normalizedChangedFiles = 0;
  let siteLists = 0;
  let siteBytes = 0;
  let changedSiteBytes = 0;
  for (const p of other.paths) {
    const was = base.byName.get(p.name);
    const set = hashPartsOf(p);
    for (const rel of regularFiles(p.path)) {
      const now = forms(path.join(p.path, rel), set);
      let before: FileForms | undefined;
      try {
        before = was ? forms(path.join(was.path, rel), base.sets.get(was.path)!) : undefined;
      } catch {
        before = undefined;
      }
      if (now.sites) {
        siteLists++;
        siteBytes += now.sites.length;
        if (!before?.sites || !Buffer.from(before.sites).equals(now.sites)) changedSiteBytes += now.sites.length;
      }
      if (!base.files.has(sha(now.raw))) {
        changedFiles++;
        add(perFile, [now.raw]);
        add(groups, changedGroups(now.raw, before?.raw));
        add(cdc, cdcChunks(now.raw).filter((chunk) => !base.chunks.has(sha(chunk))));
      }
      if (!base.normalizedFiles.has(sha(now.normalized))) {
        normalizedChangedFiles++;
        add(normalizedPerFile, [now.normalized]);
        add(normalizedGroups, changedGroups(now.normalized, before?.normalized));
        add(normalizedCdc, cdcChunks(now.normalized).filter((chunk) => !base.normalizedChunks.has(sha(chunk))));
      }
    }
  }
  const result = {
    variant, storePaths: other.paths.length, narBytes: other.narBytes,
    changedFiles, perFile, groups, cdc,
    normalizedChangedFiles, normalizedPerFile, normalizedGroups, normalizedCdc,
    siteLists, siteBytes, changedSiteBytes,
  };
  process.stderr.write(
    `| ${variant} | ${changedFiles} | ${mb(perFile)} | ${mb(groups)} | ${mb(cdc)} | ${normalizedChangedFiles} | ${mb(normalizedPerFile)} | ${mb(normalizedGroups)} | ${mb(normalizedCdc)} | ${siteLists} / ${(siteBytes / 1e3).toFixed(1)} kB / ${(changedSiteBytes / 1e3).toFixed(1)} kB |\n`,
  );
  return result;
}

async function main(): Promise<void> {
  const started = performance.now();
  const base = indexBase(await buildRealCorpus('base'));
  process.stderr.write(`base indexed in ${((performance.now() - started) / 1000).toFixed(1)} s (site lists: ${(base.siteBytes / 1e3).toFixed(1)} kB)\n`);
  const variants = (process.argv[2]?.split(',') ?? ['app-change', 'ten-percent', 'mass-rebuild']) as RealCorpusVariant[];
  for (const variant of variants) process.stdout.write(`${JSON.stringify(await estimate(base, variant))}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
