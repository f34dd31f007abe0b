import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BLAKE3_COMPRESS_FILE, blake3CompressSource } from '../../scripts/generate-blake3-compress.js';

describe('compress.ts', () => {
  it('is exactly what scripts/generate-blake3-compress.ts writes (edit the generator, then run it)', () => {
    expect(readFileSync(BLAKE3_COMPRESS_FILE, 'utf8')).toBe(blake3CompressSource());
  });
});
