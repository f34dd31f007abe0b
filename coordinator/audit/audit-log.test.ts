import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Identity } from '../../protocol/identity.js';
import { bootstrap } from '../../test/fleet-simulator.js';
import { Coordinator } from '../coordinator.js';
import * as commands from '../domain/commands.js';
import type { AuditEvent } from '../domain/events.js';
import { eventHash } from './chain.js';

let dir: string;
let coordinator: Coordinator;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-audit-log-'));
  // bootstrap records 2 events: the third, the one each test appends, is due a checkpoint.
  coordinator = Coordinator.open(dir, { checkpointEvery: 3 });
});
afterEach(() => {
  coordinator.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('AuditLog.append: the event, its state change and what it publishes commit together, or none does', () => {
  it('a publish that throws leaves no event, no state change, no checkpoint, and the head where it was', () => {
    const { adminActor } = bootstrap(coordinator);
    const heard: AuditEvent[] = [];
    coordinator.commits.subscribe((event) => heard.push(event));
    const head = coordinator.audit.lastSeq;
    expect(coordinator.audit.checkpoints()).toEqual([]);
    const viewer = Identity.generate();
    let published = false;
    expect(() =>
      coordinator.execute(adminActor, (context) => ({
        draft: commands.addKey(context, { keyId: viewer.keyId, role: 'viewer' }),
        result: undefined,
        publish: () => {
          published = true;
          throw new Error('the castore refused the commit');
        },
      })),
    ).toThrow(/castore refused/);
    expect(published).toBe(true);
    expect(coordinator.audit.lastSeq).toBe(head);
    expect(coordinator.state.get('keys', viewer.keyId)).toBeUndefined();
    expect(coordinator.audit.storedEvents(head, Number.MAX_SAFE_INTEGER, 10)).toEqual([]);
    expect(coordinator.audit.checkpoints()).toEqual([]);
    expect(heard).toEqual([]);

    // The next append chains from the same head, and the log still verifies.
    const previous = coordinator.audit.storedEvents(head - 1, head, 1)[0]!;
    const event = coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: viewer.keyId, role: 'viewer' }))!;
    expect(event).toMatchObject({ seq: head + 1, prevHash: previous.hash });
    expect(heard).toEqual([event]);
    expect(coordinator.audit.checkpoints()).toEqual([{ seq: head + 1, hash: event.hash, signature: expect.any(String) }]);
    expect(coordinator.state.get('keys', viewer.keyId)).toMatchObject({ role: 'viewer', addedSeq: head + 1 });
  });

  it('a decision of "nothing to record" appends nothing; an appended event is stored as returned and hashed as verification hashes it', async () => {
    const { adminActor } = bootstrap(coordinator);
    const head = coordinator.audit.lastSeq;
    expect(coordinator.audit.append(adminActor, () => undefined, () => expect.unreachable('nothing to apply'))).toBeUndefined();
    expect(coordinator.audit.lastSeq).toBe(head);
    const applied: AuditEvent[] = [];
    const viewer = Identity.generate();
    const appended = coordinator.audit.append(
      adminActor,
      () => ({ draft: commands.addKey(coordinator.commandContext(adminActor), { keyId: viewer.keyId, role: 'viewer' }), result: 'done' }),
      (event) => applied.push(event),
    )!;
    expect(appended.result).toBe('done');
    expect(applied).toEqual([appended.event]);
    expect(coordinator.audit.storedEvents(head, head + 1, 1)).toEqual([appended.event]);
    expect(eventHash(appended.event)).toBe(appended.event.hash);
    expect(coordinator.audit.firstOf('key.add')?.seq).toBeLessThan(appended.event.seq);
    expect(await coordinator.audit.verify()).toMatchObject({ ok: true, verifiedThrough: coordinator.audit.lastSeq });
  });
});

describe('AuditLog.verifyAfter: a check of what was appended since the last one', () => {
  it('resumes where a run got to, finds a break after it, and trusts the prefix (only a full run finds an edit there)', async () => {
    const { adminActor } = bootstrap(coordinator);
    for (let i = 0; i < 4; i++) coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer' }));
    const first = await coordinator.audit.verifyAfter({ seq: 0, hash: '0'.repeat(64) });
    expect(first.report).toMatchObject({ ok: true, verifiedThrough: 6 });
    expect(first.reached).toEqual({ seq: 6, hash: coordinator.audit.storedEvents(5, 6, 1)[0]!.hash });
    for (let i = 0; i < 3; i++) coordinator.record(adminActor, (context) => commands.addKey(context, { keyId: Identity.generate().keyId, role: 'viewer' }));
    const next = await coordinator.audit.verifyAfter(first.reached);
    // 3 events checked, and the checkpoint at 9 (every 3) with them.
    expect(next.report).toMatchObject({ ok: true, verifiedThrough: 9, lastCheckpoint: { seq: 9 } });

    const sqlite = coordinator.database.sqlite;
    sqlite.exec('DROP TRIGGER audit_events_no_update');
    sqlite.prepare("UPDATE audit_events SET subject = 'forged' WHERE seq IN (2, 8)").run();
    expect((await coordinator.audit.verifyAfter(first.reached)).report).toMatchObject({ ok: false, firstBad: { seq: 8 }, verifiedThrough: 7 });
    expect((await coordinator.audit.verifyAfter(first.reached)).reached.seq).toBe(7);
    expect(await coordinator.audit.verify()).toMatchObject({ ok: false, firstBad: { seq: 2 } });
    // Resuming from a position the log does not hold (another hash) is a broken link, not a pass.
    expect((await coordinator.audit.verifyAfter({ seq: 6, hash: 'f'.repeat(64) })).report).toMatchObject({ ok: false, firstBad: { seq: 7 } });
  });
});
