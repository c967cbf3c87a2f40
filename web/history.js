// The Exports page: the user's exports (admins: everyone's), newest first, with status,
// size, records, expiry, download and delete; paginated; running jobs refresh themselves.
import { api } from './api.js';
import { h, put, notice, errorText, fmtBytes, fmtTime, pager, tableBox, stacked } from './ui.js';
import { openExport, downloadExport } from './export.js';

const LIMIT = 10;

export async function show(root, ctx, page = '1') {
  const offset = (Math.max(1, parseInt(page, 10) || 1) - 1) * LIMIT;
  const box = h('div', { 'data-testid': 'history' });
  const stats = h('p', { class: 'muted' });
  put(root, h('div', { class: 'page-head' }, h('h1', {}, ctx.me.role === 'admin' ? 'Exports (all users)' : 'My exports'),
    h('div', { class: 'toolbar' }, h('button', { type: 'button', class: 'primary', onclick: () => openExport(ctx) }, 'New export'))), stats, box);
  let timer = null;
  let stopped = false;


  async function remove(x) {
    if (!confirm(`Delete ${x.file_name}?${['queued', 'processing'].includes(x.status) ? ' The running job is cancelled.' : ''}`)) return;
    try { await api(`/api/exports/${encodeURIComponent(x.export_id)}`, { method: 'DELETE' }); } catch (err) { alert(errorText(err)); }
    load();
  }

  async function load() {
    clearTimeout(timer);
    try {
      const [r, st] = await Promise.all([api(`/api/exports/history?limit=${LIMIT}&offset=${offset}`), api('/api/exports/stats')]);
      stats.textContent = `${st.total_exports} export${st.total_exports === 1 ? '' : 's'}, ${st.total_data_exported} in all, ${st.exports_this_month} this month`;
      if (!r.exports.length) { put(box, notice(offset ? 'No exports on this page.' : 'No exports yet. Use Export Data on a device card, or New export.')); return; }
      const admin = ctx.me.role === 'admin';
      const cols = ['Created', 'File', 'Type', 'Status', 'Records', 'Size', 'Expires', admin ? 'User' : null, 'Actions'].filter(Boolean);
      const row = (x) => [
        h('td', {}, fmtTime(x.created_at)),
        h('td', { class: 'file' }, x.file_name),
        h('td', {}, `${x.export_type} · ${x.format}`),
        h('td', {}, h('span', { class: `badge ${x.status === 'completed' ? 'ok' : x.status === 'failed' ? 'bad' : 'warn'}` }, x.status)),
        h('td', { class: 'num' }, x.record_count === null ? '—' : x.record_count.toLocaleString()),
        h('td', { class: 'num' }, fmtBytes(x.file_size)),
        h('td', {}, fmtTime(x.expires_at)),
        admin ? h('td', {}, x.username) : null,
        h('td', { class: 'actions' },
          x.status === 'completed' ? h('a', { href: x.download_url, class: 'button', onclick: (e) => { e.preventDefault(); downloadExport(x.export_id); } }, 'Download') : null,
          h('button', { type: 'button', class: 'danger', onclick: () => remove(x) }, 'Delete')),
      ].filter(Boolean);
      put(box, tableBox('Exports', stacked(h('table', { 'data-testid': 'history-table' },
        h('caption', { class: 'sr-only' }, 'Exports'),
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, r.exports.map((x) => h('tr', { 'data-export-id': x.export_id }, row(x))))))),
      pager(r.total, offset, LIMIT, (o) => ctx.go(`#/history/${o / LIMIT + 1}`)));
      if (!stopped && r.exports.some((x) => ['queued', 'processing'].includes(x.status))) timer = setTimeout(load, 1000);
    } catch (e) {
      put(box, notice(errorText(e), 'error'));
    }
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}
