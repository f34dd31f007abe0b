import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NixError } from './errors.js';
import { queryClosure, queryPathInfos, resolveToStorePath } from './local-store.js';

// Nix being absent is the normal case on fleet machines: every local-store
// call must say so clearly instead of failing obscurely.
describe('local Nix store without Nix', () => {
  let savedPath: string | undefined;
  beforeEach(() => {
    savedPath = process.env.PATH;
    process.env.PATH = '/nonexistent';
  });
  afterEach(() => {
    process.env.PATH = savedPath;
  });

  it('refuses with NIX_NOT_FOUND naming the command', async () => {
    for (const call of [() => queryClosure(['/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x']), () => queryPathInfos(['/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x'])]) {
      const error = await call().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(NixError);
      expect((error as NixError).code).toBe('NIX_NOT_FOUND');
      expect((error as NixError).message).toMatch(/'nix(-store)?' not found on PATH/);
    }
  });

  it('refuses a path outside the store', async () => {
    const error = await Promise.resolve()
      .then(() => resolveToStorePath('/etc/hostname'))
      .catch((caught: unknown) => caught);
    expect((error as NixError).code).toBe('BAD_STORE_PATH');
  });
});
