// The device detail page: facts about one device and its power and energy charts over
// 24 h / 7 d / 30 d / 1 y, read from the 15-minute rollups in the browser's time zone.
import { api } from './api.js';
import { h, put, notice, errorText, fmtPower, fmtKwh, fmtTime, field, modal } from './ui.js';
import { barChart, lineChart } from './chart.js';
import { openExport } from './export.js';
import { relayButton } from './devices.js';

const RANGES = [
  { key: '24h', label: '24 h', ms: 86400e3, res: '15m', step: 900e3 },
  { key: '7d', label: '7 days', ms: 7 * 86400e3, res: 'hour', step: 3600e3 },
  { key: '30d', label: '30 days', ms: 30 * 86400e3, res: 'day', step: 86400e3 },
  { key: '1y', label: '1 year', ms: 365 * 86400e3, res: 'week', step: 7 * 86400e3 },
];
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

function timeLabel(range) {
  if (range.key === '24h') return (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return (t) => new Date(t).toLocaleDateString([], { month: 'short', day: 'numeric' });
}

export async function show(root, ctx, id, rangeKey = '24h') {
  const { devices } = await api('/api/devices');
  const d = devices.find((x) => x.device_id === id);
  if (!d) { put(root, notice(`No device ${id}.`, 'error')); return; }
  const range = RANGES.find((r) => r.key === rangeKey) || RANGES[0];
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Time range' },
    RANGES.map((r) => h('a', { href: `#/device/${encodeURIComponent(id)}/${r.key}`, class: 'tab', 'aria-current': r === range ? 'true' : null }, r.label)));
  const actions = h('div', { class: 'toolbar' });
  if (ctx.can('DATA_EXPORT')) actions.append(h('button', { type: 'button', class: 'primary', onclick: () => openExport(ctx, { devices: [id], name: d.device_name }) }, 'Export Data'));
  if (ctx.can('DEVICE_CONTROL') && d.device_type !== 'strip') {
    const live = await api('/api/devices/live');
    const l = live.devices.find((x) => x.device_id === id) || {};
    actions.prepend(relayButton(ctx, d, l.is_on));
  }
  if (ctx.can('SYSTEM_CONFIG')) actions.append(h('button', { type: 'button', class: 'danger', onclick: () => forget(ctx, d) }, 'Forget'));
  const charts = h('div', { class: 'charts' }, h('p', { class: 'muted' }, 'loading…'));
  const sums = h('p', { class: 'muted', 'data-testid': 'range-summary' });
  put(root,
    h('p', {}, h('a', { href: '#/devices' }, '‹ All devices')),
    h('div', { class: 'page-head' }, h('h1', {}, d.device_name), actions),
    h('dl', { class: 'facts' }, [
      ['Room', d.room], ['Device\'s own name', d.device_alias !== d.device_name ? d.device_alias : null],
      ['Rated power', d.rated_power_w ? fmtPower(d.rated_power_w) : null], ['Notes', d.notes],
      ['Model', d.model], ['Type', d.parent_id ? `outlet ${d.outlet_index + 1} of a strip` : d.device_type], ['Address', d.device_ip],
      ['Status', d.status], ['Last seen', fmtTime(d.last_seen)], ['Readings', d.data_points.toLocaleString()],
      ['Firmware', d.sw_ver], ['Protocol', d.transport],
    ].filter(([k, v], i) => i > 3 || (v !== null && v !== undefined)).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')])),
    tabs, sums, charts,
    ctx.can('SYSTEM_CONFIG') ? editor(ctx, d) : null);

  const end = Date.now();
  const start = end - range.ms;
  try {
    const q = new URLSearchParams({ start: new Date(start).toISOString(), end: new Date(end).toISOString(), resolution: range.res, timezone: zone });
    const { readings } = await api(`/api/devices/${encodeURIComponent(id)}/readings?${q}`);
    const pts = readings.map((r, i) => {
      const t = Date.parse(r.timestamp);
      const next = readings[i + 1] ? Date.parse(readings[i + 1].timestamp) : Math.min(end, t + range.step);
      return { t, t2: Math.max(next, t + 1), r };
    });
    const fmtT = timeLabel(range);
    const power = lineChart(`Power, ${range.label} (average with min–max band)`,
      pts.map((p) => ({ t: p.t, t2: p.t2, v: p.r.power_w, lo: p.r.power_min_w, hi: p.r.power_max_w })), 'W', fmtT, fmtPower);
    const energy = barChart(`Energy per ${range.res === '15m' ? '15 minutes' : range.res}, ${range.label}`,
      pts.map((p) => ({ t: p.t, t2: p.t2, v: p.r.energy_kwh })), 'kWh', fmtT, fmtKwh);
    const total = readings.reduce((a, r) => a + (r.energy_kwh || 0), 0);
    const peak = Math.max(0, ...readings.map((r) => r.power_max_w || 0));
    sums.textContent = readings.length ? `${fmtKwh(total)} in the last ${range.label} · peak ${fmtPower(peak)} · ${zone}` : '';
    if (!readings.length) put(charts, notice('No readings in this range yet.'));
    else if (!d.has_emeter) put(charts, notice('This device has no energy meter: kasad records its relay state and on-time only.'));
    else put(charts, h('figure', {}, h('figcaption', {}, 'Power'), power), h('figure', {}, h('figcaption', {}, 'Energy'), energy));
  } catch (e) {
    put(charts, notice(errorText(e), 'error'));
  }
}

/** The settings form (SYSTEM_CONFIG): kasad's name, room, rated power and notes; an empty
 * field clears its value (the name then falls back to the device's own). */
function editor(ctx, d) {
  const val = (attrs, v) => Object.assign(h('input', attrs), { value: v ?? '' });
  const name = val({ maxlength: 64, placeholder: d.device_alias }, d.device_name !== d.device_alias ? d.device_name : '');
  const room = val({ maxlength: 64, list: 'rooms' }, d.room);
  const watts = val({ type: 'number', min: 0, max: 100000, step: 'any', inputmode: 'decimal' }, d.rated_power_w);
  const notes = Object.assign(h('textarea', { rows: 2, maxlength: 1000 }), { value: d.notes ?? '' });
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card', 'aria-label': 'Device settings', 'data-testid': 'device-settings' },
    h('h2', {}, 'Settings'),
    h('div', { class: 'form-grid' }, field('Name', name, `empty: the device's own (${d.device_alias})`), field('Room', room),
      field('Rated power (W)', watts, 'for rated_power in export formulas'), field('Notes', notes)),
    h('button', { type: 'submit', class: 'primary' }, 'Save'), status);
  const text = (el) => (el.value.trim() === '' ? null : el.value.trim());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api(`/api/devices/${encodeURIComponent(d.device_id)}`, { method: 'PATCH',
        body: { name: text(name), room: text(room), notes: text(notes), rated_power_w: watts.value === '' ? null : Number(watts.value) } });
      ctx.go(location.hash);
    } catch (err) { put(status, notice(errorText(err), 'error')); }
  });
  return form;
}

/** Forget, after a confirmation that says what purging deletes. */
function forget(ctx, d) {
  const purge = h('input', { type: 'checkbox' });
  const status = h('div', { 'aria-live': 'polite' });
  const what = d.device_type === 'strip' ? 'this strip and its outlets' : 'this device';
  const go = h('button', { type: 'button', class: 'danger' }, 'Forget');
  const { close } = modal(`Forget ${d.device_name}?`, h('div', {},
    h('p', {}, `kasad stops polling ${what} and discovery leaves it alone until you restore it (Devices, Forgotten devices). Its history is kept.`),
    h('label', {}, purge, ` Also delete its ${d.data_points.toLocaleString()} readings and all its 15-minute totals: this cannot be undone.`),
    h('div', { class: 'toolbar' }, go, h('button', { type: 'button', onclick: () => close() }, 'Cancel')), status));
  go.addEventListener('click', async () => {
    go.disabled = true;
    try {
      await api(`/api/devices/${encodeURIComponent(d.device_id)}${purge.checked ? '?purge=true' : ''}`, { method: 'DELETE' });
      close();
      ctx.go('#/devices');
    } catch (err) { go.disabled = false; put(status, notice(errorText(err), 'error')); }
  });
}
