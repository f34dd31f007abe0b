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

export function createProgress(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  label: string,
  format: (done: number, total?: number) => string = (done, total) => `${formatBytes(done)}${total ? ` / ${formatBytes(total)}` : ''}`,
  quiet = false,
): Progress {
  const started = Date.now();
  let last = 0;
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
      const line = `${label}: ${format(done, total)}${rate ? ` (${formatBytes(rate)}/s)` : ''}${eta}${detail ? ` ${detail}` : ''}`;
      stream.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    },
    done(message) {
      if (quiet) return;
      if (tty) stream.write('\r\x1b[K');
      if (message) stream.write(`${message}\n`);
    },
  };
}
