// Building DOM nodes without innerHTML: every value shown comes from traces and configs (text
// a client or provider sent), so it is always set as text, never parsed as markup.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | ((e: Event) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v as EventListener);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function fmtTime(t: string | number | undefined): string {
  if (t === undefined || t === null || t === "") return "";
  const d = typeof t === "number" ? new Date(t) : new Date(t);
  return isNaN(d.getTime()) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function fmtUsd(v: number | undefined): string {
  if (v === undefined || v === null || isNaN(v)) return "";
  return v < 0.01 ? `$${v.toFixed(6)}` : `$${v.toFixed(4)}`;
}

export function fmtMs(v: number | undefined): string {
  if (v === undefined || v === null || isNaN(v)) return "";
  // Mock and cached answers take well under a millisecond: keep what tells them apart.
  const a = Math.abs(v);
  return a < 10 ? `${v.toFixed(2)} ms` : a < 100 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`;
}

export function errorBox(e: unknown): HTMLElement {
  return h("div", { class: "error", role: "alert" }, (e as Error).message ?? String(e));
}
