/**
 * Child process of castore.bench.ts: ingests a NAR holding one 1 GiB file,
 * generated on the fly (never materialised), and prints its peak RSS.
 */
import { createCipheriv } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { LocalCastore, ingestNar } from '../castore/index.js';
import { encodeNar, type NarEvent } from '../nix/nar/index.js';
import { benchWorkDir } from './fixtures/big-closure.js';

const fileBytes = Number(process.env.BENCH_BIG_FILE_BYTES ?? 2 ** 30);

async function* oneBigFile(): AsyncGenerator<NarEvent> {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16));
  const zeros = Buffer.alloc(1 << 20);
  yield { type: 'directory', path: '' };
  yield { type: 'file', path: 'big', size: fileBytes, executable: false, offset: 0 };
  for (let done = 0; done < fileBytes; done += zeros.length) {
    yield { type: 'data', path: 'big', chunk: cipher.update(zeros.subarray(0, Math.min(zeros.length, fileBytes - done))) };
  }
  yield { type: 'file-end', path: 'big' };
  yield { type: 'directory-end', path: '' };
}

const dir = mkdtempSync(path.join(benchWorkDir, 'memory-'));
const store = LocalCastore.open(dir);
const start = process.hrtime.bigint();
const session = store.beginIngest();
await ingestNar(session, encodeNar(oneBigFile()));
session.commit();
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
store.close();
rmSync(dir, { recursive: true, force: true });
process.stdout.write(JSON.stringify({ fileBytes, seconds, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
