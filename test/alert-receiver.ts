/**
 * A webhook receiver for the alert tests: node:http on 127.0.0.1, which
 * verifies each alert with the coordinator key (protocol's verifyAlert,
 * as a receiver in TypeScript would) and answers as the test sets it: 200,
 * another status, or never (a hung receiver).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyAlert, type AlertPayload } from '../protocol/alerts.js';

export interface ReceivedAlert {
  /** The payload, when it verified; else undefined and `refusal` says why. */
  payload: AlertPayload | undefined;
  refusal: string | undefined;
  body: Buffer;
  signature: string | undefined;
  key: string | undefined;
}

export interface AlertReceiver {
  url: string;
  /** Every request, in order (the hung ones too, once their body arrived). */
  readonly received: ReceivedAlert[];
  /** Verified payloads of the requests answered 2xx. */
  readonly accepted: AlertPayload[];
  /** How the next requests are answered: an HTTP status, or 'hang' (never answered). */
  answer: number | 'hang';
  /** Resolves once `count` alerts were accepted (rejects after `timeoutMs`). */
  waitForAccepted(count: number, timeoutMs?: number): Promise<AlertPayload[]>;
  waitForReceived(count: number, timeoutMs?: number): Promise<ReceivedAlert[]>;
  close(): Promise<void>;
}

export async function startAlertReceiver(coordinatorKey: string, port = 0): Promise<AlertReceiver> {
  const received: ReceivedAlert[] = [];
  const accepted: AlertPayload[] = [];
  const hung: ServerResponse[] = [];
  const receiver = {
    url: '',
    received,
    accepted,
    answer: 200 as number | 'hang',
    waitForAccepted: (count: number, timeoutMs = 15_000) => waitFor(() => (accepted.length >= count ? accepted : undefined), timeoutMs, `${count} accepted alerts (got ${accepted.length})`),
    waitForReceived: (count: number, timeoutMs = 15_000) => waitFor(() => (received.length >= count ? received : undefined), timeoutMs, `${count} received alerts (got ${received.length})`),
    close: async () => {
      for (const response of hung) response.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      const signature = request.headers['ferry-signature'] as string | undefined;
      const key = request.headers['ferry-key'] as string | undefined;
      let payload: AlertPayload | undefined;
      let refusal: string | undefined;
      try {
        payload = verifyAlert({ body, signature, key, coordinatorKey });
      } catch (error) {
        refusal = (error as Error).message;
      }
      received.push({ payload, refusal, body, signature, key });
      const answer = receiver.answer;
      if (answer === 'hang') {
        hung.push(response);
        return;
      }
      if (payload && answer >= 200 && answer < 300) accepted.push(payload);
      response.writeHead(payload ? answer : 401).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/ferry?token=s3cret`;
  return receiver;
}

async function waitFor<T>(probe: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
