/**
 * Progress for long work: a redrawn line on a terminal, plain lines at a
 * modest rate otherwise (CI logs, pipes), nothing when quiet.
 */
export interface Progress {
  update(done: number, total?: number, detail?: string): void;
  done(message?: string): void;
}

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
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  label: string,
  unit = 'bytes',
  quiet = false,
): Progress {
  const format = (value: number): string => (unit === 'bytes' ? formatBytes(value) : `${Math.round(value)}`);
  const started = Date.now();
  let last = started;
  const tty = stream.isTTY === true;
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
      const line = `${label}: ${amount}${rate ? ` (${format(rate)}${unit === 'bytes' ? '' : ` ${unit}`}/s)` : ''}${eta}${detail ? ` ${detail}` : ''}`;
      stream.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    },
    done(message) {
      if (quiet) return;
      if (tty) stream.write('\r\x1b[K');
      if (message) stream.write(`${message}\n`);
    },
  };
}
