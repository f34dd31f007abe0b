/**
 * A store path's name as Nix reads it into a package name and a version
 * (libstore names.cc `DrvName`, and the output-name stripping of
 * `nix store diff-closures`, src/nix/diff-closures.cc). Pure string rules,
 * no Nix needed; test/config-diff-real-nix.test.ts checks them against
 * Nix 2.8's diff-closures.
 */

/** A name split as Nix's DrvName splits it. */
export interface DrvName {
  /** Up to, not including, the first dash that is not followed by a letter (`apache-httpd`). */
  name: string;
  /** The rest after that dash (`2.0.48`); empty when there is no such dash. */
  version: string;
}

/**
 * Splits `storePathName` (the part after `<hash>-`) as Nix's DrvName does:
 * at the first `-` followed by a character that is not an ASCII letter
 * (`apache-httpd-2.0.48` → `apache-httpd` + `2.0.48`, `perl5.36.0-JSON-4.10`
 * → `perl5.36.0-JSON` + `4.10`, `foo--bar` → `foo` + `-bar`). Not "followed
 * by a digit": `foo-_1` splits too. A trailing dash does not split.
 */
export function parseDrvName(storePathName: string): DrvName {
  const match = /-[^A-Za-z]/.exec(storePathName);
  return match ? { name: storePathName.slice(0, match.index), version: storePathName.slice(match.index + 1) } : { name: storePathName, version: '' };
}

/**
 * The name diff-closures groups a store path under, before DrvName: an
 * output-name suffix is stripped first, as Nix's regex `(.*)-([a-z]+|lib32|lib64)`
 * matched against the whole name strips it (the last `-` followed by only
 * lowercase letters to the end, or by `lib32`/`lib64`). Nix says of it
 * "unfortunately ambiguous": `hello-unstable` loses `unstable` as `bin` would.
 */
export function stripOutputName(storePathName: string): { name: string; outputName: string } {
  const match = /^(.*)-([a-z]+|lib32|lib64)$/.exec(storePathName);
  return match ? { name: match[1]!, outputName: match[2]! } : { name: storePathName, outputName: '' };
}
