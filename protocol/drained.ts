/** Waiting out backpressure without leaking listeners. */
import type { EventEmitter } from 'node:events';

/**
 * Resolves when a writable stream that refused a write has drained — or
 * closed, so a writer never waits forever on a dead stream. Removes both
 * listeners either way (a long transfer waits thousands of times; a race
 * of two `events.once` leaked the loser's listeners, with an 'error'
 * listener each, and printed MaxListenersExceededWarning on a slow pipe).
 */
export function drained(stream: EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
