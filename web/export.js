// The Data Export modal: type, format, date range (presets or custom), devices, fields,
// aggregation, time zone and compression; a live preview (first rows, total records,
// estimated size) for device data; then create → a progress bar following the job → the
// download link. Errors (validation, rate limit with its retry time) are shown in words.
import { api } from './api.js';
import { h, put, notice, errorText, field, select, modal, fmtBytes, localInput, tableBox } from './ui.js';

const TYPES = [
  ['device_data', 'Device data', null],
  ['cost_analysis', 'Cost analysis', null],
  ['system_report', 'System report', null],
  ['audit_logs', 'Audit log', 'AUDIT_READ'],
  ['configuration', 'Configuration', 'SYSTEM_CONFIG'],
  ['statement', 'Signed statement', null],
];
const AGG = [['raw', 'Every reading'], ['15m', '15 minutes'], ['hourly', 'Hourly'], ['daily', 'Daily'], ['weekly', 'Weekly'], ['monthly', 'Monthly']];
const PRESETS = [['today', 'Today'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'], ['month', 'This month'], ['last_month', 'Last month'], ['custom', 'Custom…']];

/** Today's date (YYYY-MM-DD) in `zone`. */
const dateIn = (zone, t = new Date()) => new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(t);

/**
 * The date_range of a preset. Calendar presets are dates, which the daemon cuts in the export's
 * time zone (a date `end` includes its whole day); rolling ones are instants.
 */
function presetRange(p, zone) {
  const now = new Date();
  const ago = (days) => ({ start: new Date(now - days * 86400e3).toISOString(), end: now.toISOString() });
  const today = dateIn(zone);
  const [y, m] = today.split('-').map(Number);
  const iso = (yy, mm, dd) => `${yy}-${String(mm).padStart(2, '0')}-${String(dd).padStart(2, '0')}`;
  switch (p) {
    case 'today': return { start: today, end: today };
    case '24h': return ago(1);
    case '30d': return ago(30);
    case 'month': return { start: iso(y, m, 1), end: today };
    case 'last_month': {
      const [ly, lm] = m === 1 ? [y - 1, 12] : [y, m - 1];
      return { start: iso(ly, lm, 1), end: iso(ly, lm, new Date(Date.UTC(ly, lm, 0)).getUTCDate()) };
    }
    default: return ago(7);
  }
}

function checks(legend, items, checked, name) {
  const boxes = items.map(([v, text]) => {
    const b = h('input', { type: 'checkbox', value: v, checked: checked(v), name });
    return { b, el: h('label', { class: 'check' }, b, ` ${text}`) };
  });
  const all = h('button', { type: 'button', class: 'link', 'aria-label': `all / none: ${legend.toLowerCase()}`, onclick: () => {
    const on = !boxes.every((x) => x.b.checked);
    boxes.forEach((x) => { x.b.checked = on; });
    boxes[0]?.b.dispatchEvent(new Event('change', { bubbles: true }));
  } }, 'all / none');
  const set = h('fieldset', { class: 'checks' }, h('legend', {}, legend, ' ', all), boxes.map((x) => x.el));
  return { set, values: () => boxes.filter((x) => x.b.checked).map((x) => x.b.value), count: boxes.length };
}

/** Downloads a finished export with a fresh ticket (links in a status expire after 15 minutes). */
export async function downloadExport(id) {
  try {
    const s = await api(`/api/exports/${encodeURIComponent(id)}`);
    if (!s.download_link) throw new Error(`the export is ${s.status}`);
    const a = h('a', { href: s.download_link, download: s.file_name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) { alert(errorText(err)); }
}

let opening = false;

/** Opens the modal; `devices` preselects devices, `name` titles it. */
export async function openExport(ctx, opts = {}) {
  if (opening) return;
  opening = true;
  try { await build(ctx, opts); } catch (err) { alert(errorText(err)); } finally { opening = false; }
}

async function build(ctx, { devices: pre = [], name } = {}) {
  const [formats, devs, metrics] = await Promise.all([api('/api/exports/formats'), api('/api/exports/devices'), api('/api/exports/metrics')]);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const zones = (Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : [zone]).concat(['UTC']);
  const type = select(TYPES.filter((t) => !t[2] || ctx.can(t[2])).map(([v, t]) => [v, t]), 'device_data', { name: 'export_type' });
  const format = select(formats.formats.map((f) => [f.id, `${f.name} (${f.extension})`]), 'csv', { name: 'format' });
  const preset = select(PRESETS, '7d', { name: 'preset' });
  const from = h('input', { type: 'datetime-local', value: localInput(Date.now() - 7 * 86400e3), name: 'start' });
  const to = h('input', { type: 'datetime-local', value: localInput(Date.now()), name: 'end' });
  const custom = h('div', { class: 'form-grid', hidden: true }, field('From', from), field('To', to));
  const agg = select(AGG, 'raw', { name: 'aggregation' });
  const grouping = select([['daily', 'Daily'], ['weekly', 'Weekly'], ['monthly', 'Monthly'], ['yearly', 'Yearly']], 'daily', { name: 'grouping' });
  const tz = select([...new Set(zones)].map((z) => [z, z]), zone, { name: 'timezone' });
  const compression = select([['none', 'None'], ['gzip', 'gzip'], ['zip', 'zip']], 'none', { name: 'compression' });
  const nameOf = new Map(devs.devices.map((d) => [d.device_id, d.device_name]));
  const devBoxes = checks('Devices', devs.devices.map((d) => [d.device_id, d.parent_id ? `${nameOf.get(d.parent_id) || 'strip'} › ${d.device_name}` : d.device_name]),
    (v) => (pre.length ? pre.includes(v) : true), 'devices');
  // Opt-in fields (provenance) start unchecked.
  const optIn = new Set(metrics.metrics.filter((m) => m.default === false).map((m) => m.field));
  const fieldBoxes = checks('Fields', metrics.metrics.map((m) => [m.field, m.unit ? `${m.name}` : m.name]), (v) => !optIn.has(v), 'fields');
  const preview = h('div', { class: 'preview', 'data-testid': 'preview' });
  const result = h('div', { class: 'result', 'data-testid': 'export-result' });
  const announce = h('p', { class: 'sr-only', role: 'status' }); // status changes only, not every percent
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create export');

  const deviceOnly = [agg, fieldBoxes.set];
  function visibility() {
    const t = type.value;
    custom.hidden = preset.value !== 'custom';
    for (const el of deviceOnly) (el.closest('.field') || el).hidden = t !== 'device_data';
    grouping.closest('.field').hidden = t !== 'cost_analysis';
    devBoxes.set.hidden = !['device_data', 'cost_analysis', 'statement'].includes(t);
    preset.closest('.field').hidden = t === 'configuration';
  }

  function range() {
    if (preset.value === 'custom') {
      if (!from.value || !to.value) throw new Error('Choose both ends of the custom range.');
      return { start: new Date(from.value).toISOString(), end: new Date(to.value).toISOString() };
    }
    return presetRange(preset.value, tz.value);
  }

  function body() {
    const t = type.value;
    const b = { export_type: t, format: format.value, options: { timezone: tz.value, compression: compression.value } };
    if (t !== 'configuration') b.date_range = range();
    if (t === 'device_data' || t === 'cost_analysis' || t === 'statement') {
      const ids = devBoxes.values();
      if (!ids.length) throw new Error('Choose at least one device.');
      b.devices = ids.length === devBoxes.count ? 'all' : ids;
    }
    if (t === 'device_data') {
      const f = fieldBoxes.values();
      if (!f.length) throw new Error('Choose at least one field.');
      b.fields = f;
      b.aggregation = agg.value;
    }
    if (t === 'cost_analysis') b.grouping = grouping.value;
    return b;
  }

  let seq = 0;
  let debounce = null;
  let inflight = null; // a preview holds an export slot on the daemon: cancel the stale one
  let closed = false;
  async function refreshPreview() {
    const mine = ++seq;
    if (inflight) inflight.abort();
    inflight = null;
    if (type.value !== 'device_data') { put(preview, h('p', { class: 'muted' }, 'No preview for this type; create the export to see it.')); return; }
    let b;
    try { b = body(); } catch (e) { put(preview, notice(e.message, 'error')); return; }
    put(preview, h('p', { class: 'muted' }, 'preview loading…'));
    const ctl = new AbortController();
    inflight = ctl;
    try {
      const p = await api('/api/exports/preview?limit=5', { method: 'POST', body: b, signal: ctl.signal });
      if (mine !== seq || closed) return;
      // Columns in the order of the field list, then any others (custom fields).
      const keys = p.preview.length ? Object.keys(p.preview[0]) : [];
      const cols = b.fields.filter((f) => keys.includes(f)).concat(keys.filter((k) => !b.fields.includes(k)));
      put(preview,
        h('p', { 'data-testid': 'preview-summary' }, h('strong', {}, `${p.total_records.toLocaleString()}${p.total_records_capped ? '+' : ''} records`), ` · about ${p.estimated_file_size} as CSV`),
        cols.length ? tableBox('Preview rows', h('table', { class: 'compact' },
          h('caption', {}, p.preview_note || 'First rows'),
          h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, p.preview.map((r) => h('tr', {}, cols.map((c) => h('td', {}, r[c] === null ? '' : String(r[c])))))))) : h('p', { class: 'muted' }, 'No rows in this range.'));
    } catch (e) {
      if (mine === seq && e.name !== 'AbortError') put(preview, notice(errorText(e), 'error'));
    } finally {
      if (inflight === ctl) inflight = null;
    }
  }
  const later = () => { visibility(); clearTimeout(debounce); debounce = setTimeout(refreshPreview, 300); };

  let polling = null;
  async function follow(job) {
    const bar = h('progress', { max: 100, value: 0, 'aria-label': 'Export progress' });
    const label = h('span', { 'data-testid': 'progress-text' }, 'queued');
    put(result, h('div', { class: 'progress' }, bar, label));
    let last = '';
    while (!closed) {
      const s = await api(`/api/exports/${encodeURIComponent(job.export_id)}`);
      bar.value = s.progress || 0;
      label.textContent = `${s.status} · ${s.progress || 0} %`;
      if (s.status !== last) { last = s.status; announce.textContent = `Export ${s.status}`; }
      if (s.status === 'completed') {
        const link = h('a', { class: 'button primary', href: s.download_url, 'data-testid': 'download',
          onclick: (e) => { e.preventDefault(); downloadExport(s.export_id); } }, `Download ${s.file_name}`);
        put(result, h('div', { class: 'progress' }, bar, label),
          notice(`Done: ${s.record_count.toLocaleString()} records, ${fmtBytes(s.file_size)}. The file is kept until ${new Date(s.expires_at).toLocaleString()}.`, 'ok'),
          link);
        link.focus();
        return;
      }
      if (['failed', 'cancelled', 'expired'].includes(s.status)) {
        put(result, notice(`The export ${s.status}${s.error ? `: ${s.error}` : ''}.`, 'error'));
        return;
      }
      await new Promise((r) => { polling = setTimeout(r, 400); });
    }
  }

  const form = h('form', { class: 'export-form' },
    h('div', { class: 'form-grid' }, field('Export type', type), field('Format', format), field('Date range', preset),
      field('Aggregation', agg), field('Cost grouping', grouping), field('Time zone', tz), field('Compression', compression)),
    custom, devBoxes.set, fieldBoxes.set,
    h('h3', {}, 'Preview'), preview,
    h('div', { class: 'toolbar' }, submit), result, announce);
  form.addEventListener('change', later);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearTimeout(polling);
    submit.disabled = true;
    try {
      const job = await api('/api/exports/create', { method: 'POST', body: body() });
      await follow(job);
    } catch (err) {
      put(result, h('div', { role: 'alert' }, notice(errorText(err), 'error')));
    } finally {
      submit.disabled = false;
    }
  });
  modal(name ? `Export data: ${name}` : 'Export data', form, () => {
    closed = true;
    clearTimeout(polling);
    if (inflight) inflight.abort();
  });
  visibility();
  refreshPreview();
  type.focus();
}
