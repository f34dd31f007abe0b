/**
 * The viewer's browser scripts, served under /viewer/assets/:
 * viewer.browser.ts (the audit log) as viewer.js and live.browser.ts (the
 * live fleet) as live.js. Compiled into build/ by the build
 * (scripts/build-browser-scripts.mjs), or from the sources when the
 * coordinator runs from them (nix/runnable-module.ts). Each is read once,
 * on the first request for it.
 */
import { browserScriptText } from '../../../nix/runnable-module.js';

const VIEWER_SCRIPT_MODULE = new URL('./viewer.browser.js', import.meta.url);
const LIVE_SCRIPT_MODULE = new URL('./live.browser.js', import.meta.url);

const texts = new Map<URL, string>();

function scriptText(module: URL): string {
  let text = texts.get(module);
  if (text === undefined) {
    text = browserScriptText(module);
    texts.set(module, text);
  }
  return text;
}

/** The audit log page's script. Throws when neither the built script nor its source is there (an installation missing files). */
export function clientScript(): string {
  return scriptText(VIEWER_SCRIPT_MODULE);
}

/** The live fleet page's script; throws as clientScript does. */
export function liveClientScript(): string {
  return scriptText(LIVE_SCRIPT_MODULE);
}
