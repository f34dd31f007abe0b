import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalCastore } from './local/local-castore.js';
import { MemoryCastore } from './memory/memory-castore.js';
import { openCastore } from './open-castore.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('openCastore', () => {
  it('opens the backend its address names', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-open-castore-'));
    const dataDir = path.join(dir, 'with space', 'castore');
    const local = openCastore(`local://${encodeURI(dataDir)}`, { clock: () => 42 });
    try {
      expect(local).toBeInstanceOf(LocalCastore);
      expect((local as LocalCastore).dataDir).toBe(dataDir);
      expect(existsSync(path.join(dataDir, 'castore.db'))).toBe(true);
      expect(local.clock()).toBe(42);
    } finally {
      local.close();
    }
    const memory = openCastore('memory:');
    expect(memory).toBeInstanceOf(MemoryCastore);
    expect(await memory.blobs.missing([])).toEqual([]);
    memory.close();
  });

  it('refuses what is not an address it knows, naming it, before touching anything', () => {
    for (const address of ['/var/lib/ferry/castore', 'local:relative/path', 'local://host/path', 'local:///x?mode=ro', 'memory:x', 'redb:///x', 's3://bucket/prefix', 'postgres://db']) {
      expect(() => openCastore(address), address).toThrow(expect.objectContaining({ code: 'STORE_ADDRESS_INVALID', message: expect.stringContaining(JSON.stringify(address)) }));
    }
    expect(() => openCastore('s3://bucket/prefix')).toThrow(/not built yet/);
  });
});
