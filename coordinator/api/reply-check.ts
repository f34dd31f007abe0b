/**
 * The server's check of its own JSON replies against their routes'
 * descriptions (protocol/api: API_ROUTES, VIEWER_ROUTES), one for every app
 * that answers a described route: the HTTP API and the audit viewer. On in
 * tests (FERRY_CHECK_REPLIES=1, vitest.config.ts), off in production, where
 * it would cost a parse of every reply (docs/coordinator.md, "The API's
 * description").
 */
import type { z } from 'zod';
import { FerryError } from '../../protocol/errors.js';
import { firstIssue } from '../../protocol/api/routes.js';

/** Whether replies are checked when the caller does not say: FERRY_CHECK_REPLIES=1. */
export function checkRepliesByDefault(): boolean {
  return process.env.FERRY_CHECK_REPLIES === '1';
}

/**
 * Refuses (FerryError INTERNAL, naming route `name` and the field) a reply
 * that does not match `output`: a handler that drifted from its description
 * fails a test rather than a client in the field. The reply is sent as the
 * handler made it, never as the schema parses it.
 */
export function checkReply(name: string, output: z.ZodType, result: unknown): void {
  const checked = output.safeParse(result);
  if (!checked.success) {
    const { field, message } = firstIssue(checked.error);
    throw new FerryError('INTERNAL', `the reply of ${name} does not match its description: ${field}: ${message}`);
  }
}
