/**
 * The hashing thread of BackgroundSha256 (background-sha256.ts, started
 * through nix/runnable-module.ts): one SHA-256 per job, fed from the job's
 * shared ring; answers how many bytes it has hashed (so the ring's space is
 * reused) and, at the end, the digest.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { HashReply, HashRequest } from './background-sha256.js';

const port = parentPort!;
const jobs = new Map<number, { hash: Hash; ring: Uint8Array }>();

port.on('message', (message: HashRequest) => {
  if (message.ring) jobs.set(message.job, { hash: createHash('sha256'), ring: new Uint8Array(message.ring) });
  const job = jobs.get(message.job);
  if (!job) return;
  if (message.length) {
    const offset = message.offset ?? 0;
    job.hash.update(job.ring.subarray(offset, offset + message.length));
    port.postMessage({ job: message.job, hashed: message.length } satisfies HashReply);
  }
  if (message.end) {
    jobs.delete(message.job);
    if (!message.abandon) port.postMessage({ job: message.job, digest: job.hash.digest() } satisfies HashReply);
  }
});
