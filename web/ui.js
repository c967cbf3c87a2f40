// Small DOM and formatting helpers shared by the pages. Text always goes in as text nodes
// (never as HTML), so device names and other stored strings cannot inject markup.

/** Creates an element: h('button', {class: 'x', onclick: f}, 'text', child, …). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the children of `el`. */
export function put(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const num = (v, d) => Number(v).toLocaleString(undefined, { minimumFractionDigits: d, maximumFractionDigits: d });
export const fmtPower = (w) => (w === null || w === undefined ? '—' : w >= 1000 ? `${num(w / 1000, 2)} kW` : `${num(w, 1)} W`);
export const fmtKwh = (k) => (k === null || k === undefined ? '—' : `${num(k, 3)} kWh`);
export const fmtMoney = (v, currency) => {
  if (v === null || v === undefined) return '—';
  try { return Number(v).toLocaleString(undefined, { style: 'currency', currency }); } catch { return `${num(v, 2)} ${currency}`; }
};
export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i += 1; }
  return `${num(n, i ? 1 : 0)} ${u[i]}`;
}
export const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '—');

/** A duration in words: "4 min 10 s". */
export function fmtWait(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** An API error in words, with the retry time for rate limits. */
export function errorText(e) {
  const b = (e && e.body) || {};
  if (b.error_code === 'RATE_LIMIT_EXCEEDED' && b.retry_after) {
    const at = new Date(b.retry_after);
    return `Rate limit reached${b.limit ? ` (${b.limit})` : ''}: try again in ${fmtWait(at - Date.now())}, at ${at.toLocaleTimeString()}.`;
  }
  if (b.error_code === 'PERMISSION_DENIED') return b.required_permission ? `You lack the ${b.required_permission} permission.` : b.message;
  return b.message || (e && e.message) || String(e);
}

/** A status line that announces changes to screen readers. */
export const notice = (text, kind = 'info') => h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);

/** A labelled form field: label + control, joined by id. */
let seq = 0;
export function field(label, control, hint) {
  const id = control.id || `f${++seq}`;
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('small', { class: 'muted' }, hint) : null);
}

/** A select with options [[value, text], …]. */
export function select(options, value, attrs = {}) {
  return h('select', attrs, options.map(([v, t]) => h('option', { value: v, selected: String(v) === String(value) }, t)));
}

/** Opens a modal dialog with `title` and `body`; returns {dialog, close}. Esc closes it. */
export function modal(title, body, onClose = () => {}) {
  const close = () => { dialog.close(); };
  const id = `modal-title-${++seq}`;
  const dialog = h('dialog', { class: 'modal', 'aria-labelledby': id },
    h('div', { class: 'modal-head' }, h('h2', { id }, title),
      h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', onclick: close }, '✕')),
    body);
  dialog.addEventListener('close', () => { dialog.remove(); onClose(); });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

/** Local date-time text for an <input type="datetime-local"> from ms. */
export function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** Pagination controls: calls go(offset). */
export function pager(total, offset, limit, go) {
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('button', { type: 'button', disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, '‹ Newer'),
    h('span', {}, `page ${page} of ${pages} · ${total} in all`),
    h('button', { type: 'button', disabled: offset + limit >= total, onclick: () => go(offset + limit) }, 'Older ›'));
}

/** A table in a box that scrolls sideways on a phone; focusable, so keys can scroll it too. */
export const tableBox = (label, table) => h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': label }, table);

/** Marks `table` to stack its rows as labelled blocks on a phone: each cell gets its column's name. */
export function stacked(table) {
  const names = [...table.querySelectorAll('thead th')].map((th) => th.textContent);
  for (const tr of table.querySelectorAll('tbody tr')) {
    [...tr.children].forEach((cell, i) => {
      cell.dataset.label = names[i] || '';
      // One box per cell, so a stacked row is the label and the value side by side.
      const box = h('div', { class: 'cell' });
      box.append(...cell.childNodes);
      cell.append(box);
    });
  }
  table.classList.add('stack');
  return table;
}
