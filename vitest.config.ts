import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{protocol,nix,castore,coordinator,agent,relay,cli,test}/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // Real Nix builds and real processes: keep parallelism modest on 2 cores.
    pool: 'forks',
    maxWorkers: 2,
    // Coordinators started by tests (in process or as child processes) check every API reply against
    // its description (coordinator/api/http.ts checkReplies): a drift fails a test.
    env: { FERRY_CHECK_REPLIES: '1' },
  },
});
