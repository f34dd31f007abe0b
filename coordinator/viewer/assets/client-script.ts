/**
 * The viewer's browser script (viewer.browser.ts), served as
 * /viewer/assets/viewer.js: compiled into build/ by the build
 * (scripts/build-browser-scripts.mjs), or from the sources when the
 * coordinator runs from them (nix/runnable-module.ts). Read once, on the
 * first request for it.
 */
import { browserScriptText } from '../../../nix/runnable-module.js';

const CLIENT_SCRIPT_MODULE = new URL('./viewer.browser.js', import.meta.url);

let text: string | undefined;

/** The script's text. Throws when neither the built script nor its source is there (an installation missing files). */
export function clientScript(): string {
  text ??= browserScriptText(CLIENT_SCRIPT_MODULE);
  return text;
}
