/**
 * NAR encode/decode throughput on the ~200 MiB / 20,000-file closure,
 * against `nix-store --dump` of the same store path in the same run.
 * Run: npm run bench:nar   (needs nix-store; see bench/README.md)
 */
import { createReadStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import { decodeNar, dumpPath, encodeNar } from '../nix/nar/index.js';
import { nixEnv } from '../test/nix-fixtures/index.js';
import { benchWorkDir, bigClosureStorePath } from './fixtures/big-closure.js';
import { bestOf, drain, mbPerSecond, report, runToDevNull } from './harness.js';
import { execFileSync } from 'node:child_process';

const runs = Number(process.env.BENCH_RUNS ?? 3);
mkdirSync(benchWorkDir, { recursive: true });
const storePath = bigClosureStorePath(0, nixEnv);
const narFile = path.join(benchWorkDir, 'big-v0.nar');
execFileSync('sh', ['-c', `nix-store --dump '${storePath}' > '${narFile}'`], { env: nixEnv });
const narSize = Number(execFileSync('nix-store', ['--query', '--size', storePath], { env: nixEnv, encoding: 'utf8' }).trim());

const nixDump = await bestOf(runs, () => runToDevNull('nix-store', ['--dump', storePath], nixEnv));
const ourDump = await bestOf(runs, () => drain(dumpPath(storePath)));
const ourRoundTrip = await bestOf(runs, () => drain(encodeNar(decodeNar(createReadStream(narFile, { highWaterMark: 1 << 20 })))));
const readOnly = await bestOf(runs, () => drain(createReadStream(narFile, { highWaterMark: 1 << 20 })));

report('nar', [
  { what: 'nix-store --dump (reference)', seconds: nixDump.toFixed(3), rate: mbPerSecond(narSize, nixDump), ratio: '1.00' },
  { what: 'ferry dumpPath (tree -> NAR)', seconds: ourDump.toFixed(3), rate: mbPerSecond(narSize, ourDump), ratio: (ourDump / nixDump).toFixed(2) },
  { what: 'ferry decode+encode (NAR file -> NAR)', seconds: ourRoundTrip.toFixed(3), rate: mbPerSecond(narSize, ourRoundTrip), ratio: (ourRoundTrip / nixDump).toFixed(2) },
  { what: 'reading the NAR file only', seconds: readOnly.toFixed(3), rate: mbPerSecond(narSize, readOnly), ratio: (readOnly / nixDump).toFixed(2) },
]);
console.log(`closure: ${storePath}, NAR ${narSize} bytes; best of ${runs} runs each`);
