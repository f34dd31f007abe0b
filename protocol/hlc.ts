/**
 * Hybrid logical clocks: (wall ms, counter, node id). They order events
 * from a coordinator and from agents that were offline and report later:
 * an event's HLC is after everything its author had seen when it happened,
 * even if wall clocks disagree. Compared as tuples; encoded as a string
 * that sorts the same way: `<wall ms, 13 digits>-<counter, 6 digits>-<node>`.
 */
import { z } from 'zod';

export interface Hlc {
  wall: number;
  counter: number;
  node: string;
}

const HLC_PATTERN = /^(\d{13})-(\d{6})-([A-Za-z0-9._:-]{1,80})$/;

export const HlcStringSchema = z.string().regex(HLC_PATTERN, 'expected an HLC timestamp like 1764000000000-000000-node');

export function formatHlc(hlc: Hlc): string {
  return `${String(hlc.wall).padStart(13, '0')}-${String(hlc.counter).padStart(6, '0')}-${hlc.node}`;
}

/** Parses an HLC string; refuses malformed ones with a RangeError naming the input. */
export function parseHlc(text: string): Hlc {
  const match = HLC_PATTERN.exec(text);
  if (!match) throw new RangeError(`'${text}' is not an HLC timestamp`);
  return { wall: Number(match[1]), counter: Number(match[2]), node: match[3]! };
}

export function compareHlc(a: Hlc, b: Hlc): number {
  return a.wall - b.wall || a.counter - b.counter || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);
}

/** Largest drift accepted from a remote clock before its timestamp is refused as absurd. */
export const MAX_HLC_DRIFT_MS = 24 * 60 * 60 * 1000;

export class HlcClock {
  private last: Hlc;

  constructor(
    readonly node: string,
    private readonly now: () => number = Date.now,
    last?: Hlc,
  ) {
    this.last = last ?? { wall: 0, counter: 0, node };
  }

  /** A timestamp for a local event, after every timestamp issued or received before. */
  tick(): Hlc {
    const wall = this.now();
    this.last =
      wall > this.last.wall ? { wall, counter: 0, node: this.node } : { wall: this.last.wall, counter: this.last.counter + 1, node: this.node };
    return this.last;
  }

  /**
   * Merges a timestamp received from elsewhere (e.g. an agent's offline
   * event), so the next local tick orders after it. Refuses timestamps more
   * than MAX_HLC_DRIFT_MS ahead of the local clock.
   */
  receive(remote: Hlc): Hlc {
    const wall = this.now();
    if (remote.wall > wall + MAX_HLC_DRIFT_MS) {
      throw new RangeError(`remote HLC ${formatHlc(remote)} is more than a day ahead of this clock`);
    }
    const maxWall = Math.max(wall, this.last.wall, remote.wall);
    let counter = 0;
    if (maxWall === this.last.wall && maxWall === remote.wall) counter = Math.max(this.last.counter, remote.counter) + 1;
    else if (maxWall === this.last.wall) counter = this.last.counter + 1;
    else if (maxWall === remote.wall) counter = remote.counter + 1;
    this.last = { wall: maxWall, counter, node: this.node };
    return this.last;
  }
}
