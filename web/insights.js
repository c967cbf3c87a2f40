// The Insights page: the household's always-on power and the billing period's forecast against
// its budget (with a chart), always-on per device with its yearly cost, the top consumers of the
// period, and the unusual days. Everything comes from GET /api/insights; the budget is set with
// PUT /api/insights/settings (SYSTEM_CONFIG).
import { api } from './api.js';
import { h, put, notice, errorText, field, fmtPower, fmtKwh, fmtMoney, tableBox, stacked } from './ui.js';
import { lineChart } from './chart.js';

const DAY = 86400000;
const dayMs = (d) => Date.parse(`${d}T00:00:00Z`);

/** One table with a header row and body rows of cells. */
function table(label, head, rows) {
  return tableBox(label, stacked(h('table', {},
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c) : h('td', {}, c)))))))));
}

/** The period's cumulative cost so far, then the projection (a straight line to the projected
 * total, with the low–high interval as a band). */
function forecastChart(f, currency) {
  let sum = 0;
  const points = f.days.map((d) => { sum += d.cost; return { t: dayMs(d.date), t2: dayMs(d.date) + DAY, v: sum }; });
  const end = dayMs(f.period_end) + DAY;
  const from = points.length ? points[points.length - 1].t2 : dayMs(f.period_start);
  if (f.projected_cost !== null && end > from) {
    const steps = Math.round((end - from) / DAY);
    for (let i = 1; i <= steps; i += 1) {
      const k = i / steps;
      const at = (x) => f.cost_so_far + (x - f.cost_so_far) * k;
      points.push({ t: from + (i - 1) * DAY, t2: from + i * DAY, v: at(f.projected_cost), lo: at(f.low), hi: at(f.high) });
    }
  }
  if (f.budget) for (const p of points) p.hi = Math.max(p.hi ?? 0, f.budget);
  const fmtT = (t) => new Date(t).toLocaleDateString(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
  return lineChart(`Cost this billing period${f.budget ? ` against a budget of ${fmtMoney(f.budget, currency)}` : ''}`,
    points, currency, fmtT, (v) => fmtMoney(v, currency));
}

function forecastText(f, currency) {
  const money = (v) => fmtMoney(v, currency);
  const parts = [`${f.period_start} to ${f.period_end}: ${money(f.cost_so_far)} so far`];
  if (f.projected_cost !== null) parts.push(`heading for ${money(f.projected_cost)} (${money(f.low)}–${money(f.high)})`);
  if (f.budget) parts.push(f.over_budget ? `over the budget of ${money(f.budget)}` : `within the budget of ${money(f.budget)}`);
  return parts.join(', ');
}

/** The budget form (SYSTEM_CONFIG). */
function budgetForm(current, currency, done) {
  const input = h('input', { type: 'number', min: '0', step: '0.01', name: 'budget', value: current ?? '' });
  const msg = h('div', { role: 'status' });
  return h('form', { class: 'row', 'aria-label': 'Budget', onsubmit: async (e) => {
    e.preventDefault();
    const v = input.value.trim();
    try {
      await api('/api/insights/settings', { method: 'PUT', body: { monthly_budget: v === '' ? null : Number(v) } });
      put(msg, notice('Budget saved.', 'ok'));
      done();
    } catch (err) { put(msg, notice(errorText(err), 'error')); }
  } }, field(`Budget per billing period (${currency}, empty for none)`, input), h('button', { type: 'submit' }, 'Save budget'), msg);
}

export async function show(root, ctx) {
  const r = await api('/api/insights');
  const cur = r.currency;
  const money = (v) => fmtMoney(v, cur);
  const f = r.forecast;
  const devices = r.devices;
  const alwaysOn = [...devices].filter((d) => d.device_type !== 'strip').sort((a, b) => a.learning - b.learning || b.always_on_w - a.always_on_w);
  const top = [...devices].filter((d) => d.device_type !== 'strip' && d.period_kwh > 0).sort((a, b) => b.period_cost - a.period_cost).slice(0, 10);
  const unusual = devices.flatMap((d) => d.unusual_days.map((u) => ({ ...u, name: d.device_name }))).sort((a, b) => b.date.localeCompare(a.date));
  const chart = forecastChart(f, cur);
  put(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Insights')),
    h('section', { class: 'card', 'data-testid': 'household' },
      h('h2', {}, 'Always on'),
      h('p', { class: 'power', 'data-testid': 'always-on-total' }, fmtPower(r.always_on_total_w)),
      h('p', { class: 'muted' }, `what the household draws when nobody uses anything: ${money(r.always_on_total_cost_per_year)} a year`)),
    h('section', { class: 'card', 'data-testid': 'forecast' },
      h('h2', {}, 'This billing period'),
      h('p', {}, forecastText(f, cur)),
      chart,
      ctx.can('SYSTEM_CONFIG') ? budgetForm(f.budget, cur, () => ctx.go('#/insights')) : null),
    h('section', { class: 'card' }, h('h2', {}, 'Always-on power per device'),
      table('Always-on power per device', ['Device', 'Always on', 'Per year', 'Cost per year', 'Based on'],
        alwaysOn.map((d) => [d.device_name, fmtPower(d.always_on_w), fmtKwh(d.always_on_kwh_per_year), money(d.always_on_cost_per_year),
          d.learning ? `${d.basis_hours} h (learning)` : `${Math.round(d.basis_hours)} h`]))),
    h('section', { class: 'card' }, h('h2', {}, 'Top consumers this period'),
      top.length ? table('Top consumers this period', ['Device', 'Energy', 'Cost', 'What it does'],
        top.map((d) => [d.device_name, fmtKwh(d.period_kwh), money(d.period_cost), d.summary])) : h('p', { class: 'muted' }, 'Nothing used yet this period.')),
    h('section', { class: 'card', 'data-testid': 'unusual' }, h('h2', {}, 'Unusual days'),
      unusual.length ? table('Unusual days', ['Day', 'Device', 'Energy', 'Usual for that weekday'],
        unusual.map((u) => [u.date, u.name, `${fmtKwh(u.energy_kwh)} (${u.direction})`, fmtKwh(u.typical_kwh)]))
        : h('p', { class: 'muted' }, 'No unusual days in the last two weeks (each day is compared with the same weekday of the weeks before).')));
}
