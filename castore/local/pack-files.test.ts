import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PackReader, PackWriter, packPath } from './pack-files.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('PackWriter', () => {
  it('appends more blobs than one writev takes, empty ones included, at the offsets it returns', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-pack-'));
    dirs.push(dir);
    const writer = new PackWriter(dir, 'p1');
    const blobs = Array.from({ length: 2500 }, (_, i) => Buffer.alloc(i % 7 === 0 ? 0 : (i * 37) % 900, i % 251));
    const first = writer.append(blobs.slice(0, 1));
    const rest = writer.append(blobs.slice(1));
    writer.finish();
    const offsets = [...first, ...rest];
    const total = blobs.reduce((sum, blob) => sum + blob.length, 0);
    expect(writer.size).toBe(total);
    expect(readFileSync(packPath(dir, 'p1')).length).toBe(total);
    const reader = new PackReader(dir);
    blobs.forEach((blob, i) => expect(reader.read('p1', offsets[i]!, blob.length, `blob ${i}`).equals(blob)).toBe(true));
    reader.close();
  });
});
