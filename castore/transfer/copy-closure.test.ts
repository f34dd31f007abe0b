// The verified copy's cases (copy-closure.case.ts) between the backends that hold objects, both ways.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LocalCastore } from '../local/local-castore.js';
import { MemoryCastore } from '../memory/memory-castore.js';
import { describeCopyConformance } from './copy-closure.case.js';

/** A local castore in a temp directory, removed when it is closed. */
function openLocal(): { store: LocalCastore; close(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-copy-'));
  const store = LocalCastore.open(dir);
  return {
    store,
    close: () => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describeCopyConformance('local -> memory', () => {
  const local = openLocal();
  const target = new MemoryCastore();
  return {
    origin: local.store,
    source: local.store,
    target,
    close: () => {
      target.close();
      local.close();
    },
  };
});

describeCopyConformance('memory -> local', () => {
  const origin = new MemoryCastore();
  const local = openLocal();
  return {
    origin,
    source: origin,
    target: local.store,
    close: () => {
      origin.close();
      local.close();
    },
  };
});
