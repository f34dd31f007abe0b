import { describe, expect, it } from 'vitest';
import { compareHlc, formatHlc, HlcClock, parseHlc } from './hlc.js';

describe('hybrid logical clock', () => {
  it('ticks monotonically even when the wall clock goes back', () => {
    let now = 1000;
    const clock = new HlcClock('a', () => now);
    const first = clock.tick();
    now = 500;
    const second = clock.tick();
    expect(compareHlc(second, first)).toBeGreaterThan(0);
    expect(second).toEqual({ wall: 1000, counter: 1, node: 'a' });
  });

  it('orders after received remote timestamps', () => {
    const clock = new HlcClock('coord', () => 1000);
    const merged = clock.receive({ wall: 5000, counter: 3, node: 'agent' });
    expect(merged).toEqual({ wall: 5000, counter: 4, node: 'coord' });
    expect(compareHlc(clock.tick(), { wall: 5000, counter: 3, node: 'agent' })).toBeGreaterThan(0);
    expect(() => clock.receive({ wall: 1000 + 2 * 86_400_000, counter: 0, node: 'x' })).toThrow(/ahead/);
  });

  it('formats so that string order is HLC order', () => {
    const a = { wall: 999, counter: 12, node: 'n' };
    const b = { wall: 1000, counter: 1, node: 'n' };
    expect(formatHlc(a) < formatHlc(b)).toBe(true);
    expect(parseHlc(formatHlc(a))).toEqual(a);
    expect(() => parseHlc('yesterday')).toThrow(RangeError);
  });
});
