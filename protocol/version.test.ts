import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FERRY_VERSION } from './version.js';

describe('FERRY_VERSION', () => {
  it("is package.json's version", () => {
    const packageJson = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(FERRY_VERSION).toBe(packageJson.version);
  });
});
