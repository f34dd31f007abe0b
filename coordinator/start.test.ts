import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CoordinatorHttpClient } from '../protocol/http-client.js';
import { Coordinator } from './coordinator.js';
import { startCoordinator } from './start.js';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-start-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Info {
  quicPort: number | null;
  tlsFingerprint: string;
  lastSeq: number;
}

describe('startCoordinator', () => {
  it('serves a new data directory over HTTP and QUIC, advertises the QUIC port it got, and closes once', async () => {
    const running = await startCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, quic: { host: '127.0.0.1', port: 0 }, log: () => undefined });
    expect(Coordinator.exists(dir)).toBe(true);
    expect(running.quicPort).toBe(running.quic!.port);
    expect(running.coordinator.quicPort).toBe(running.quicPort);
    const info = await new CoordinatorHttpClient(running.url).get<Info>('/v1/info');
    expect(info).toMatchObject({ quicPort: running.quicPort, tlsFingerprint: running.coordinator.tls.fingerprint });
    const closing = running.close();
    expect(running.close()).toBe(closing);
    await closing;
    expect(running.coordinator.closed).toBe(true);
    await expect(fetch(`${running.url}/v1/info`)).rejects.toThrow();
  });

  it('with QUIC disabled, advertises none; the data directory reopens with what it recorded', async () => {
    const running = await startCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, quic: false, log: () => undefined });
    expect(running.quic).toBeUndefined();
    expect(running.quicPort).toBeNull();
    const self = { keyId: running.coordinator.identity.keyId, role: 'coordinator' as const };
    running.coordinator.record(self, () => ({ action: 'coordinator.init', subject: self.keyId, payload: { name: 'started', coordinatorKey: self.keyId } }));
    expect((await new CoordinatorHttpClient(running.url).get<Info>('/v1/info')).quicPort).toBeNull();
    await running.close();
    const reopened = Coordinator.open(dir);
    try {
      expect(reopened.name).toBe('started');
      // close signed a checkpoint of the head
      expect(reopened.checkpoints().at(-1)?.seq).toBe(reopened.lastSeq);
      expect(await reopened.verifyAudit()).toMatchObject({ ok: true, events: 1 });
    } finally {
      reopened.close();
    }
  });

  it('a listener that cannot start reports the error', async () => {
    const first = await startCoordinator({ dataDir: dir, listen: { host: '127.0.0.1', port: 0 }, quic: false, log: () => undefined });
    try {
      const port = Number(new URL(first.url).port);
      const other = path.join(dir, 'other');
      await expect(startCoordinator({ dataDir: other, listen: { host: '127.0.0.1', port }, quic: false, log: () => undefined })).rejects.toThrow(/EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});
