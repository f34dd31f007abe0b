// writeAll through a slow reader: backpressure on every chunk, as when `ferry nar dump` writes to
// ssh on a slow link. Every wait must leave no listener behind (a leak once printed
// MaxListenersExceededWarning after 11 backpressured writes).
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { writeAll } from './io.js';

describe('writeAll', () => {
  it('waits for drain on every backpressured write and leaves no listener behind', async () => {
    let received = 0;
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        setTimeout(callback, 1);
      },
    });
    const listeners = () => ({ drain: slow.listenerCount('drain'), close: slow.listenerCount('close'), error: slow.listenerCount('error') });
    const before = listeners();
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      await writeAll(
        (async function* () {
          for (let i = 0; i < 40; i++) yield new Uint8Array(64 * 1024);
        })(),
        slow,
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      process.off('warning', onWarning);
    }
    expect(received).toBe(40 * 64 * 1024);
    expect(listeners()).toEqual(before);
    expect(warnings).not.toContain('MaxListenersExceededWarning');
  });
});
