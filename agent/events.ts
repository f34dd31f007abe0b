/**
 * The agent's recent events: a bounded ring kept on disk (JSON lines), so
 * `ferry agent status` can say what happened, also across restarts; each
 * is also handed to `echo` (the daemon's log, e.g. the journal).
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

export interface AgentEvent {
  at: number;
  kind: string;
  message: string;
  configId?: string | null;
}

const KEEP = 200;

export class EventRing {
  private count: number;

  constructor(
    private readonly file: string,
    private readonly echo?: (event: AgentEvent) => void,
  ) {
    this.count = this.read().length;
  }

  read(): AgentEvent[] {
    if (!existsSync(this.file)) return [];
    return readFileSync(this.file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as AgentEvent];
        } catch {
          return []; // a line cut by a crash
        }
      });
  }

  add(kind: string, message: string, configId?: string | null): AgentEvent {
    const event: AgentEvent = { at: Date.now(), kind, message, ...(configId !== undefined ? { configId } : {}) };
    appendFileSync(this.file, `${JSON.stringify(event)}\n`);
    this.echo?.(event);
    if (++this.count > 2 * KEEP) {
      const kept = this.read().slice(-KEEP);
      writeFileSync(this.file, kept.map((entry) => `${JSON.stringify(entry)}\n`).join(''));
      this.count = kept.length;
    }
    return event;
  }
}
