/**
 * Committed audit events, told to whoever listens in this process (the
 * agents' held watches: api/desired-watches.ts). Not a queue and not
 * durable: a listener learns what commits while it listens; what it missed
 * is in the log.
 */
import type { AuditEvent } from '../domain/events.js';

export type CommitListener = (event: AuditEvent) => void;

export class EventBus {
  private readonly listeners: CommitListener[] = [];

  /**
   * Calls `listener` with each event after its transaction commits, in
   * order, synchronously (before the command's caller gets its result). A
   * listener must not throw and must not record events itself.
   */
  subscribe(listener: CommitListener): void {
    this.listeners.push(listener);
  }

  /** Tells every listener about `event`; call once per event, after its commit, in seq order. */
  publish(event: AuditEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}
