// The device detail page: facts about one device and its power and energy charts over
// 24 h / 7 d / 30 d / 1 y, read from the 15-minute rollups in the browser's time zone.
import { api } from './api.js';
import { h, put, notice, errorText, fmtPower, fmtKwh, fmtTime } from './ui.js';
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
  const charts = h('div', { class: 'charts' }, h('p', { class: 'muted' }, 'loading…'));
  const sums = h('p', { class: 'muted', 'data-testid': 'range-summary' });
  put(root,
    h('p', {}, h('a', { href: '#/devices' }, '‹ All devices')),
    h('div', { class: 'page-head' }, h('h1', {}, d.device_name), actions),
    h('dl', { class: 'facts' }, [
      ['Model', d.model], ['Type', d.parent_id ? `outlet ${d.outlet_index + 1} of a strip` : d.device_type], ['Address', d.device_ip],
      ['Status', d.status], ['Last seen', fmtTime(d.last_seen)], ['Readings', d.data_points.toLocaleString()],
      ['Firmware', d.sw_ver], ['Protocol', d.transport],
    ].map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')])),
    tabs, sums, charts);

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
