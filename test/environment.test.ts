import { describe, expect, it } from 'vitest';
import { nixUnavailableReason } from './nix-fixtures/index.js';

// CI sets FERRY_REQUIRE_NIX=1: there, a missing Nix must fail the run rather
// than let every real-Nix test skip quietly.
describe('test environment', () => {
  it.runIf(process.env.FERRY_REQUIRE_NIX === '1')('has real Nix when CI requires it', () => {
    expect(nixUnavailableReason()).toBeUndefined();
  });

  it('reports why real-Nix tests would skip', () => {
    const reason = nixUnavailableReason();
    if (reason) console.warn(`real-Nix tests will skip: ${reason}`);
    expect(reason === undefined || reason.length > 0).toBe(true);
  });
});
