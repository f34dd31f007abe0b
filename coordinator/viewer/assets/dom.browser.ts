/**
 * DOM helpers shared by the viewer's browser scripts (viewer.browser.ts,
 * live.browser.ts; esbuild bundles this module into each). Everything is
 * built with DOM calls and text nodes (textContent, never innerHTML), so
 * nothing the coordinator sends is ever markup.
 */

export type Child = Node | string | number | null | undefined | false | Child[];
type PropValue = string | number | boolean | null | undefined | Record<string, string> | ((event: Event) => void);
export type Props = Record<string, PropValue>;

/** An element of the page (page.ts): its id, and the type it has there. */
export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  return document.getElementById(id) as T;
}

/** An element with attributes (`text`, `class`, `data`, `on…` listeners, others as attributes) and children. */
export function h(tag: string, props: Props | null, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') el.textContent = String(value);
      else if (key === 'class') el.className = String(value);
      else if (key === 'data' && typeof value === 'object') for (const [name, data] of Object.entries(value)) el.dataset[name] = data;
      else if (key.slice(0, 2) === 'on' && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children) append(el, child);
  return el;
}
export function append(el: Node, child: Child): void {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(el, c);
    return;
  }
  el.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
}
export function clear<T extends Node>(el: T): T {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}
export function short(id: string | null | undefined): string {
  return id ? String(id).slice(0, 12) : '-';
}
export function when(ms: number): string {
  const d = new Date(ms);
  return isNaN(d.getTime()) ? String(ms) : d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}
export function idCell(id: string | null, cls?: string): HTMLElement {
  return h('td', { class: 'id ' + (cls || ''), title: id || '', data: { full: id || '' } }, short(id));
}
export function cell(value: string | number | null | undefined, cls?: string): HTMLElement {
  return h('td', { class: cls || '' }, value === null || value === undefined ? '-' : String(value));
}
export function table(headers: string[], rows: Child[], props?: Props): HTMLElement {
  return h('table', props || null, h('thead', null, h('tr', null, headers.map((x) => h('th', null, x)))), h('tbody', null, rows));
}
