/**
 * narinfo files: the metadata a Nix binary cache serves for each store
 * path, and the fingerprint its signatures cover.
 */
import { NixError } from './errors.js';
import { normalizeNarHash, parseNixHash } from './hash.js';
import { DEFAULT_STORE_DIR, parseStorePath, storePathBaseName, type StorePath } from './store-path.js';

export interface NarInfo {
  storePath: StorePath;
  url: string;
  compression: string;
  fileHash?: string;
  fileSize?: number;
  /** `sha256:<nix32>`. */
  narHash: string;
  narSize: number;
  /** Basenames (`<hash>-<name>`), as narinfo lists them. */
  references: string[];
  /** Basename of the deriver, as narinfo lists it. */
  deriver?: string;
  system?: string;
  sigs: string[];
  ca?: string;
}

const KNOWN_KEYS = new Set(['StorePath', 'URL', 'Compression', 'FileHash', 'FileSize', 'NarHash', 'NarSize', 'References', 'Deriver', 'System', 'Sig', 'CA']);

/**
 * Parses a narinfo strictly: one `Key: value` per line, StorePath, URL,
 * NarHash and NarSize required, no key twice (except Sig), valid store
 * paths, references and hashes, non-negative integer sizes. Unknown keys are
 * ignored, as Nix ignores them. Refusals are BAD_NARINFO naming the line.
 */
export function parseNarInfo(text: string, storeDir = DEFAULT_STORE_DIR): NarInfo {
  const fields = new Map<string, { value: string; line: number }>();
  const sigs: string[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, index) => {
    const line = index + 1;
    if (raw === '' && index === lines.length - 1) return;
    const colon = raw.indexOf(': ');
    if (colon <= 0) throw new NixError('BAD_NARINFO', `narinfo line ${line} is not 'Key: value': ${JSON.stringify(raw)}`);
    const key = raw.slice(0, colon);
    const value = raw.slice(colon + 2);
    if (!KNOWN_KEYS.has(key)) return;
    if (key === 'Sig') {
      sigs.push(value);
      return;
    }
    if (fields.has(key)) throw new NixError('BAD_NARINFO', `narinfo line ${line}: '${key}' appears twice`);
    fields.set(key, { value, line });
  });
  const required = (key: string): { value: string; line: number } => {
    const field = fields.get(key);
    if (!field) throw new NixError('BAD_NARINFO', `narinfo has no '${key}'`);
    return field;
  };
  const checked = <T>(key: string, field: { value: string; line: number }, parse: (value: string) => T): T => {
    try {
      return parse(field.value);
    } catch (error) {
      throw new NixError('BAD_NARINFO', `narinfo line ${field.line}: bad ${key}: ${(error as Error).message}`, { cause: error });
    }
  };
  const size = (value: string): number => {
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new Error(`'${value}' is not a non-negative integer`);
    return Number(value);
  };
  const optional = <T>(key: string, parse: (value: string) => T): T | undefined => {
    const field = fields.get(key);
    return field ? checked(key, field, parse) : undefined;
  };
  const baseName = (value: string): string => storePathBaseName(parseStorePath(`${storeDir}/${value}`, storeDir).path);

  const info: NarInfo = {
    storePath: checked('StorePath', required('StorePath'), (value) => parseStorePath(value, storeDir).path),
    url: checked('URL', required('URL'), (value) => {
      if (value === '') throw new Error('empty URL');
      return value;
    }),
    compression: fields.get('Compression')?.value ?? 'bzip2',
    narHash: checked('NarHash', required('NarHash'), normalizeNarHash),
    narSize: checked('NarSize', required('NarSize'), size),
    references: optional('References', (value) => (value === '' ? [] : value.split(' ').map(baseName))) ?? [],
    sigs,
  };
  const fileHash = optional('FileHash', (value) => (parseNixHash(value), value));
  const fileSize = optional('FileSize', size);
  const deriver = optional('Deriver', (value) => (value === 'unknown-deriver' ? undefined : baseName(value)));
  const system = fields.get('System')?.value;
  const ca = fields.get('CA')?.value;
  return {
    ...info,
    ...(fileHash !== undefined ? { fileHash } : {}),
    ...(fileSize !== undefined ? { fileSize } : {}),
    ...(deriver !== undefined ? { deriver } : {}),
    ...(system !== undefined ? { system } : {}),
    ...(ca !== undefined ? { ca } : {}),
  };
}

/** Serialises a narinfo in Nix's key order, ending with a newline. */
export function serializeNarInfo(info: NarInfo): string {
  const lines = [`StorePath: ${info.storePath}`, `URL: ${info.url}`, `Compression: ${info.compression}`];
  if (info.fileHash !== undefined) lines.push(`FileHash: ${info.fileHash}`);
  if (info.fileSize !== undefined) lines.push(`FileSize: ${info.fileSize}`);
  lines.push(`NarHash: ${info.narHash}`, `NarSize: ${info.narSize}`, `References: ${info.references.join(' ')}`);
  if (info.deriver !== undefined) lines.push(`Deriver: ${info.deriver}`);
  if (info.system !== undefined) lines.push(`System: ${info.system}`);
  for (const sig of info.sigs) lines.push(`Sig: ${sig}`);
  if (info.ca !== undefined) lines.push(`CA: ${info.ca}`);
  return `${lines.join('\n')}\n`;
}

/**
 * The string Nix signs for a store path: `1;<path>;<narHash>;<narSize>;<refs>`
 * with the NarHash as `sha256:<nix32>` and the references as full paths,
 * sorted, comma-separated. Refuses a non-sha256 NarHash (BAD_HASH).
 */
export function narInfoFingerprint(storePath: string, narHash: string, narSize: number, references: readonly string[]): string {
  return `1;${storePath};${normalizeNarHash(narHash)};${narSize};${[...references].sort().join(',')}`;
}

/** The fingerprint of a parsed narinfo (its references are basenames in the path's store dir). */
export function fingerprintOfNarInfo(info: NarInfo): string {
  const storeDir = parseStorePathDir(info.storePath);
  return narInfoFingerprint(info.storePath, info.narHash, info.narSize, info.references.map((ref) => `${storeDir}/${ref}`));
}

function parseStorePathDir(storePath: string): string {
  return storePath.slice(0, storePath.lastIndexOf('/'));
}
