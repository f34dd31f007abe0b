// The error codes as a table: each has a meaning and a status that fits it,
// docs/errors.md lists exactly them, and a client reads an error body
// against the enum, keeping a code it does not know as it was sent.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, ErrorCodeSchema, FerryError, httpStatusOf, isSentErrorCode, readErrorBody } from './errors.js';

describe('the error codes', () => {
  it('give every code a one-line meaning and, unless only clients raise it, an HTTP error status', () => {
    expect(ErrorCodeSchema.options.length).toBeGreaterThan(50);
    for (const code of ErrorCodeSchema.options) {
      const { status, meaning } = ERROR_CODES[code];
      expect(code).toMatch(/^[A-Z][A-Z0-9_]{2,63}$/);
      expect(meaning, code).toMatch(/^\S.{10,200}$/);
      expect(meaning, code).not.toMatch(/\n/);
      if (status !== null) expect(status, code).toBeGreaterThanOrEqual(400);
    }
    expect(httpStatusOf('NOT_FOUND')).toBe(404);
    expect(httpStatusOf('INTERNAL')).toBe(500);
    expect(isSentErrorCode('UNREACHABLE')).toBe(false);
    expect(isSentErrorCode('UNKNOWN_CODE')).toBe(false);
  });

  it('are listed in docs/errors.md, each with its status and meaning, and nothing else is', () => {
    const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `([A-Z0-9_]+)` \| (\d{3}|—) \| (.+) \|$/gm)].map(([, code, status, meaning]) => ({ code, status, meaning }));
    const table = ErrorCodeSchema.options.map((code) => ({ code, status: String(ERROR_CODES[code].status ?? '—'), meaning: ERROR_CODES[code].meaning }));
    expect(rows).toEqual(table);
  });
});

describe('reading an error body', () => {
  it('reads a known code as itself', () => {
    expect(readErrorBody({ error: { code: 'HEAD_MOVED', message: 'moved', details: { head: 'abc' } } })).toEqual({
      code: 'HEAD_MOVED',
      sentCode: 'HEAD_MOVED',
      message: 'moved',
      details: { head: 'abc' },
    });
  });

  it('keeps a code it does not know (a newer coordinator’s) as sent, under UNKNOWN_CODE', () => {
    expect(readErrorBody({ error: { code: 'QUOTA_EXCEEDED', message: 'too many configs' } })).toEqual({
      code: 'UNKNOWN_CODE',
      sentCode: 'QUOTA_EXCEEDED',
      message: 'too many configs',
    });
  });

  it('is not an error body without a string code and message, or with an overlong code', () => {
    for (const value of [undefined, null, 'NOT_FOUND', {}, { error: 'NOT_FOUND' }, { error: { code: 404, message: 'x' } }, { error: { code: 'NOT_FOUND' } }, { error: { code: 'X'.repeat(65), message: 'x' } }]) {
      expect(readErrorBody(value), JSON.stringify(value)).toBeUndefined();
    }
  });
});

describe('FerryError', () => {
  it('carries its code, message, details and the code as sent', () => {
    const error = new FerryError('CONFLICT', 'already there', { details: { id: 'x' } });
    expect(error).toBeInstanceOf(Error);
    expect({ code: error.code, message: error.message, details: error.details, sentCode: error.sentCode }).toEqual({ code: 'CONFLICT', message: 'already there', details: { id: 'x' }, sentCode: 'CONFLICT' });
    expect(new FerryError('UNKNOWN_CODE', 'm', { sentCode: 'NEWER' }).sentCode).toBe('NEWER');
  });
});
