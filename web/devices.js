// The Devices page: the household first (power now, today's energy and cost, this billing
// period so far and its forecast, the always-on total), then a card per plug, strip and outlet
// with live power (refreshed every poll), today's energy and cost, its insight line, a relay
// switch (DEVICE_CONTROL) and an Export Data button (DATA_EXPORT only).
import { api } from './api.js';
import { h, put, notice, errorText, fmtPower, fmtKwh, fmtMoney } from './ui.js';
import { openExport } from './export.js';

/** Cards in display order: by room (devices without one last), each strip followed by its
 * outlets; an outlet in another room than its strip is shown in its own room. */
function ordered(devices) {
  const roomOf = (d) => d.room || '';
  const rooms = [...new Set(devices.map(roomOf))].sort((a, b) => (!a) - (!b) || a.localeCompare(b));
  const out = [];
  for (const room of rooms) {
    const here = devices.filter((d) => roomOf(d) === room);
    const outlets = here.filter((d) => d.parent_id);
    const shown = new Set();
    for (const d of here.filter((x) => !x.parent_id).sort((a, b) => a.device_name.localeCompare(b.device_name))) {
      out.push(d);
      for (const o of outlets.filter((x) => x.parent_id === d.device_id).sort((a, b) => a.outlet_index - b.outlet_index)) { out.push(o); shown.add(o); }
    }
    out.push(...outlets.filter((o) => !shown.has(o)).sort((a, b) => a.device_name.localeCompare(b.device_name)));
  }
  return out;
}

/** The grid's children: a heading before each room's cards (when any device has a room). */
function grouped(devices, cards) {
  if (!devices.some((d) => d.room)) return devices.map((d) => cards.get(d.device_id).el);
  const out = [];
  let room;
  for (const d of devices) {
    if ((d.room || '') !== room) {
      room = d.room || '';
      out.push(h('h2', { class: 'room', 'data-testid': 'room' }, room || 'No room'));
    }
    out.push(cards.get(d.device_id).el);
  }
  return out;
}

/** Forgotten devices with Restore (SYSTEM_CONFIG). */
async function forgotten(box, ctx, refresh) {
  const { devices } = await api('/api/devices?forgotten=true');
  if (!devices.length) { put(box); return; }
  put(box, h('details', { class: 'card', 'data-testid': 'forgotten' }, h('summary', {}, `Forgotten devices (${devices.length})`),
    h('ul', {}, devices.filter((d) => !d.parent_id || !devices.some((p) => p.device_id === d.parent_id)).map((d) => h('li', {},
      `${d.device_name} · ${d.model} · forgotten ${new Date(d.forgotten_at).toLocaleString()} `,
      h('button', { type: 'button', 'aria-label': `Restore ${d.device_name}`, onclick: async (e) => {
        e.target.disabled = true;
        try { await api(`/api/devices/${encodeURIComponent(d.device_id)}/restore`, { method: 'POST' }); } catch (err) { alert(errorText(err)); }
        refresh();
      } }, 'Restore'))))));
}

const statusText = { online: 'online', offline: 'offline', auth_required: 'needs credentials', unsupported: 'unsupported' };

/** Shows relay state `on` (true, false, or null = not known yet) on switch `b`. */
export function showRelay(b, on) {
  const known = on === true || on === false;
  b.setAttribute('aria-checked', known ? String(on) : 'mixed');
  b.textContent = known ? (on ? 'On' : 'Off') : '…';
  b.disabled = !known;
}

/** A relay switch for `d`. After a switch, readings older than it cannot flip it back. */
export function relayButton(ctx, d, isOn, onDone) {
  const b = h('button', { type: 'button', class: 'switch', role: 'switch', 'aria-label': `Power ${d.device_name}` });
  showRelay(b, isOn);
  b.addEventListener('click', async () => {
    const want = b.getAttribute('aria-checked') !== 'true';
    b.disabled = true;
    try {
      await api(`/api/devices/${encodeURIComponent(d.device_id)}/relay`, { method: 'POST', body: { on: want } });
      b.dataset.switchedAt = String(Date.now());
      showRelay(b, want);
      if (onDone) onDone();
    } catch (e) {
      b.disabled = false;
      alert(`${d.device_name}: ${errorText(e)}`);
    }
  });
  return b;
}

/** Updates switch `b` from a live row, unless the row predates the last switch. */
export function updateRelay(b, l) {
  if (!b || b.disabled && b.getAttribute('aria-checked') !== 'mixed') return;
  const since = Number(b.dataset.switchedAt || 0);
  // (For at most 30 s, in case the browser's clock runs ahead of the daemon's.)
  if (since && Date.now() - since < 30000 && !(l.reading_at && Date.parse(l.reading_at) > since)) return;
  showRelay(b, l.is_on);
}

function card(ctx, d) {
  const power = h('div', { class: 'power', 'data-testid': 'power' }, '—');
  const today = h('div', { class: 'muted', 'data-testid': 'today' }, '');
  const insight = h('div', { class: 'muted insight', 'data-testid': 'insight' }, '');
  const status = h('span', { class: 'badge' }, '');
  const actions = h('div', { class: 'actions' });
  const el = h('article', { class: `card device ${d.parent_id ? 'outlet' : ''}`, 'data-device-id': d.device_id, 'aria-label': d.device_name },
    h('h2', {}, h('a', { href: `#/device/${encodeURIComponent(d.device_id)}` }, d.device_name)),
    h('div', { class: 'muted' }, `${d.model} · ${d.parent_id ? `outlet ${d.outlet_index + 1}` : d.device_type} · ${d.device_ip}`),
    h('div', { class: 'row' }, power, status),
    today, insight, actions);
  return { el, power, today, insight, status, actions, d };
}

export async function show(root, ctx) {
  const grid = h('div', { class: 'grid', 'data-testid': 'device-grid' });
  const line = h('p', { class: 'muted' }, 'loading…');
  const problem = h('div', { role: 'alert' });
  const tools = h('div', { class: 'toolbar' });
  if (ctx.can('DEVICE_CONTROL')) {
    tools.append(h('button', { type: 'button', onclick: async (e) => {
      e.target.disabled = true;
      try { const r = await api('/api/devices/discover', { method: 'POST' }); put(problem, notice(`Discovery found ${r.found} device(s).`, 'ok')); } catch (err) { put(problem, notice(errorText(err), 'error')); }
      e.target.disabled = false;
      tick();
    } }, 'Discover devices'));
  }
  const lost = h('div', {});
  const summary = h('section', { class: 'card household', 'data-testid': 'household-summary', 'aria-label': 'Household' });
  put(root, h('div', { class: 'page-head' }, h('h1', {}, 'Devices'), tools), problem, summary, line, grid, lost);

  let cards = new Map();
  let key = '';
  let timer = null;
  let stopped = false;
  let busy = false; // one refresh at a time; a request meanwhile runs right after it
  let again = false;
  let insights = null; // GET /api/insights, fetched once a minute beside the live values
  let insightsAt = 0;
  let now = { power: 0, kwh: 0, cost: 0, currency: 'USD' };

  function paintSummary() {
    const money = (v) => fmtMoney(v, now.currency);
    const parts = [h('strong', { 'data-testid': 'household-power' }, fmtPower(now.power)), ' now',
      ` · today ${fmtKwh(now.kwh)} · ${money(now.cost)}`];
    if (insights) {
      const f = insights.forecast;
      parts.push(h('span', { 'data-testid': 'household-period' },
        ` · this billing period ${money(f.cost_so_far)}${f.projected_cost !== null ? `, heading for ${money(f.projected_cost)}` : ''}`
        + `${f.budget ? ` (budget ${money(f.budget)})` : ''}`),
      h('span', { 'data-testid': 'household-always-on' }, ` · always on ${fmtPower(insights.always_on_total_w)}`));
    }
    put(summary, h('p', {}, parts));
  }

  function paintInsights() {
    if (!insights) return;
    const byId = new Map(insights.devices.map((d) => [d.device_id, d]));
    for (const c of cards.values()) {
      const i = byId.get(c.d.device_id);
      c.insight.textContent = i && i.device_type !== 'strip' ? `${i.load_kind}: ${i.summary}` : '';
    }
    paintSummary();
  }

  async function tick() {
    if (busy) { again = true; return; }
    busy = true;
    clearTimeout(timer);
    let delay = 10000;
    try {
      const [list, live] = await Promise.all([api('/api/devices'), api('/api/devices/live')]);
      delay = Math.min(10000, Math.max(1000, live.poll_interval_s * 1000));
      const devices = ordered(list.devices);
      const k = devices.map((d) => `${d.device_id}:${d.room || ''}:${d.device_name}`).join();
      if (k !== key) {
        key = k;
        cards = new Map(devices.map((d) => [d.device_id, card(ctx, d)]));
        put(grid, grouped(devices, cards));
        if (ctx.can('SYSTEM_CONFIG')) forgotten(lost, ctx, tick).catch((e) => put(lost, notice(errorText(e), 'error')));
        if (!devices.length) put(grid, notice('No devices yet. kasad finds plugs on the LAN by discovery; add static ones in the configuration.'));
      }
      const byId = new Map(live.devices.map((l) => [l.device_id, l]));
      let total = 0;
      for (const d of devices) {
        const c = cards.get(d.device_id);
        const l = byId.get(d.device_id) || {};
        c.d = d;
        c.power.textContent = l.power_w !== null && l.power_w !== undefined ? fmtPower(l.power_w) : (l.is_on === null || l.is_on === undefined ? '—' : l.is_on ? 'on' : 'off');
        if (!d.parent_id && l.power_w) total += l.power_w;
        c.today.textContent = `today ${d.has_emeter ? fmtKwh(l.today_energy_kwh) : 'no meter'}${d.has_emeter ? ` · ${fmtMoney(l.today_cost, live.currency)}` : ''}`;
        c.status.textContent = statusText[d.status] || d.status;
        c.status.className = `badge ${d.online ? 'ok' : 'bad'}`;
        if (!c.actions.childElementCount) {
          if (ctx.can('DEVICE_CONTROL') && d.device_type !== 'strip') c.actions.append(relayButton(ctx, d, l.is_on, tick));
          if (ctx.can('DATA_EXPORT')) c.actions.append(h('button', { type: 'button', class: 'primary', onclick: () => openExport(ctx, { devices: [d.device_id], name: d.device_name }) }, 'Export Data'));
        } else {
          updateRelay(c.actions.querySelector('.switch'), l);
        }
      }
      line.textContent = `${devices.filter((d) => !d.parent_id).length} devices · ${fmtPower(total)} now · updated ${new Date(live.at).toLocaleTimeString()}`;
      const top = devices.filter((d) => !d.parent_id).map((d) => byId.get(d.device_id) || {});
      now = { power: total, kwh: top.reduce((a, l) => a + (l.today_energy_kwh || 0), 0),
        cost: top.reduce((a, l) => a + (l.today_cost || 0), 0), currency: live.currency };
      paintSummary();
      if (Date.now() - insightsAt > 60000) {
        insightsAt = Date.now();
        api('/api/insights').then((r) => { insights = r; paintInsights(); }).catch(() => { insightsAt = 0; });
      } else paintInsights();
      if (problem.querySelector('.error')) put(problem);
    } catch (e) {
      put(problem, notice(`Not updated: ${errorText(e)}`, 'error'));
    }
    busy = false;
    if (stopped) return;
    if (again) { again = false; tick(); } else timer = setTimeout(tick, delay);
  }
  await tick();
  return () => { stopped = true; clearTimeout(timer); };
}
