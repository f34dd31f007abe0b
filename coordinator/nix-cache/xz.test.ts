import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { procStatus, resetPeakRss } from '../../bench/harness.js';
import { decompress } from './decompress.js';
import { DecompressError, type DecompressErrorCode } from '../../protocol/compression/decompress-error.js';
import { chunksOf, collect, expectDecompressError, failure } from '../../test/decompress-helpers.js';
import { XZ_DICT_MAX_BYTES, XZ_OUTPUT_STEP_BYTES, xzDecompress } from './xz.js';
import { zstdCompress } from '../../protocol/compression/zstd.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Runs the `xz` CLI (XZ Utils, single-threaded) on `input`, as a shell pipeline's stdin when it is a string. */
function xzCli(args: string[], input: Uint8Array | { shell: string }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = 'shell' in input
      ? spawn('sh', ['-c', `${input.shell} | xz -T1 ${args.join(' ')} -c`], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('xz', ['-T1', ...args, '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`xz ${args.join(' ')} exited with ${code}: ${err}`))));
    if (!('shell' in input)) child.stdin!.end(input);
  });
}

const expectXzError = (error: unknown, code: DecompressErrorCode, what: string): DecompressError => expectDecompressError(error, 'xz', code, what);

describe('xzDecompress', () => {
  // First in this file: the WebAssembly memory the dictionary grows never shrinks, so only the first decompression shows its cost.
  it('refuses a bomb (1 GiB of zeros, 64 MiB dictionary, in ~150 KB) at its limit, in steps of 64 KiB, within the dictionary bound of memory', async () => {
    const bomb = await xzCli(['--lzma2=preset=0,dict=64MiB'], { shell: `head -c ${GiB} /dev/zero` });
    expect(bomb.length).toBeLessThan(300_000);

    const tight = await failure(xzDecompress(chunksOf(bomb), { maxOutputBytes: 1000, what: 'the bomb' }));
    const error = expectXzError(tight.error, 'DECOMPRESS_OUTPUT_LIMIT', 'the bomb');
    expect(error.limit).toBe(1000);
    expect(error.message).toBe('the bomb decompresses to more than its limit of 1000 bytes');
    expect(tight.yielded).toBeLessThanOrEqual(1000);

    // A limit past the dictionary, so that all of it is written: memory grows by the dictionary, not the output.
    const limit = 2 * XZ_DICT_MAX_BYTES;
    const resetWorked = resetPeakRss(process.pid);
    const before = procStatus(process.pid, resetWorked ? 'VmRSS' : 'VmHWM');
    const loose = await failure(xzDecompress(chunksOf(bomb, [16 * 1024]), { maxOutputBytes: limit, what: 'the bomb' }));
    const peak = procStatus(process.pid, 'VmHWM');
    expectXzError(loose.error, 'DECOMPRESS_OUTPUT_LIMIT', 'the bomb');
    expect(loose.yielded).toBeLessThanOrEqual(limit);
    expect(loose.yielded).toBeGreaterThan(limit - XZ_OUTPUT_STEP_BYTES);
    expect(loose.largestChunk).toBeLessThanOrEqual(XZ_OUTPUT_STEP_BYTES);
    const growth = peak - before;
    console.log(`xz bomb: ${bomb.length} bytes; ${(loose.yielded / MiB).toFixed(0)} MiB decompressed and refused; peak RSS +${(growth / MiB).toFixed(1)} MiB (${resetWorked ? 'peak reset by clear_refs' : 'peak since start'})`);
    // The dictionary (64 MiB here, all written), plus the 64 KiB output steps already passed on but not yet
    // garbage-collected (up to ~40 MiB: a bomb with Nix's 8 MiB dictionary measured +47 MiB at a 256 MiB limit).
    expect(growth, `peak RSS grew by ${(growth / MiB).toFixed(1)} MiB`).toBeLessThan(XZ_DICT_MAX_BYTES + 64 * MiB);
  }, 120_000);

  it('produces output only as the consumer pulls it', async () => {
    const compressed = await xzCli(['-6'], new Uint8Array(16 * MiB));
    let pulled = 0;
    const slices = (async function* () {
      for await (const slice of chunksOf(compressed, [16])) {
        pulled++;
        yield slice;
      }
    })();
    const iterator = xzDecompress(slices, { maxOutputBytes: 16 * MiB, what: 'zeros' });
    const first = await iterator.next();
    expect(first.done).toBe(false);
    expect(first.value!.length).toBeLessThanOrEqual(XZ_OUTPUT_STEP_BYTES);
    // A few 16-byte slices (headers, then the start of a long match), not the stream.
    expect(pulled).toBeLessThan(20);
    expect(Math.ceil(compressed.length / 16)).toBeGreaterThan(100);
    await iterator.return(undefined);
  });

  it('decompresses what XZ Utils writes byte-identically: any input slicing, several streams with padding, a limit of exactly its size', async () => {
    const text = Buffer.from('nix-archive-1 '.repeat(100_000));
    const random = randomBytes(MiB + 17);
    const expected = Buffer.concat([text, random]);
    // Nix's settings (preset 6, CRC64), and `xz -9` (the largest dictionary accepted, 64 MiB), CRC32.
    // And a multi-block stream, as liblzma's threaded encoder writes (Nix's `parallel-compression`).
    for (const args of [['-6', '--check=crc64'], ['-9', '--check=crc32'], ['-6', '-T2', '--block-size=262144']]) {
      const compressed = await xzCli(args, expected);
      for (const sizes of [[compressed.length], [1, 7, 4096, 65_536], [MiB]]) {
        const output = await collect(decompress(chunksOf(compressed, sizes), 'xz', { maxOutputBytes: expected.length, what: `xz ${args.join(' ')}` }));
        expect(output.equals(expected), `${args} ${sizes}`).toBe(true);
      }
    }
    const compressed = await xzCli(['-6'], expected);
    const oneShort = await failure(xzDecompress(chunksOf(compressed), { maxOutputBytes: expected.length - 1, what: 'one short' }));
    expectXzError(oneShort.error, 'DECOMPRESS_OUTPUT_LIMIT', 'one short');
    // The step that passes the limit is withheld whole: what was yielded is a prefix within the limit.
    expect(oneShort.yielded).toBeLessThanOrEqual(expected.length - 1);
    expect(oneShort.yielded).toBeGreaterThan(expected.length - 1 - XZ_OUTPUT_STEP_BYTES);

    // Two streams with stream padding between them, and empty chunks anywhere.
    const twoStreams = Buffer.concat([compressed, Buffer.alloc(8), await xzCli(['-0'], text)]);
    const withEmpties = (async function* () {
      yield new Uint8Array(0);
      for await (const chunk of chunksOf(twoStreams, [1000])) {
        yield chunk;
        yield new Uint8Array(0);
      }
    })();
    expect((await collect(xzDecompress(withEmpties, { maxOutputBytes: expected.length + text.length, what: 'two streams' }))).equals(Buffer.concat([expected, text]))).toBe(true);
    expect((await collect(xzDecompress(chunksOf(await xzCli([], new Uint8Array(0))), { maxOutputBytes: 0, what: 'empty stream' }))).length).toBe(0);
  }, 60_000);

  it('refuses corrupt and truncated input, a dictionary over 64 MiB and filters it lacks', async () => {
    const garbage = await failure(xzDecompress(chunksOf(Buffer.from('not xz at all, not even close')), { maxOutputBytes: MiB, what: 'garbage' }));
    expect(expectXzError(garbage.error, 'DECOMPRESS_CORRUPT', 'garbage').message).toMatch(/^garbage is not valid xz: it does not start with the xz magic bytes/);
    // zstd is not xz either.
    const zstd = await collect(zstdCompress(chunksOf(Buffer.from('hello'))));
    expectXzError((await failure(decompress(chunksOf(zstd), 'xz', { maxOutputBytes: MiB, what: 'zstd' }))).error, 'DECOMPRESS_CORRUPT', 'zstd');

    const random = randomBytes(MiB);
    const compressed = await xzCli(['-6'], random);
    const truncated = await failure(xzDecompress(chunksOf(compressed.subarray(0, compressed.length - 100)), { maxOutputBytes: 2 * MiB, what: 'cut short' }));
    expect(expectXzError(truncated.error, 'DECOMPRESS_TRUNCATED', 'cut short').message).toMatch(/ends inside an xz stream/);
    // Without its last bytes (the stream footer), all the data is there and still refused.
    expectXzError((await failure(xzDecompress(chunksOf(compressed.subarray(0, compressed.length - 4)), { maxOutputBytes: 2 * MiB, what: 'no footer' }))).error, 'DECOMPRESS_TRUNCATED', 'no footer');
    expectXzError((await failure(xzDecompress(chunksOf(new Uint8Array(0)), { maxOutputBytes: 0, what: 'nothing' }))).error, 'DECOMPRESS_TRUNCATED', 'nothing');

    const damaged = Buffer.from(compressed);
    damaged[damaged.length >> 1]! ^= 0xff; // inside the LZMA2 data: a corrupt stream or a failed CRC64
    expectXzError((await failure(xzDecompress(chunksOf(damaged), { maxOutputBytes: 2 * MiB, what: 'damaged' }))).error, 'DECOMPRESS_CORRUPT', 'damaged');

    const wide = await failure(xzDecompress(chunksOf(await xzCli(['--lzma2=preset=0,dict=128MiB'], Buffer.from('hello'))), { maxOutputBytes: MiB, what: 'dictionary 128 MiB' }));
    expect(expectXzError(wide.error, 'DECOMPRESS_CORRUPT', 'dictionary 128 MiB').message).toMatch(/dictionary exceeds the limit of 67108864 bytes/);
    expect((await collect(xzDecompress(chunksOf(await xzCli(['--lzma2=preset=0,dict=64MiB'], Buffer.from('hello'))), { maxOutputBytes: 5, what: 'dictionary 64 MiB' }))).toString()).toBe('hello');

    const bcj = await failure(xzDecompress(chunksOf(await xzCli(['--x86', '--lzma2'], Buffer.from('hello'))), { maxOutputBytes: MiB, what: 'bcj' }));
    expect(expectXzError(bcj.error, 'DECOMPRESS_CORRUPT', 'bcj').message).toMatch(/a filter other than LZMA2/);
  }, 60_000);

  it('hands the one xz decoder on whatever way a decompression ends: concurrent ones wait their turn', async () => {
    const data = randomBytes(2 * MiB);
    const compressed = await xzCli(['-1'], data);
    const whole = () => collect(xzDecompress(chunksOf(compressed, [65_536]), { maxOutputBytes: data.length, what: 'concurrent' }));
    const outputs = await Promise.all([whole(), whole(), whole()]);
    for (const output of outputs) expect(output.equals(data)).toBe(true);

    // Returned after one step, refused for its limit, refused as corrupt: each gives the decoder back.
    const returned = xzDecompress(chunksOf(compressed), { maxOutputBytes: data.length, what: 'returned' });
    expect((await returned.next()).done).toBe(false);
    await returned.return(undefined);
    await failure(xzDecompress(chunksOf(compressed), { maxOutputBytes: 1, what: 'over' }));
    await failure(xzDecompress(chunksOf(Buffer.from('garbage garbage')), { maxOutputBytes: 1, what: 'garbage' }));
    expect((await whole()).equals(data)).toBe(true);
  }, 60_000);

  it('requires a non-negative integer limit', async () => {
    await expect(collect(xzDecompress(chunksOf(new Uint8Array(0)), { maxOutputBytes: -1, what: 'x' }))).rejects.toThrow(RangeError);
    await expect(collect(decompress(chunksOf(new Uint8Array(0)), 'xz', { maxOutputBytes: Number.NaN, what: 'x' }))).rejects.toThrow(RangeError);
  });
});
