// Nix's formats against real Nix: hash notations, store path computation,
// binary cache keys, and narinfo signatures Nix itself accepts or refuses.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dumpPath,
  formatNixHash,
  formatNixSecretKey,
  generateNixSecretKey,
  hashBytes,
  makeFixedOutputPath,
  narHash,
  narInfoFingerprint,
  nixPublicKeyOf,
  formatNixPublicKey,
  parseNixHash,
  parseNixPublicKey,
  parseNixSecretKey,
  queryPathInfos,
  serializeNarInfo,
  signFingerprint,
  signNarInfo,
  storePathBaseName,
  asStorePath,
  type NarInfo,
} from '../nix/index.js';
import { buildFixtureClosure, nix, nixEnv, nixStore, nixUnavailableReason, type FixtureClosure } from './nix-fixtures/index.js';

const skipReason = nixUnavailableReason();
if (skipReason) console.warn(`skipping Nix format real-Nix tests: ${skipReason}`);

describe.skipIf(skipReason !== undefined)('Nix formats with real Nix', () => {
  let dir: string;
  let fixture: FixtureClosure;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-nix-formats-'));
    fixture = buildFixtureClosure();
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('converts hash notations as `nix hash to-*` does', () => {
    for (const input of ['ferry', '', 'x'.repeat(1000)]) {
      const hash = hashBytes('sha256', input);
      const base16 = formatNixHash(hash, 'base16');
      expect(`sha256:${nix(['hash', 'to-base32', base16]).toString().trim()}`).toBe(formatNixHash(hash, 'nix32'));
      expect(nix(['hash', 'to-sri', base16]).toString().trim()).toBe(formatNixHash(hash, 'sri'));
      expect(nix(['hash', 'to-base64', formatNixHash(hash, 'nix32')]).toString().trim()).toBe(formatNixHash(hash, 'base64').slice(7));
    }
  });

  it('computes the store paths of nix-store --add and --add-fixed', async () => {
    const file = path.join(dir, `file-${process.pid}`);
    writeFileSync(file, `contents ${Date.now()}\n`);
    const tree = path.join(dir, `tree-${process.pid}`);
    mkdirSync(path.join(tree, 'sub'), { recursive: true });
    writeFileSync(path.join(tree, 'sub', 'x'), 'x');
    for (const added of [file, tree]) {
      const narSha256 = parseNixHash((await narHash(dumpPath(added))).narHash);
      expect(nixStore(['--add', added]).trim()).toBe(makeFixedOutputPath('recursive', narSha256, path.basename(added)));
    }
    const flat = hashBytes('sha256', readFileSync(file));
    expect(nixStore(['--add-fixed', 'sha256', file]).trim()).toBe(makeFixedOutputPath('flat', flat, path.basename(file)));
  });

  it('reads keys from nix-store --generate-binary-cache-key', () => {
    const sk = path.join(dir, 'nix-sk');
    const pk = path.join(dir, 'nix-pk');
    nixStore(['--generate-binary-cache-key', 'nix-made-1', sk, pk]);
    const secret = parseNixSecretKey(readFileSync(sk, 'utf8'));
    expect(secret.name).toBe('nix-made-1');
    expect(parseNixPublicKey(readFileSync(pk, 'utf8'))).toEqual(nixPublicKeyOf(secret));
  });

  it('signs exactly as `nix store sign` does with our key file', async () => {
    const key = generateNixSecretKey('ferry-made-1');
    const keyFile = path.join(dir, 'ferry-sk');
    writeFileSync(keyFile, formatNixSecretKey(key));
    // In a throwaway store: signatures added to the machine's own store stay there, one more per run.
    const store = `local?root=${path.join(dir, 'sign-store')}`;
    nix(['copy', '--no-check-sigs', '--to', store, fixture.app]);
    nix(['store', 'sign', '--store', store, '--key-file', keyFile, fixture.app]);
    const [info] = await queryPathInfos([fixture.app]);
    const signed = JSON.parse(nix(['path-info', '--json', '--store', store, fixture.app]).toString()) as { signatures?: string[] }[] | Record<string, { signatures?: string[] }>;
    const signatures = (Array.isArray(signed) ? signed[0] : Object.values(signed)[0])?.signatures ?? [];
    const ours = signFingerprint(key, narInfoFingerprint(info!.path, info!.narHash, info!.narSize, info!.references));
    expect(signatures).toContain(ours);
    expect(info!.signatures ?? []).not.toContain(ours);
  });

  it('serves a binary cache whose narinfos we signed: Nix accepts it with our key, refuses it with another', async () => {
    const key = generateNixSecretKey('ferry-cache-1');
    const cache = path.join(dir, 'cache');
    mkdirSync(path.join(cache, 'nar'), { recursive: true });
    writeFileSync(path.join(cache, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
    for (const info of await queryPathInfos(fixture.paths)) {
      const nar = nix(['--dump', info.path], { command: 'nix-store' });
      const fileName = `${info.narHash.slice('sha256:'.length)}.nar`;
      writeFileSync(path.join(cache, 'nar', fileName), nar);
      const narInfo: NarInfo = {
        storePath: asStorePath(info.path),
        url: `nar/${fileName}`,
        compression: 'none',
        narHash: info.narHash,
        narSize: info.narSize,
        references: info.references.map(storePathBaseName),
        sigs: [],
      };
      narInfo.sigs.push(signNarInfo(key, narInfo));
      writeFileSync(path.join(cache, `${storePathBaseName(info.path).slice(0, 32)}.narinfo`), serializeNarInfo(narInfo));
    }
    const verify = (trusted: string): void => {
      execFileSync('nix', ['store', 'verify', '--store', `file://${cache}`, '--sigs-needed', '1', '--trusted-public-keys', trusted, ...fixture.paths], {
        env: nixEnv,
        stdio: 'pipe',
      });
    };
    verify(formatNixPublicKey(nixPublicKeyOf(key)));
    const wrong = formatNixPublicKey({ ...nixPublicKeyOf(generateNixSecretKey('ferry-cache-1')) });
    expect(() => verify(wrong)).toThrow(/untrusted|signature|fail/i);
    // And a fresh store copies from it with signature checking on.
    const freshStore = path.join(dir, 'fresh-store');
    execFileSync('nix', ['copy', '--from', `file://${cache}`, '--to', `local?root=${freshStore}`, fixture.app], {
      env: { ...nixEnv, NIX_CONFIG: `${nixEnv.NIX_CONFIG}\nrequire-sigs = true\ntrusted-public-keys = ${formatNixPublicKey(nixPublicKeyOf(key))}` },
      stdio: 'pipe',
    });
    expect(readFileSync(path.join(freshStore, fixture.greeting.slice(1))).length).toBeGreaterThan(0);
  });
});
