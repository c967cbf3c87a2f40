// The Schedules page: the user's scheduled exports (an admin's: everyone's) with pause/resume, run now, edit, delete and the create/edit form.
import { api } from './api.js';
import { h, put, notice, errorText, field, select, modal, fmtTime, tableBox, stacked } from './ui.js';

const TYPES = [['device_data', 'Device data'], ['cost_analysis', 'Cost analysis'], ['system_report', 'System report'],
  ['audit_logs', 'Audit logs', 'AUDIT_READ'], ['configuration', 'Configuration', 'SYSTEM_CONFIG']];
const WITH_DEVICES = ['device_data', 'cost_analysis', 'system_report'];
const RANGES = [['yesterday', 'Yesterday'], ['today', 'Today so far'], ['last_24_hours', 'Last 24 hours'],
  ['last_7_days', 'Last 7 whole days'], ['last_week', 'Last week (Monday–Sunday)'], ['this_month', 'This month so far'],
  ['last_month', 'Last month'], ['this_year', 'This year so far'], ['last_year', 'Last year']];
const PRESETS = [['Daily 06:00', '0 6 * * *'], ['Weekly, Monday 06:00', '0 6 * * 1'], ['Monthly, 1st 06:00', '0 6 1 * *']];
const METHODS = [['none', 'None: keep it in Exports'], ['directory', 'Directory (USB stick, share)'], ['email', 'E-mail'], ['webhook', 'Webhook']];
const RUN_BADGE = { completed: 'ok', running: 'warn', failed: 'bad', delivery_failed: 'bad' };
const HERE = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const enc = encodeURIComponent;
const typeName = (t) => (TYPES.find((x) => x[0] === t) || [t, t])[1];
// JSON with sorted keys, to tell whether a form value differs from the stored one.
const canon = (v) => JSON.stringify(v, (k, x) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x));

function zones(current) {
  let all = [];
  try { all = Intl.supportedValuesOf('timeZone'); } catch { /* older browser: the few below */ }
  return [...new Set([current, HERE, 'UTC', ...all])].sort().map((z) => [z, z]);
}

function deliveryText(d) {
  if (!d || d.method === 'none') return 'kept in Exports';
  if (d.method === 'directory') return `directory ${d.path}`;
  if (d.method === 'email') return `e-mail to ${(d.recipients || []).join(', ')}`;
  let origin = d.url;
  try { origin = new URL(d.url).origin; } catch { /* shown as stored */ }
  return `webhook ${origin}${d.signed ? ' (signed)' : ''}`;
}

function lastRun(r) {
  if (!r) return h('span', { class: 'muted' }, 'never');
  return [h('span', { class: `badge ${RUN_BADGE[r.status] || ''}` }, r.status.replace('_', ' ')), ' ', fmtTime(r.at),
    r.trigger !== 'schedule' ? h('span', { class: 'muted' }, ` (${r.trigger})`) : null,
    r.error ? h('div', {}, r.error) : null, r.delivered ? h('div', { class: 'muted' }, r.delivered) : null];
}

export async function show(root, ctx) {
  const status = h('div', { 'aria-live': 'polite' });
  const list = h('div', { 'data-testid': 'schedules' });
  let lists = null; // formats and devices for the form, fetched once
  const say = (text, kind = 'info') => put(status, notice(text, kind));
  put(root, h('h1', {}, 'Scheduled exports'),
    h('div', { class: 'toolbar' }, h('button', { type: 'button', class: 'primary', onclick: () => edit(null) }, 'New schedule')),
    status, list);

  // Reloads every 30 s, and every 1.5 s while a run is going; one load at a time (a request
  // meanwhile runs right after it), so an older answer never overwrites a newer one.
  let timer = null;
  let stopped = false;
  let busy = false;
  let again = false;
  async function loop() {
    if (busy) { again = true; return; }
    busy = true;
    clearTimeout(timer);
    await load();
    busy = false;
    if (stopped) return;
    if (again) { again = false; await loop(); return; }
    const running = /running/.test(list.textContent) && list.querySelector('.badge.warn');
    timer = setTimeout(loop, running ? 1500 : 30000);
  }

  async function load() {
    let r;
    try { r = await api('/api/exports/schedules'); } catch (e) { put(list, notice(errorText(e), 'error')); return; }
    if (!r.schedules.length) {
      put(list, h('p', { class: 'muted' }, 'No scheduled exports yet. Choose "New schedule" to have an export made on a timetable — e.g. last month\'s device data on the 1st at 06:00 — and kept in Exports or delivered to a directory, by e-mail or to a webhook.'));
      return;
    }
    const others = r.schedules.some((s) => s.user_id !== ctx.me.user_id);
    const cols = ['Name', others && 'Owner', 'Export', 'When', 'Enabled', 'Next run', 'Last run', 'Delivery', 'Actions'].filter(Boolean);
    put(list, tableBox('Scheduled exports', stacked(h('table', { 'data-testid': 'schedules-table' },
      h('caption', {}, `${r.total} scheduled export${r.total === 1 ? '' : 's'}`),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, r.schedules.map((s) => row(s, others)))))));
  }

  function row(s, others) {
    const c = s.export_config || {};
    const dev = Array.isArray(c.devices) ? `${c.devices.length} device${c.devices.length === 1 ? '' : 's'}` : null;
    const range = typeof c.date_range === 'string' ? c.date_range.replaceAll('_', ' ') : c.date_range ? 'fixed range' : 'last 7 days';
    return h('tr', { 'data-schedule-id': s.schedule_id },
      h('th', { scope: 'row' }, s.name), others ? h('td', {}, s.username) : null,
      h('td', {}, `${typeName(c.export_type)} · ${c.format || 'csv'}`, h('div', { class: 'muted' }, [range, dev].filter(Boolean).join(' · '))),
      h('td', {}, h('code', {}, s.schedule), h('div', { class: 'muted' }, s.timezone)),
      h('td', {}, h('span', { class: `badge ${s.enabled ? 'ok' : 'warn'}` }, s.enabled ? 'enabled' : 'paused')),
      h('td', {}, s.enabled ? fmtTime(s.next_run) : '—'),
      h('td', {}, lastRun(s.last_run)),
      h('td', {}, deliveryText(s.delivery)),
      h('td', {}, h('div', { class: 'toolbar' },
        act(s.enabled ? 'Disable' : 'Enable', () => toggle(s), `${s.enabled ? 'Disable' : 'Enable'} ${s.name}`),
        act('Run now', () => run(s), `Run now: ${s.name}`),
        act('Edit', () => edit(s), `Edit ${s.name}`),
        act('Delete', () => remove(s), `Delete ${s.name}`, 'danger'))));
  }

  function act(label, f, aria, cls) {
    const b = h('button', { type: 'button', class: cls, 'aria-label': aria }, label);
    b.addEventListener('click', async () => { b.disabled = true; try { await f(); } finally { b.disabled = false; } });
    return b;
  }

  async function toggle(s) {
    try {
      await api(`/api/exports/schedules/${enc(s.schedule_id)}`, { method: 'PUT', body: { enabled: !s.enabled } });
      say(`"${s.name}" ${s.enabled ? 'is paused' : 'is enabled again'}.`, 'ok');
    } catch (e) {
      say(e.status === 409 && e.body.error_code === 'SCHEDULE_CHANGED'
        ? `"${s.name}" was changed by someone else meanwhile; the list now shows the current state — try again if still needed.`
        : errorText(e), 'error');
    }
    await loop();
  }

  async function run(s) {
    try {
      const r = await api(`/api/exports/schedules/${enc(s.schedule_id)}/run`, { method: 'POST' });
      put(status, h('p', { class: 'notice ok', role: 'status' }, `"${s.name}" started (export ${r.export_id}); see `,
        h('a', { href: '#/history' }, 'Exports'), ' for its progress.'));
    } catch (e) { say(`${s.name}: ${errorText(e)}`, 'error'); }
    await loop();
  }

  async function remove(s) {
    if (!confirm(`Delete the schedule "${s.name}"? Exports it already made stay in Exports.`)) return;
    try {
      await api(`/api/exports/schedules/${enc(s.schedule_id)}`, { method: 'DELETE' });
      say(`"${s.name}" deleted.`, 'ok');
    } catch (e) { say(errorText(e), 'error'); }
    await loop();
  }

  async function edit(s) {
    try {
      lists ??= await Promise.all([api('/api/exports/formats'), api('/api/exports/devices')]);
    } catch (e) { say(errorText(e), 'error'); return; }
    openForm(ctx, s, lists[0].formats, lists[1].devices, (text, bad) => { say(text, bad ? 'error' : 'ok'); loop(); });
  }

  await loop();
  return () => { stopped = true; clearTimeout(timer); };
}

/** The create/edit dialog; `done(message, conflict)` reports back and reloads the list. */
function openForm(ctx, s, formats, devices, done) {
  const c = s ? s.export_config || {} : {};
  const d = s ? s.delivery || { method: 'none' } : { method: 'none' };
  const input = (attrs, value) => Object.assign(h('input', attrs), { value: value ?? '' });
  const name = input({ required: true, maxlength: 100, autofocus: true }, s && s.name);
  const types = TYPES.filter((t) => !t[2] || ctx.can(t[2]) || t[0] === c.export_type);
  const type = select(types, c.export_type || 'device_data');
  const format = select(formats.map((f) => [f.id, f.name]), c.format || 'csv');
  const fixed = c.date_range && typeof c.date_range === 'object';
  const range = select(fixed ? [['__keep', `${c.date_range.start || '…'} – ${c.date_range.end || '…'} (as saved)`], ...RANGES] : RANGES,
    fixed ? '__keep' : c.date_range || 'yesterday');
  const cron = input({ required: true, spellcheck: 'false', autocapitalize: 'none', placeholder: '0 6 * * *' }, s ? s.schedule : '0 6 * * *');
  const tz = select(zones(s ? s.timezone : HERE), s ? s.timezone : HERE);
  const enabled = h('input', { type: 'checkbox', checked: s ? s.enabled : true });

  const chosen = Array.isArray(c.devices) ? c.devices : [];
  const all = h('input', { type: 'checkbox', checked: !chosen.length });
  const boxes = devices.map((x) => {
    const parent = x.parent_id && devices.find((p) => p.device_id === x.parent_id);
    const cb = h('input', { type: 'checkbox', value: x.device_id, checked: chosen.includes(x.device_id) || chosen.includes(x.device_ip) });
    return h('label', {}, cb, ` ${parent ? `${parent.device_name} › ` : ''}${x.device_name} (${x.device_ip})`);
  });
  const pick = h('div', { class: 'form-grid' }, boxes);
  const devSet = h('fieldset', {}, h('legend', {}, 'Devices'), h('label', {}, all, ' All devices'), pick);

  const method = select(METHODS, d.method);
  const dir = { path: input({ required: true, placeholder: '/media/usb/kasad' }, d.path), filename: input({ placeholder: '{{name}}_{{date}}.csv' }, d.filename),
    mount: select([['', 'as configured'], ['true', 'yes'], ['false', 'no']], d.require_mount === undefined ? '' : String(d.require_mount)) };
  const mail = { to: input({ required: true, placeholder: 'ana@example.com, bo@example.com' }, (d.recipients || []).join(', ')),
    subject: input({ placeholder: '{{name}} {{date}}' }, d.subject) };
  const hook = { url: input({ type: 'url', required: true, placeholder: 'the receiver’s URL (https)' }, d.url),
    secret: input({ type: 'password', autocomplete: 'new-password', minlength: 16 }) };
  const panels = {
    directory: h('div', { class: 'form-grid' }, field('Directory', dir.path, 'must lie under [delivery] directory_roots'),
      field('File name (optional)', dir.filename, '{{name}}, {{date}}, {{export_type}}, {{format}}'),
      field('Require a mounted file system', dir.mount)),
    email: h('div', { class: 'form-grid' }, field('Recipients', mail.to, 'comma-separated, in allowed domains'),
      field('Subject (optional)', mail.subject, '{{name}}, {{date}} …')),
    webhook: h('div', { class: 'form-grid' }, field('URL', hook.url, 'must lie under [delivery] webhook_allow'),
      field('Signing secret (optional)', hook.secret, d.method === 'webhook' && d.signed
        ? 'leave empty to keep the stored secret (kept only while the URL stays the same)' : '16 characters or more')),
  };
  const sync = () => {
    for (const [k, p] of Object.entries(panels)) {
      p.hidden = method.value !== k; // hidden fields are disabled too, so the browser does not check them
      for (const el of p.querySelectorAll('input, select')) el.disabled = p.hidden;
    }
    devSet.hidden = !WITH_DEVICES.includes(type.value);
    pick.hidden = all.checked;
  };
  [method, type, all].forEach((x) => x.addEventListener('change', sync));
  sync();

  const errors = h('div', { 'aria-live': 'assertive' });
  const save = h('button', { type: 'submit', class: 'primary' }, s ? 'Save changes' : 'Create schedule');
  const form = h('form', { class: 'schedule-form' },
    h('div', { class: 'form-grid' }, field('Name', name), field('Export type', type), field('Format', format), field('Date range', range, 'resolved when it runs, in the time zone below')),
    h('div', { class: 'form-grid' }, field('Cron expression', cron, 'minute hour day-of-month month day-of-week'), field('Time zone', tz)),
    h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Presets' }, PRESETS.map(([label, expr]) =>
      h('button', { type: 'button', onclick: () => { cron.value = expr; } }, label))),
    devSet,
    h('fieldset', {}, h('legend', {}, 'Delivery'), field('Method', method), Object.values(panels)),
    h('label', {}, enabled, ' Enabled'),
    errors,
    h('div', { class: 'toolbar' }, save, h('button', { type: 'button', onclick: () => dlg.close() }, 'Cancel')));

  function body() {
    const cfg = s && c.export_type === type.value ? { ...c } : {};
    cfg.export_type = type.value;
    cfg.format = format.value;
    if (range.value !== '__keep') cfg.date_range = range.value;
    if (!WITH_DEVICES.includes(type.value)) delete cfg.devices;
    else if (all.checked) { if ('devices' in cfg) cfg.devices = 'all'; } // absent means all
    else {
      cfg.devices = boxes.map((l) => l.querySelector('input')).filter((b) => b.checked).map((b) => b.value);
      if (!cfg.devices.length) throw new Error('Choose at least one device, or tick "All devices".');
    }
    const opt = (v) => v.trim() || undefined;
    const delivery = { method: method.value };
    if (method.value === 'directory') {
      Object.assign(delivery, { path: dir.path.value.trim(), filename: opt(dir.filename.value) });
      if (dir.mount.value) delivery.require_mount = dir.mount.value === 'true';
    } else if (method.value === 'email') {
      Object.assign(delivery, { recipients: mail.to.value.split(/[\s,;]+/).filter(Boolean), subject: opt(mail.subject.value) });
    } else if (method.value === 'webhook') {
      Object.assign(delivery, { url: hook.url.value.trim(), secret: opt(hook.secret.value) });
    }
    const b = { name: name.value.trim(), schedule: cron.value.trim().replace(/\s+/g, ' '), timezone: tz.value,
      enabled: enabled.checked, export_config: cfg, delivery: JSON.parse(JSON.stringify(delivery)) };
    if (!s) return b;
    // A change sends only the fields that differ (the stored delivery has no secret, but may have `signed`).
    const was = { ...s, delivery: { ...d, secret: undefined, signed: undefined } };
    return Object.fromEntries(Object.entries(b).filter(([k, v]) => canon(v) !== canon(was[k]) || (k === 'delivery' && v.secret)));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    put(errors);
    let b;
    try { b = body(); } catch (err) { put(errors, notice(err.message, 'error')); return; }
    if (s && !Object.keys(b).length) { dlg.close(); return; }
    save.disabled = true;
    try {
      if (s) await api(`/api/exports/schedules/${enc(s.schedule_id)}`, { method: 'PUT', body: b });
      else await api('/api/exports/schedule', { method: 'POST', body: b });
      dlg.close();
      done(`"${b.name || (s && s.name)}" ${s ? 'saved' : 'created'}.`);
    } catch (err) {
      if (err.status === 409 && err.body.error_code === 'SCHEDULE_CHANGED') {
        dlg.close();
        done(`"${s.name}" was changed by someone else meanwhile, so nothing was saved; open Edit again to see the current version.`, true);
      } else put(errors, notice(errorText(err), 'error'));
    } finally { save.disabled = false; }
  });
  const dlg = modal(s ? `Edit "${s.name}"` : 'New scheduled export', form);
}
