/** Ordering store paths so that every path comes after the paths it references. */
import type { StorePathInfo } from './store-path-info.js';

/**
 * `infos` reordered so each path follows its references (those among
 * `infos`; self-references and outside paths are ignored). Stable for
 * unrelated paths; cycles cannot occur in valid Nix closures and are
 * broken arbitrarily.
 */
export function referencesFirst<T extends Pick<StorePathInfo, 'storePath' | 'references'>>(infos: readonly T[]): T[] {
  const byPath = new Map(infos.map((info) => [info.storePath, info]));
  const ordered: T[] = [];
  const seen = new Set<string>();
  const visit = (info: T): void => {
    if (seen.has(info.storePath)) return;
    seen.add(info.storePath);
    for (const reference of info.references) {
      const next = byPath.get(reference);
      if (next) visit(next);
    }
    ordered.push(info);
  };
  for (const info of infos) visit(info);
  return ordered;
}
