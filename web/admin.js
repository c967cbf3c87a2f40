// The Admin page: users (USER_MANAGE), the audit log (AUDIT_READ), tariffs and system health (SYSTEM_CONFIG).
import { api } from './api.js';
import { h, put, notice, errorText, field, select, pager, fmtTime, fmtWait, fmtBytes, localInput, tableBox } from './ui.js';

const ROLES = ['admin', 'operator', 'viewer'].map((r) => [r, r]);
const EVENTS = ['DATA_EXPORT', 'DATA_EXPORTED', 'DATA_DELETED', 'PERMISSION_DENIED', 'RATE_LIMIT_EXCEEDED', 'LOGIN_SUCCESS',
  'LOGIN_FAILURE', 'LOGOUT', 'DEVICE_CONTROLLED', 'USER_CREATED', 'USER_UPDATED', 'USER_DELETED', 'AUDIT_RETENTION',
  'EXPORT_EXPIRING', 'TARIFF_CHANGED', 'SCHEDULE_CHANGED', 'EXPORT_DELIVERED', 'DELIVERY_FAILED', 'BACKUP_CREATED',
  'DATA_IMPORTED', 'REFRESH_TOKEN_REUSED', 'DEVICE_UPDATED', 'DEVICE_DELETED', 'DEVICE_RESTORED', 'SETTINGS_CHANGED', 'ALERT_RULE_CHANGED', 'ALERT_RAISED', 'ALERT_RESOLVED', 'ALERT_ACKNOWLEDGED', 'BILL_CHANGED'];
const SEVERITY_BADGE = { INFO: '', WARNING: 'warn', ERROR: 'bad', CRITICAL: 'bad' };
const LIMIT = 20;

const section = (id, title, ...children) =>
  h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), ...children);
const table = (testid, caption, cols, rows) => tableBox(caption, h('table', { 'data-testid': testid },
  h('caption', {}, caption), h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows)));
const statusLine = () => {
  const el = h('div', { 'aria-live': 'polite' });
  return [el, (text, kind = 'info') => put(el, notice(text, kind))];
};
const input = (attrs, value) => Object.assign(h('input', attrs), { value: value ?? '' });
// A datetime-local value as an RFC 3339 instant (text the browser could not read is passed on for the API to name).
const iso = (local) => { const d = new Date(local); return !local ? null : Number.isNaN(d.getTime()) ? local : d.toISOString(); };

/** An audit entry's details as labelled values (nested objects as nested lists). */
function details(d, depth = 0) {
  if (d === null || d === undefined) return h('span', { class: 'muted' }, '—');
  if (Array.isArray(d)) {
    if (d.every((x) => x === null || typeof x !== 'object')) return d.length ? d.join(', ') : '—';
    return h('ol', {}, d.map((x) => h('li', {}, details(x, depth + 1))));
  }
  if (typeof d !== 'object') return String(d);
  if (depth > 2) return h('code', { class: 'json' }, JSON.stringify(d));
  const label = (k) => k.replace(/_/g, ' ');
  return h('dl', { class: 'details' }, Object.entries(d).map(([k, v]) => [h('dt', {}, label(k)), h('dd', {}, details(v, depth + 1))]));
}

/** Users: list, create, change role, disable/enable, delete (never yourself). */
function users(ctx) {
  const [status, say] = statusLine();
  const list = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  const change = async (u, body, done) => {
    try {
      await api(`/api/users/${u.user_id}`, { method: 'PATCH', body });
      say(done, 'ok');
    } catch (e) { say(`${u.username}: ${errorText(e)}`, 'error'); }
    load();
  };
  const row = (u) => {
    const self = u.user_id === ctx.me.user_id;
    const role = select(ROLES, u.role, { 'aria-label': `Role of ${u.username}`, disabled: self });
    role.addEventListener('change', () => change(u, { role: role.value }, `${u.username} is now ${role.value}.`));
    const extra = (u.permissions || []).length ? h('div', { class: 'muted' }, `extra: ${u.permissions.join(', ')}`) : null;
    return h('tr', { 'data-user-id': u.user_id },
      h('th', { scope: 'row' }, u.username, self ? h('span', { class: 'muted' }, ' (you)') : null),
      h('td', {}, role),
      h('td', {}, h('span', { class: `badge ${u.disabled ? 'bad' : 'ok'}` }, u.disabled ? 'disabled' : 'active')),
      h('td', {}, (u.effective_permissions || []).join(', ') || '—', extra),
      h('td', {}, self ? h('span', { class: 'muted' }, 'your own account') : h('div', { class: 'toolbar' },
        h('button', { type: 'button', onclick: () => change(u, { disabled: !u.disabled }, `${u.username} ${u.disabled ? 'enabled' : 'disabled'}.`) },
          u.disabled ? 'Enable' : 'Disable'),
        h('button', { type: 'button', class: 'danger', onclick: () => remove(u) }, 'Delete'))));
  };
  async function remove(u) {
    if (!confirm(`Delete the user "${u.username}"? This cannot be undone.`)) return;
    try {
      await api(`/api/users/${u.user_id}`, { method: 'DELETE' });
      say(`${u.username} deleted.`, 'ok');
    } catch (e) { say(errorText(e), 'error'); }
    load();
  }
  async function load() {
    try {
      const r = await api('/api/users');
      put(list, table('users-table', `${r.users.length} user${r.users.length === 1 ? '' : 's'}`, ['Username', 'Role', 'Status', 'Permissions', 'Actions'], r.users.map(row)));
    } catch (e) { put(list, notice(errorText(e), 'error')); }
  }
  const name = input({ required: true, maxlength: 64, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', pattern: '[A-Za-z0-9._@\\-]+' });
  const pass = input({ type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const role = select(ROLES, 'viewer');
  const form = h('form', { 'aria-label': 'Create a user' }, h('h3', {}, 'New user'),
    h('div', { class: 'form-grid' }, field('Username', name, 'letters, digits, . _ - @'), field('Password', pass, 'at least 8 characters'), field('Role', role)),
    h('button', { type: 'submit', class: 'primary' }, 'Create user'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const u = await api('/api/users', { method: 'POST', body: { username: name.value.trim(), password: pass.value, role: role.value } });
      say(`${u.username} created as ${u.role}.`, 'ok');
      form.reset();
      load();
    } catch (err) { say(errorText(err), 'error'); }
  });
  load();
  return section('admin-users', 'Users', status, list, form);
}

/** Audit log: filters, one page of entries, and the chain check. */
function audit() {
  const [status, say] = statusLine();
  const event = select([['', 'any event'], ...EVENTS.map((x) => [x, x])], '');
  const severity = select([['', 'any severity'], ...Object.keys(SEVERITY_BADGE).map((x) => [x, x])], '');
  const user = input({ autocapitalize: 'none', spellcheck: 'false', placeholder: 'username' });
  const start = input({ type: 'datetime-local' });
  const end = input({ type: 'datetime-local' });
  const list = h('div', {});
  const verifyBox = h('div', { 'data-testid': 'audit-verify', 'aria-live': 'polite' });
  const detail = (d) => (d === null || d === undefined ? '—' : details(d));
  async function load(offset = 0) {
    const q = new URLSearchParams({ limit: LIMIT, offset });
    const add = (k, v) => { if (v) q.set(k, v); };
    add('event_types', event.value); add('severity_levels', severity.value); add('users', user.value.trim());
    add('start', iso(start.value)); add('end', iso(end.value));
    try {
      const r = await api(`/api/audit?${q}`);
      put(status);
      put(list, r.entries.length ? [table('audit-table', 'Audit entries, newest first', ['Time', 'Event', 'Severity', 'User', 'Resource', 'Client', 'Details'],
        r.entries.map((x) => h('tr', { 'data-seq': x.seq },
          h('td', {}, fmtTime(x.timestamp)), h('td', {}, x.event_type),
          h('td', {}, h('span', { class: `badge ${SEVERITY_BADGE[x.severity] || ''}` }, x.severity)),
          h('td', {}, x.username || (x.user_id ? `#${x.user_id}` : '—')), h('td', { class: 'wrap' }, x.resource || '—'),
          h('td', {}, x.client_address || '—'), h('td', {}, detail(x.details))))),
      pager(r.total, r.offset, LIMIT, load)] : h('p', { class: 'muted' }, 'No entries match these filters.'));
    } catch (e) { say(errorText(e), 'error'); }
  }
  const filters = h('form', { class: 'toolbar', 'aria-label': 'Audit filters' },
    field('Event', event), field('Severity', severity), field('User', user), field('From', start), field('Until', end),
    h('button', { type: 'submit' }, 'Apply'), h('button', { type: 'reset' }, 'Clear'));
  filters.addEventListener('submit', (e) => { e.preventDefault(); load(0); });
  filters.addEventListener('reset', () => setTimeout(() => load(0)));
  const verify = h('button', { type: 'button' }, 'Verify chain');
  verify.addEventListener('click', async () => {
    verify.disabled = true;
    try {
      const v = await api('/api/audit/verify');
      put(verifyBox, v.ok ? notice(`Chain intact: ${v.checked} entries checked.`, 'ok')
        : notice(`Chain broken at entry ${v.first_bad_seq}: ${v.reason} (${v.checked} entries checked).`, 'error'));
    } catch (e) { put(verifyBox, notice(errorText(e), 'error')); } finally { verify.disabled = false; }
  });
  load(0);
  return section('admin-audit', 'Audit log', filters, h('div', { class: 'toolbar' }, verify), verifyBox, status, list);
}

/** Tariffs: the versions, a flat-rate version form and a whole tariff as JSON. */
function tariffs() {
  const [status, say] = statusLine();
  const list = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  const midnight = new Date(); midnight.setHours(24, 0, 0, 0);
  const price = input({ type: 'number', required: true, min: 0, step: 'any', inputmode: 'decimal' });
  const currency = input({ required: true, maxlength: 3, pattern: '[A-Za-z]{3}', autocapitalize: 'characters' });
  const from = input({ type: 'datetime-local', required: true, step: 900 }, localInput(midnight));
  const keep = h('input', { type: 'checkbox', checked: true });
  const json = h('textarea', { rows: 12, spellcheck: 'false' });
  let newest = null;
  const draw = (r) => {
    newest = r.versions[r.versions.length - 1].tariff;
    currency.value ||= newest.currency;
    json.value ||= JSON.stringify({ ...newest, effective_from: iso(from.value) }, null, 2);
    put(list, table('tariffs-table', 'Tariff versions', ['Version', 'Effective from', 'Time zone', 'Summary', 'In force'],
      r.versions.map((v) => h('tr', {}, h('td', {}, v.version), h('td', {}, v.effective_from ? fmtTime(v.effective_from) : 'from the start'),
        h('td', {}, v.timezone), h('td', {}, v.summary),
        h('td', {}, v.version === r.in_force ? h('span', { class: 'badge ok' }, 'in force') : v.version > r.in_force ? 'upcoming' : '')))));
  };
  const submit = async (body) => {
    try {
      const r = await api('/api/tariffs', { method: 'PUT', body });
      draw(r);
      say(`Version ${r.versions.length} added; its prices apply from ${fmtTime(body.effective_from)}.`, 'ok');
    } catch (e) { say(errorText(e), 'error'); }
  };
  const flat = h('form', { 'aria-label': 'Add a flat-rate version' }, h('h3', {}, 'New flat-rate version'),
    h('div', { class: 'form-grid' }, field('Price per kWh', price), field('Currency', currency, 'ISO code; stays the same across versions'),
      field('Effective from', from, 'not in the past, on a quarter hour')),
    h('label', {}, keep, ' Keep the fixed charges and taxes of the newest version'),
    h('button', { type: 'submit', class: 'primary' }, 'Add version'));
  flat.addEventListener('submit', (e) => {
    e.preventDefault();
    const base = { ...(newest || {}) };
    for (const k of ['rates', 'seasons', 'holidays', 'effective_from', ...(keep.checked ? [] : ['fixed_charges', 'taxes'])]) delete base[k];
    submit({ ...base, price_per_kwh: Number(price.value), currency: currency.value.trim().toUpperCase(), effective_from: iso(from.value) });
  });
  const advanced = h('form', { 'aria-label': 'Add a version as JSON' }, field('Tariff (JSON)', json, 'a whole tariff: rates, seasons, fixed_charges, taxes … and effective_from'),
    h('button', { type: 'submit' }, 'Add version'));
  advanced.addEventListener('submit', (e) => {
    e.preventDefault();
    let body;
    try { body = JSON.parse(json.value); } catch (err) { say(`The JSON does not parse: ${err.message}`, 'error'); return; }
    submit(body);
  });
  api('/api/tariffs').then(draw, (e) => put(list, notice(errorText(e), 'error')));
  return section('admin-tariffs', 'Tariffs', list, status, flat,
    h('details', {}, h('summary', {}, 'Advanced: add a version as JSON'), advanced),
    compareForm(() => newest));
}

/** What if: the last 30 days (or any range) priced under the tariff in force and another one. */
function compareForm(current) {
  const today = new Date();
  const day = (d) => d.toISOString().slice(0, 10);
  const start = input({ type: 'date', required: true }, day(new Date(today - 30 * 86400000)));
  const end = input({ type: 'date', required: true }, day(new Date(today - 86400000)));
  const other = h('textarea', { rows: 8, spellcheck: 'false' }, '{"price_per_kwh": 0.25}');
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { 'aria-label': 'Compare tariffs' }, h('h3', {}, 'What if: compare with another tariff'),
    h('div', { class: 'form-grid' }, field('From', start), field('To', end)),
    field('Other tariff (JSON)', other, 'a whole tariff, as for a new version; effective_from is ignored'),
    h('button', { type: 'submit' }, 'Compare'), out);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    let tariff;
    try { tariff = JSON.parse(other.value); } catch (err) { put(out, notice(`The JSON does not parse: ${err.message}`, 'error')); return; }
    const now = { ...(current() || {}) };
    delete now.effective_from;
    try {
      const r = await api('/api/tariffs/compare', { method: 'POST', body: { date_range: { start: start.value, end: end.value },
        tariffs: [{ name: 'In force', tariff: now }, { name: 'Other', tariff }] } });
      put(out, table('compare-table', 'Tariffs compared', ['Tariff', 'Energy', 'Fixed charges', 'Taxes', 'Total', 'Savings'],
        r.results.map((x) => h('tr', {}, h('td', {}, x.name), ...[x.energy_cost, x.fixed_charges, x.taxes, x.total, x.savings]
          .map((v) => h('td', {}, Number(v).toFixed(2)))))),
      h('p', {}, `Cheapest: ${r.cheapest.name} (${r.currency}).`));
    } catch (err) { put(out, notice(errorText(err), 'error')); }
  });
  return form;
}

/** System health as a definition list; a degraded daemon answers 503 with the same body. */
function health() {
  const box = h('div', { 'data-testid': 'health', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'loading…'));
  const n = (x) => (x === null || x === undefined ? '—' : Number(x).toLocaleString());
  async function load() {
    let r;
    try { r = await api('/api/health'); } catch (e) {
      if (!(e.status === 503 && e.body && e.body.status)) { put(box, notice(errorText(e), 'error')); return; }
      r = e.body;
    }
    const p = r.poller || {};
    const s = r.store || {};
    const rows = [
      ['Status', h('span', { class: `badge ${r.status === 'ok' ? 'ok' : 'bad'}` }, r.status)],
      ['Version', r.version], ['Uptime', fmtWait(r.uptime_s * 1000)],
      ['Poller', p.fresh ? 'polling on time' : 'late: no poll cycle finished recently'],
      ['Last poll cycle', p.last_cycle ? `${fmtTime(p.last_cycle)} (${n(p.last_cycle_duration_ms)} ms)` : 'none yet'],
      ['Devices in that cycle', `${n(p.last_cycle_ok)} ok, ${n(p.last_cycle_failed)} failed`],
      ['Store', s.ok ? 'answering' : 'not answering'], ['Schema version', n(s.schema_version)],
      ['Readings stored since start', n(s.readings_stored)], ['Durable syncs since start', n(s.durable_commits)],
      ['Checkpoints since start', n(s.checkpoints)], ['Write failures since start', n(s.write_failures)],
      ['Database size', s.database_bytes == null ? '—' : fmtBytes(s.database_bytes)],
      ['Free space beside it', s.free_bytes == null ? '—' : fmtBytes(s.free_bytes)],
      ['Refused logins now', r.throttle ? `${n(r.throttle.addresses)} addresses, ${n(r.throttle.usernames)} usernames` : '—'],
    ];
    // Push targets ([[push]]): how far behind each is, what it took, what failed last.
    for (const t of r.push || []) {
      const lag = t.lag_seconds ? `${n(Math.round(t.lag_seconds))} s behind` : 'caught up';
      rows.push([`Push: ${t.target}`, `${lag} · ${n(t.readings_sent)} readings sent · ${n(t.skipped)} skipped · ${n(t.errors)} errors${t.last_error ? ` (last: ${t.last_error})` : ''}`]);
    }
    put(box, h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])), h('p', { class: 'muted' }, `checked ${new Date().toLocaleTimeString()}`));
  }
  load();
  return section('admin-health', 'System health', h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: load }, 'Refresh')), box);
}

const TABS = [
  { key: 'users', title: 'Users', needs: 'USER_MANAGE', draw: users },
  { key: 'audit', title: 'Audit log', needs: 'AUDIT_READ', draw: audit },
  { key: 'tariffs', title: 'Tariffs', needs: 'SYSTEM_CONFIG', draw: tariffs },
  { key: 'health', title: 'Health', needs: 'SYSTEM_CONFIG', draw: health },
];

/** One tab at a time (#/admin/<tab>), among those the user's permissions allow. */
export async function show(root, ctx, tab) {
  const mine = TABS.filter((t) => ctx.can(t.needs));
  const current = mine.find((t) => t.key === tab) || mine[0];
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Admin sections' },
    mine.map((t) => h('a', { href: `#/admin/${t.key}`, class: 'tab', 'aria-current': t === current ? 'page' : null }, t.title)));
  put(root, h('h1', {}, 'Admin'), tabs, current ? current.draw(ctx) : null);
}
