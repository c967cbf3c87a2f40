// Alerts: the bell in the header (open alerts, acknowledge, snooze for an hour) and the
// Alerts page (recent alerts; the rules, with a form to add one, "Send test" and Delete for
// SYSTEM_CONFIG). Everything comes from /api/alerts and /api/alerts/rules.
import { api } from './api.js';
import { h, put, notice, errorText, field, select, modal, tableBox, stacked } from './ui.js';

const KINDS = [
  ['power_above', 'Power above (W) for some minutes'],
  ['power_below', 'Power below (W) for some minutes'],
  ['device_offline', 'Device offline for some minutes'],
  ['appliance_finished', 'Appliance finished a run'],
  ['daily_energy_above', 'Energy today above (kWh)'],
  ['standby_above', 'Always-on power above (W), checked daily'],
  ['unusual_day', 'Unusual day, checked daily'],
  ['cycle_drift', 'Duty-cycle drift (%), checked daily'],
  ['budget_forecast', 'Billing-period forecast over budget, checked daily'],
];

const when = (t) => (t ? new Date(t).toLocaleString() : '—');

/** The alerts of `list` as a list with Acknowledge / Snooze (DEVICE_CONTROL). */
function alertList(ctx, list, done) {
  if (!list.length) return h('p', { class: 'muted' }, 'No open alerts.');
  return h('ul', { class: 'alerts', 'data-testid': 'alert-list' }, list.map((a) => h('li', { class: 'card', 'data-alert-id': a.alert_id },
    h('div', {}, h('strong', {}, a.message)),
    h('div', { class: 'muted' }, `${a.kind} · ${a.state} · raised ${when(a.raised_at)}${a.snoozed_until ? ` · snoozed until ${when(a.snoozed_until)}` : ''}`),
    ctx.can('DEVICE_CONTROL') && a.state !== 'resolved' ? h('div', { class: 'actions' },
      a.state === 'open' ? h('button', { type: 'button', onclick: async (e) => {
        e.target.disabled = true;
        try { await api(`/api/alerts/${encodeURIComponent(a.alert_id)}/acknowledge`, { method: 'POST' }); } catch (err) { alert(errorText(err)); }
        done();
      } }, 'Acknowledge') : null,
      h('button', { type: 'button', onclick: async (e) => {
        e.target.disabled = true;
        try { await api(`/api/alerts/${encodeURIComponent(a.alert_id)}/snooze`, { method: 'POST', body: { minutes: 60 } }); } catch (err) { alert(errorText(err)); }
        done();
      } }, 'Snooze 1 h')) : null)));
}

/** The bell: the number of open alerts, refreshed every 30 s; a click lists them. */
export function bell(ctx) {
  const count = h('span', { class: 'badge bad', 'data-testid': 'bell-count', hidden: true }, '');
  const button = h('button', { type: 'button', class: 'bell', 'aria-label': 'Alerts', 'data-testid': 'bell' }, 'Alerts ', count);
  let open = [];
  async function refresh() {
    try {
      open = (await api('/api/alerts?state=open')).alerts;
      count.textContent = String(open.length);
      count.hidden = open.length === 0;
      button.setAttribute('aria-label', `Alerts: ${open.length} open`);
    } catch { /* shown again at the next refresh */ }
  }
  button.addEventListener('click', async () => {
    await refresh();
    const body = h('div', {});
    const { close } = modal('Open alerts', body);
    const redraw = async () => { await refresh(); put(body, alertList(ctx, open, redraw), h('p', {}, h('a', { href: '#/alerts', onclick: () => close() }, 'All alerts and rules'))); };
    redraw();
  });
  refresh();
  const timer = setInterval(refresh, 30000);
  return { el: button, refresh, stop: () => clearInterval(timer) };
}

/** The form that adds a rule (SYSTEM_CONFIG). */
function ruleForm(done) {
  const name = h('input', { required: true, maxlength: 100 });
  const kind = select(KINDS, 'power_above');
  const devices = h('input', { value: 'all' });
  const threshold = h('input', { type: 'number', step: 'any', min: '0' });
  const minutes = h('input', { type: 'number', min: '0', max: '10080' });
  const percent = h('input', { type: 'number', step: 'any', min: '0' });
  const kwh = h('input', { type: 'number', step: 'any', min: '0' });
  const email = h('input', { type: 'text', placeholder: 'me@example.org, …' });
  const webhook = h('input', { type: 'url', placeholder: 'under [delivery] webhook_allow' });
  const mqtt = h('input', { type: 'checkbox' });
  const quietFrom = h('input', { type: 'time' });
  const quietTo = h('input', { type: 'time' });
  const msg = h('div', { role: 'status' });
  const num = (el) => (el.value === '' ? undefined : Number(el.value));
  return h('form', { class: 'card', 'aria-label': 'New alert rule', onsubmit: async (e) => {
    e.preventDefault();
    const channels = ['page'];
    if (email.value.trim()) channels.push({ method: 'email', recipients: email.value.split(',').map((x) => x.trim()).filter(Boolean) });
    if (webhook.value.trim()) channels.push({ method: 'webhook', url: webhook.value.trim() });
    if (mqtt.checked) channels.push('mqtt');
    const d = devices.value.trim();
    const body = { name: name.value, kind: kind.value, channels,
      devices: d === 'all' || d === '' ? 'all' : d.split(',').map((x) => x.trim()).filter(Boolean),
      threshold_w: num(threshold), for_minutes: num(minutes), percent: num(percent), kwh: num(kwh) };
    if (quietFrom.value && quietTo.value) body.quiet_hours = { start: quietFrom.value, end: quietTo.value };
    try {
      await api('/api/alerts/rules', { method: 'POST', body });
      put(msg, notice('Rule added.', 'ok'));
      done();
    } catch (err) { put(msg, notice(errorText(err), 'error')); }
  } },
  h('h2', {}, 'New rule'),
  field('Name', name), field('Kind', kind),
  field('Devices', devices, '"all", or device ids, IP addresses and room:Name, comma-separated'),
  field('Threshold (W)', threshold), field('For minutes', minutes), field('Drift (%)', percent), field('Energy (kWh)', kwh),
  field('E-mail to', email), field('Webhook URL', webhook), field('Also to MQTT', mqtt),
  field('Quiet from', quietFrom), field('Quiet until', quietTo),
  h('button', { type: 'submit', class: 'primary' }, 'Add rule'), msg);
}

function channelText(c) {
  if (typeof c === 'string') return c;
  return c.method === 'email' ? `e-mail ${c.recipients.join(', ')}` : `webhook${c.signed ? ' (signed)' : ''}`;
}

export async function show(root, ctx) {
  const [{ alerts }, { rules }] = await Promise.all([api('/api/alerts?limit=50'), api('/api/alerts/rules')]);
  const msg = h('div', { role: 'status' });
  const redraw = () => ctx.go('#/alerts');
  const rows = rules.map((r) => [r.name, r.kind, Array.isArray(r.devices) ? r.devices.join(', ') : r.devices, r.channels.map(channelText).join('; '),
    ctx.can('SYSTEM_CONFIG') ? h('span', { class: 'actions' },
      h('button', { type: 'button', 'aria-label': `Send test: ${r.name}`, onclick: async () => {
        try {
          const t = await api(`/api/alerts/rules/${encodeURIComponent(r.rule_id)}/test`, { method: 'POST' });
          put(msg, notice(t.results.map((x) => `${typeof x.channel === 'string' ? x.channel : JSON.stringify(x.channel)}: ${x.ok ? 'ok' : 'failed'} (${x.message})`).join(' · '), t.results.every((x) => x.ok) ? 'ok' : 'error'));
        } catch (err) { put(msg, notice(errorText(err), 'error')); }
      } }, 'Send test'),
      h('button', { type: 'button', 'aria-label': `Delete ${r.name}`, onclick: async () => {
        if (!confirm(`Delete the rule "${r.name}"?`)) return;
        try { await api(`/api/alerts/rules/${encodeURIComponent(r.rule_id)}`, { method: 'DELETE' }); redraw(); } catch (err) { put(msg, notice(errorText(err), 'error')); }
      } }, 'Delete')) : '']);
  put(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Alerts')),
    msg,
    h('section', { class: 'card' }, h('h2', {}, 'Recent alerts'), alertList(ctx, alerts, redraw)),
    h('section', { class: 'card' }, h('h2', {}, 'Rules'),
      rules.length ? tableBox('Alert rules', stacked(h('table', {},
        h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Devices', 'Channels', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c) : h('td', {}, c))))))))) : h('p', { class: 'muted' }, 'No rules yet.')),
    ctx.can('SYSTEM_CONFIG') ? ruleForm(redraw) : null);
}
