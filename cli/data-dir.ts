/** Where a coordinator (and the castore inside it) keeps its data, by default. */
import path from 'node:path';
import type { OptionSpec, OptionValues } from './command.js';
import { stringOption } from './command.js';

/** `$FERRY_DATA_DIR`, else `./ferry-data` (as DESIGN.md section 9 says; XDG when asked for). */
export function defaultDataDir(): string {
  if (process.env.FERRY_DATA_DIR) return process.env.FERRY_DATA_DIR;
  return path.resolve('ferry-data');
}

export const dataDirOption: Record<string, OptionSpec> = {
  'data-dir': {
    type: 'string',
    valueName: 'DIR',
    description: 'coordinator data directory (default: $FERRY_DATA_DIR or ./ferry-data)',
  },
};

export function dataDirFrom(options: OptionValues): string {
  return path.resolve(stringOption(options, 'data-dir') ?? defaultDataDir());
}

export function castoreDirFrom(options: OptionValues): string {
  return path.join(dataDirFrom(options), 'castore');
}
