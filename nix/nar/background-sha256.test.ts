import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BackgroundSha256 } from './background-sha256.js';

async function hashInChunks(data: Buffer, chunkSize: number, reuseBuffer: boolean): Promise<string> {
  const hash = new BackgroundSha256();
  const scratch = Buffer.alloc(chunkSize);
  for (let offset = 0; offset < data.length; offset += chunkSize) {
    const piece = data.subarray(offset, offset + chunkSize);
    if (reuseBuffer) {
      // The caller reuses one buffer: what was passed must have been copied or hashed already.
      piece.copy(scratch);
      await hash.update(scratch.subarray(0, piece.length));
      scratch.fill(0xee);
    } else {
      await hash.update(piece);
    }
  }
  return Buffer.from(await hash.digest()).toString('hex');
}

describe('BackgroundSha256', () => {
  it('equals SHA-256 for inline-sized and worker-sized inputs, with reused caller buffers', async () => {
    for (const size of [0, 1, 1_000_000, 4 * 1024 * 1024 - 1, 4 * 1024 * 1024, 50 * 1024 * 1024 + 3]) {
      const data = randomBytes(size);
      const expected = createHash('sha256').update(data).digest('hex');
      expect(await hashInChunks(data, 1 << 20, true), `size ${size}`).toBe(expected);
      expect(await hashInChunks(data, 65_537, false), `size ${size}`).toBe(expected);
    }
  });

  it('hashes several streams at once on the shared worker without mixing them up', async () => {
    const inputs = Array.from({ length: 4 }, () => randomBytes(9 * 1024 * 1024));
    const digests = await Promise.all(inputs.map((data) => hashInChunks(data, 1 << 20, false)));
    expect(digests).toEqual(inputs.map((data) => createHash('sha256').update(data).digest('hex')));
  });

  it('lets the process exit after a digest, and after an abandoned hash (the worker never holds it)', () => {
    const script = `
      import { BackgroundSha256 } from './nix/nar/background-sha256.ts';
      const big = new BackgroundSha256();
      for (let i = 0; i < 10; i++) await big.update(new Uint8Array(1 << 20));
      const digest = await big.digest();
      const dropped = new BackgroundSha256();
      for (let i = 0; i < 10; i++) await dropped.update(new Uint8Array(1 << 20));
      dropped.abandon();
      console.log(Buffer.from(digest).toString('hex'));
    `;
    const output = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(output.trim()).toBe(createHash('sha256').update(Buffer.alloc(10 << 20)).digest('hex'));
  });
});
