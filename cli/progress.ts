/**
 * Progress for long work: a redrawn line on a terminal, plain lines at a
 * modest rate otherwise (CI logs, pipes), nothing when quiet.
 */
import { term, type TerminalOutput } from './terminal-text.js';

export interface Progress {
  update(done: number, total?: number, detail?: string): void;
  done(message?: string): void;
}

/** Carriage return, then erase to the end of the line (CSI K): how a terminal's progress line is redrawn. */
const CLEAR_LINE = '\r\x1b[K';

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/**
 * `unit` is 'bytes' (sizes and rates shown in KiB/MiB…) or the noun of what
 * is counted ('objects'). The first line appears only after one interval, so
 * quick work prints nothing.
 */
export function createProgress(
  stream: TerminalOutput,
  label: string,
  unit = 'bytes',
  quiet = false,
): Progress {
  const format = (value: number): string => (unit === 'bytes' ? formatBytes(value) : `${Math.round(value)}`);
  const started = Date.now();
  let last = started;
  const tty = stream.raw.isTTY === true;
  const interval = tty ? 100 : 5000;
  return {
    update(done, total, detail) {
      if (quiet) return;
      const now = Date.now();
      if (now - last < interval) return;
      last = now;
      const seconds = (now - started) / 1000;
      const rate = seconds > 0 ? done / seconds : 0;
      const eta = total && rate > 0 ? ` ETA ${Math.max(0, Math.ceil((total - done) / rate))}s` : '';
      const amount = `${format(done)}${total ? ` / ${format(total)}` : ''}${unit === 'bytes' ? '' : ` ${unit}`}`;
      // The label and the detail (a store path's name, a file name) are escaped like any value; the
      // redraw sequence is the one control this module writes itself, straight to the raw stream.
      const line = term`${label}: ${amount}${rate ? ` (${format(rate)}${unit === 'bytes' ? '' : ` ${unit}`}/s)` : ''}${eta}${detail ? ` ${detail}` : ''}`;
      if (tty) stream.raw.write(CLEAR_LINE);
      stream.write(tty ? line : term`${line}\n`);
    },
    done(message) {
      if (quiet) return;
      if (tty) stream.raw.write(CLEAR_LINE);
      if (message) stream.write(term`${message}\n`);
    },
  };
}
