// The conformance suite (conformance.case.ts) run against every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LocalCastore } from '../local/local-castore.js';
import { MemoryCastore } from '../memory/memory-castore.js';
import { describeCastoreConformance } from './conformance.case.js';

describeCastoreConformance('local', (clock) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-conformance-'));
  const store = LocalCastore.open(dir, { clock });
  const close = store.close.bind(store);
  store.close = () => {
    close();
    rmSync(dir, { recursive: true, force: true });
  };
  return store;
});

describeCastoreConformance('memory', (clock) => new MemoryCastore({ clock }));
