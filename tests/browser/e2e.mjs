// End-to-end test of kasad's web pages in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) against a running `kasad demo`. Started by the Rust test
// `browser::web_pages_in_chromium`, which passes the daemon's address and the users in the
// environment. Fails (exit 1) on the first broken step, on any page error, and on any request
// to a host other than the daemon. Screenshots of every page at desktop and phone width go to
// $KASAD_SHOTS.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const BASE = env('KASAD_BASE');
const SHOTS = env('KASAD_SHOTS');
const ORIGIN = new URL(BASE).origin;
// A second daemon without users, for the first-run setup (and its code).
const SETUP_BASE = env('KASAD_SETUP_BASE');
const SETUP_CODE = env('KASAD_SETUP_CODE');
const USERS = { operator: env('KASAD_OPERATOR').split(':'), viewer: env('KASAD_VIEWER').split(':'), admin: env('KASAD_ADMIN').split(':') };
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
fs.mkdirSync(SHOTS, { recursive: true });

const foreign = [];
const pageErrors = [];
const log = (...a) => console.log('[e2e]', ...a);
function check(ok, what) { if (!ok) throw new Error(`check failed: ${what}`); log('ok:', what); }

if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)`);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

async function session(role) {
  const context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
  // Every request leaves through here: anything not for the daemon is recorded and refused.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(ORIGIN + '/') || url.startsWith(SETUP_BASE + '/') || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${role}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(`${role} console: ${m.text()}`); });
  // API errors other than the ones the test provokes (a wrong password, the rate limit).
  page.on('response', (r) => {
    const u = new URL(r.url());
    const expected = (r.status() === 401 && u.pathname === '/api/auth/login') || (r.status() === 429 && u.pathname === '/api/exports/create');
    if (r.status() >= 400 && !expected) pageErrors.push(`${role}: ${r.status()} from ${u.pathname}`);
  });
  await page.goto(BASE + '/');
  const [user, pass] = USERS[role];
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(pass);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#who').getByText(user).waitFor();
  return { context, page };
}

// axe-core's WCAG 2 A/AA rules (labels, names, contrast, ARIA); evaluated through the
// DevTools protocol, so the page's CSP stays as strict as it is for users.
const AXE = fs.readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
const a11y = [];
async function accessible(page, name) {
  await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  });
  for (const v of found) a11y.push(`${name}: ${v}`);
}

async function shots(page, name) {
  await accessible(page, name);
  await page.screenshot({ path: path.join(SHOTS, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(150);
  await page.screenshot({ path: path.join(SHOTS, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(DESKTOP);
}

async function apiAs(role, p, body) {
  const [username, password] = USERS[role];
  const login = await (await fetch(`${BASE}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }) })).json();
  const r = await fetch(`${BASE}${p}`, { method: body ? 'POST' : 'GET', headers: { authorization: `Bearer ${login.access_token}`, 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

try {
  // First run: a daemon without users shows the setup form; the code makes the first admin.
  {
    const context = await browser.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`setup: ${e.message}`));
    await page.goto(SETUP_BASE + '/');
    await page.getByRole('heading', { name: 'Create the first administrator' }).waitFor();
    await shots(page, 'setup');
    await page.getByLabel('Setup code').fill('AAAA-WRONG-CODE');
    await page.getByLabel('Username').fill('owner');
    await page.getByLabel('Password', { exact: true }).fill('owner-password-1');
    await page.getByLabel('Repeat the password').fill('owner-password-1');
    await page.getByRole('button', { name: 'Create administrator' }).click();
    await page.getByRole('alert').getByText('Wrong setup code').waitFor();
    check(true, 'a wrong setup code is refused in words');
    await page.getByLabel('Setup code').fill(SETUP_CODE.toLowerCase());
    await page.getByRole('button', { name: 'Create administrator' }).click();
    await page.locator('#who').getByText('owner').waitFor();
    check((await page.locator('#who').textContent()).includes('admin'), 'the setup code creates the first administrator, who is logged in');
    await context.close();
    const again = await (await fetch(`${SETUP_BASE}/api/setup`)).json();
    check(again.required === false, 'the setup form is gone once an administrator exists');
  }

  // Login page.
  {
    const context = await browser.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    await page.goto(BASE + '/');
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByLabel('Username').fill(USERS.operator[0]);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').getByText('Invalid username or password').waitFor();
    check(true, 'a wrong password is answered in words on the login page');
    await shots(page, 'login');
    await context.close();
  }

  // Operator: live device cards.
  const { context, page } = await session('operator');
  const cards = page.locator('article[data-device-id]');
  // The demo's 8 legacy devices (7 plugs and a strip with 6 outlets) and its 4 KLAP/AES devices
  // (3 plugs and a strip with 6 outlets).
  await page.waitForFunction(() => document.querySelectorAll('article[data-device-id]').length === 24);
  // The fridge: its power wanders at every hour of the day.
  const metered = cards.filter({ has: page.getByRole('heading', { name: 'Sim HS110(EU) #1' }) });
  const powerEl = metered.getByTestId('power');
  await page.waitForFunction((el) => / k?W$/.test(el.textContent), await powerEl.elementHandle());
  const first = await powerEl.textContent();
  const updated = await page.locator('main p.muted').first().textContent();
  await page.waitForFunction(([el, was, line]) => el.textContent !== was && document.querySelector('main p.muted').textContent !== line,
    [await powerEl.elementHandle(), first, updated], { timeout: 20000 });
  check(true, `live power on the fridge's card changes with the polls (${first} → ${await powerEl.textContent()})`);
  const deviceId = await metered.getAttribute('data-device-id');
  const live = await apiAs('operator', '/api/devices/live');
  const l = live.body.devices.find((d) => d.device_id === deviceId);
  check(l && l.power_w > 0 && l.today_energy_kwh > 0, 'the live API reports power and today\'s energy for that device');
  const today = await metered.getByTestId('today').textContent();
  check(/^today [\d.]+ kWh · \D*[\d.]+/.test(today), `the card shows today's energy and cost (${today})`);
  check(await cards.getByRole('button', { name: 'Export Data' }).count() === 24, 'an operator sees Export Data on every card');
  check(await cards.getByRole('switch').count() === 22, 'an operator sees a relay switch on every plug and outlet (not on the strips)');
  // The household first, and each card's insight line (both from /api/insights).
  const household = page.getByTestId('household-summary');
  await household.getByTestId('household-always-on').waitFor();
  const hs = await household.textContent();
  check(/ now · today [\d.]+ kWh/.test(hs) && /this billing period \D*[\d.]+/.test(hs) && /always on [\d.]+ k?W/.test(hs),
    `the devices page opens with the household: power, today, the billing period, always-on (${hs})`);
  const insight = await metered.getByTestId('insight').textContent();
  check(/^cycling: \d+ cycles today, /.test(insight), `the fridge's card says how it cycles (${insight})`);
  const programmes = await cards.getByTestId('insight').filter({ hasText: /^programme: / }).count();
  check(programmes >= 1, `the washer's card speaks of its runs (${programmes})`);
  await shots(page, 'devices');

  // The Insights page: always-on, the forecast with its chart, per-device tables.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Insights' }).click();
  await page.getByRole('heading', { name: 'Insights', level: 1 }).waitFor();
  const total = await page.getByTestId('always-on-total').textContent();
  check(/^[\d.,]+ k?W$/.test(total), `the Insights page leads with the always-on total (${total})`);
  check(await page.getByTestId('forecast').locator('svg.chart path.line').count() === 1, 'the forecast is drawn as a chart');
  const api = await apiAs('operator', '/api/insights');
  const leaves = api.body.devices.filter((d) => d.device_type !== 'strip').length;
  const rows = await page.getByRole('region', { name: 'Always-on power per device' }).locator('tbody tr').count();
  check(rows === leaves && rows >= 10, `always-on per device lists every metered plug and outlet (${rows} of ${leaves})`);
  check(await page.getByRole('button', { name: 'Save budget' }).count() === 0, 'an operator cannot set the budget');
  await shots(page, 'insights');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Devices' }).click();
  await page.waitForFunction(() => document.querySelectorAll('article[data-device-id]').length === 24);

  // Device detail with charts.
  await metered.getByRole('link').first().click();
  await page.locator('svg.chart').first().waitFor();
  const heights = await page.locator('svg.chart rect.bar').evaluateAll((bars) => bars.map((b) => Number(b.getAttribute('height'))));
  check(heights.length > 90 && heights.filter((x) => x > 0).length > 50, `the detail page draws 15-minute energy bars from the rollups (${heights.length})`);
  check(await page.locator('svg.chart path.line').count() === 1, 'the detail page draws the power line');
  await shots(page, 'device-detail');
  await page.getByRole('link', { name: '7 days' }).click();
  await page.getByTestId('range-summary').getByText('in the last 7 days').waitFor();
  check(await page.locator('svg.chart rect.bar').count() < 24 * 7 + 2, 'the 7-day range draws hourly bars');
  await page.getByRole('link', { name: '‹ All devices' }).click();
  await page.waitForFunction(() => document.querySelectorAll('article[data-device-id]').length >= 8);

  // The export modal: preview, create, progress, download.
  await page.locator(`article[data-device-id="${deviceId}"]`).getByRole('button', { name: 'Export Data' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByTestId('preview-summary').waitFor();
  const week = await dialog.getByTestId('preview-summary').textContent();
  await dialog.getByLabel('Format').selectOption('csv');
  await dialog.getByLabel('Date range').selectOption('24h');
  // Three days of history: the 24-hour preview counts fewer records than the 7-day one.
  await page.waitForFunction((was) => {
    const el = document.querySelector('[data-testid=preview-summary]');
    return el && el.textContent !== was;
  }, week);
  const summary = await dialog.getByTestId('preview-summary').textContent();
  check(parseInt(summary.replace(/,/g, ''), 10) < parseInt(week.replace(/,/g, ''), 10) / 2, `the preview follows the date range (${week} → ${summary})`);
  const previewTotal = Number(summary.match(/([\d,]+)\+? records/)[1].replace(/,/g, ''));
  check(previewTotal > 100, `the preview counts the records (${summary})`);
  check(await dialog.locator('.preview tbody tr').count() === 5, 'the preview shows the first 5 rows');
  check(/KB|MB|B as CSV/.test(summary), 'the preview estimates the file size');
  await shots(page, 'export-modal');
  await dialog.getByRole('button', { name: 'Create export' }).click();
  await dialog.getByTestId('download').waitFor({ timeout: 30000 });
  check(await dialog.locator('progress').evaluate((p) => p.value) === 100, 'the progress bar reaches 100 %');
  check((await dialog.getByTestId('progress-text').textContent()).includes('completed · 100 %'), 'the progress text says completed · 100 %');
  const done = await dialog.getByTestId('export-result').textContent();
  const records = Number(done.match(/Done: ([\d,]+) records/)[1].replace(/,/g, ''));
  const [download] = await Promise.all([page.waitForEvent('download'), dialog.getByTestId('download').click()]);
  const file = path.join(SHOTS, download.suggestedFilename());
  await download.saveAs(file);
  const lines = fs.readFileSync(file, 'utf8').trim().split(/\r?\n/);
  const header = lines[0].split(',');
  check(header.includes('timestamp') && header.includes('power_w') && header.includes('energy_kwh'), `the CSV has the chosen columns (${lines[0]})`);
  check(lines.length - 1 === records, `the CSV holds the ${records} records the job reported`);
  check(Math.abs(records - previewTotal) <= 200, 'about as many records as the preview counted (polls continue meanwhile)');
  const idCol = header.indexOf('device_id');
  check(lines.slice(1).every((r) => r.split(',')[idCol] === deviceId), 'every row is of the chosen device');
  await shots(page, 'export-done');
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });

  // History lists it.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Exports' }).click();
  await page.getByTestId('history-table').waitFor();
  check(await page.getByTestId('history-table').getByText(download.suggestedFilename()).count() === 1, 'the history lists the export');
  await shots(page, 'history');

  // Exports 2–10 through the API, then the 11th in the modal shows the rate limit.
  for (let i = 2; i <= 10; i += 1) {
    const r = await apiAs('operator', '/api/exports/create', { export_type: 'device_data', format: 'json', devices: [deviceId] });
    check(r.status === 200 || r.status === 201 || r.status === 202, `export ${i} accepted (${r.status})`);
  }
  await page.getByRole('button', { name: 'New export' }).click();
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Create export' }).click();
  const limitMsg = dialog.getByTestId('export-result').getByText(/Rate limit reached/);
  await limitMsg.waitFor();
  const msg = await limitMsg.textContent();
  check(/try again in \d+ (min|s|h)/.test(msg), `the 11th export shows the rate-limit message with the retry time: "${msg}"`);
  await shots(page, 'rate-limit');
  await page.keyboard.press('Escape');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Schedules' }).click();
  await page.getByRole('heading', { name: 'Scheduled exports' }).first().waitFor();
  await shots(page, 'schedules');
  check(await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).count() === 0, 'an operator has no Admin page');
  await context.close();

  // Viewer: cards without Export or switches.
  {
    const { context: c, page: p } = await session('viewer');
    await p.waitForFunction(() => document.querySelectorAll('article[data-device-id]').length === 24);
    await p.waitForFunction(() => [...document.querySelectorAll('[data-testid=power]')].some((e) => / k?W$/.test(e.textContent)));
    check(await p.getByRole('button', { name: 'Export Data' }).count() === 0, 'a viewer sees no Export Data button');
    check(await p.getByRole('switch').count() === 0, 'a viewer sees no relay switch');
    check(await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Exports' }).count() === 0, 'a viewer has no Exports page');
    await shots(p, 'devices-viewer');
    await c.close();
  }

  // Admin: every page, the audit chain check.
  {
    const { context: c, page: p } = await session('admin');
    // Alerts: a rule over the fridge (never below 1 W) raises an alert; the bell shows it and
    // acknowledging it from the bell clears it.
    const rule = await apiAs('admin', '/api/alerts/rules', { name: 'Fridge drawing', kind: 'power_above',
      threshold_w: 0.5, devices: [deviceId], channels: ['page'] });
    check(rule.status === 201, `an alert rule is made (${rule.status})`);
    let open = [];
    for (let i = 0; i < 100 && !open.length; i += 1) {
      open = (await apiAs('admin', '/api/alerts?state=open')).body.alerts.filter((a) => a.rule_id === rule.body.rule_id);
      if (!open.length) await p.waitForTimeout(200);
    }
    check(open.length === 1, 'the rule raised one alert');
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Alerts' }).click();
    await p.getByRole('heading', { name: 'Alerts', level: 1 }).waitFor();
    check(await p.getByRole('button', { name: 'Send test: Fridge drawing' }).count() === 1, 'the Alerts page lists the rule with Send test');
    await p.getByTestId('bell-count').filter({ hasText: /^[1-9]/ }).waitFor();
    check(true, `the bell shows the open alert (${await p.getByTestId('bell-count').textContent()})`);
    await shots(p, 'alerts');
    await p.getByTestId('bell').click();
    const item = p.locator(`dialog [data-alert-id="${open[0].alert_id}"]`);
    await item.getByRole('button', { name: 'Acknowledge' }).click();
    await item.waitFor({ state: 'detached' });
    const after = (await apiAs('admin', '/api/alerts?state=acknowledged')).body.alerts.filter((a) => a.alert_id === open[0].alert_id);
    check(after.length === 1, 'acknowledged from the bell');
    await p.keyboard.press('Escape');
    // A device's settings: a kasad name and a room.
    const plugs = (await apiAs('admin', '/api/devices')).body.devices.filter((d) => d.device_type === 'plug');
    const [named, lost] = [plugs[1], plugs[2]];
    await p.goto(`${BASE}/#/device/${encodeURIComponent(named.device_id)}`);
    const settings = p.getByTestId('device-settings');
    await settings.getByLabel('Name').fill('Kitchen fridge');
    await settings.getByLabel('Room').fill('Kitchen');
    await settings.getByLabel('Rated power (W)').fill('150');
    await settings.getByRole('button', { name: 'Save' }).click();
    await p.getByRole('heading', { name: 'Kitchen fridge', level: 1 }).waitFor();
    check(true, 'a device is renamed from its page');
    await shots(p, 'device-settings');
    await p.getByRole('link', { name: '‹ All devices' }).click();
    await p.getByTestId('room').filter({ hasText: 'Kitchen' }).waitFor();
    check(await p.locator('article[data-device-id]', { hasText: 'Kitchen fridge' }).count() === 1, 'the devices page groups the renamed device under its room');
    await shots(p, 'devices-rooms');
    // Forget one, then restore it from the list of forgotten devices.
    await p.goto(`${BASE}/#/device/${encodeURIComponent(lost.device_id)}`);
    await p.getByRole('button', { name: 'Forget' }).click();
    const confirm = p.getByRole('dialog');
    check((await confirm.textContent()).includes('cannot be undone'), 'the confirmation says what purging deletes');
    await confirm.getByRole('button', { name: 'Forget' }).click();
    await p.waitForFunction(() => document.querySelectorAll('article[data-device-id]').length === 23);
    check(true, 'a forgotten device leaves the devices page');
    const box = p.getByTestId('forgotten');
    await box.locator('summary').click();
    await box.getByRole('button', { name: `Restore ${lost.device_name}` }).click();
    await p.waitForFunction(() => document.querySelectorAll('article[data-device-id]').length === 24);
    check(true, 'a restored device is back on the devices page');

    // Admin: each tab.
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).click();
    await p.getByTestId('users-table').waitFor();
    check(await p.getByTestId('users-table').getByText(USERS.operator[0]).count() >= 1, 'the admin page lists the users');
    await shots(p, 'admin');
    const tabs = p.getByRole('navigation', { name: 'Admin sections' });
    await tabs.getByRole('link', { name: 'Audit log' }).click();
    await p.getByRole('button', { name: /Verify/ }).click();
    await p.getByTestId('audit-verify').getByText(/intact/i).waitFor();
    check(true, 'the audit chain verifies from the admin page');
    const renamed = p.getByTestId('audit-table').locator('tr', { hasText: 'DEVICE_UPDATED' }).first();
    await renamed.waitFor();
    check(await renamed.locator('dl.details dt').count() > 0 && (await renamed.textContent()).includes('Kitchen fridge'), 'audit details are labelled values (old and new)');
    await shots(p, 'admin-audit');
    await tabs.getByRole('link', { name: 'Tariffs' }).click();
    await p.getByTestId('tariffs-table').waitFor();
    check(true, 'the tariffs tab');
    // What if: the demo's history priced under the tariff in force and a dearer flat one.
    const compareForm = p.getByRole('form', { name: 'Compare tariffs' });
    await compareForm.getByLabel('Other tariff (JSON)').fill('{"price_per_kwh": 9.99}');
    await compareForm.getByRole('button', { name: 'Compare' }).click();
    const compared = p.getByTestId('compare-table');
    await compared.waitFor();
    check(await compared.locator('tbody tr').count() === 2 && (await p.getByText(/^Cheapest: In force/).count()) === 1,
      'the tariffs tab compares the tariff in force with another on the history');
    await tabs.getByRole('link', { name: 'Health' }).click();
    await p.getByTestId('health').getByText('Database size').waitFor();
    check(await p.getByTestId('health').getByText(/^ok$/).count() === 1, 'the admin sees the health detail');
    await shots(p, 'admin-health');
    // Schedules: create one in the form, pause it, run it now.
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Schedules' }).click();
    await p.getByRole('button', { name: 'New schedule' }).click();
    const form = p.getByRole('dialog');
    await form.getByLabel('Name', { exact: true }).fill('Weekly heater CSV');
    await form.getByRole('button', { name: 'Weekly, Monday 06:00' }).click();
    await form.getByRole('button', { name: 'Create schedule' }).click();
    await form.waitFor({ state: 'detached' });
    const row = p.getByTestId('schedules-table').locator('tr', { hasText: 'Weekly heater CSV' });
    await row.waitFor();
    check((await row.textContent()).includes('0 6 * * 1'), 'a schedule created in the form is listed with its cron expression');
    await row.getByRole('button', { name: 'Disable Weekly heater CSV' }).click();
    await row.getByText('paused').waitFor();
    check(true, 'a schedule is paused from the list');
    await row.getByRole('button', { name: 'Run now: Weekly heater CSV' }).click();
    await p.getByText(/started/).first().waitFor();
    await row.getByText(/completed/).waitFor({ timeout: 20000 });
    check(true, 'Run now starts it and the list shows the completed run');
    await shots(p, 'schedules-admin');
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Exports' }).click();
    await p.getByTestId('history-table').waitFor();
    check(await p.getByTestId('history-table').locator('tbody tr').count() === 10, 'an admin sees everyone\'s exports, 10 per page');
    check(await p.getByRole('navigation', { name: 'Pages' }).getByText(/page 1 of 2/).count() === 1, 'the history is paginated');
    await c.close();
  }

  check(a11y.length === 0, `no serious accessibility violations (axe-core, WCAG 2.1 AA):\n  ${a11y.join('\n  ')}`);
  check(pageErrors.length === 0, `no script errors in the pages (${pageErrors.join(' | ')})`);
  check(foreign.length === 0, `no request to any host but the daemon (${foreign.join(', ')})`);
  log('all checks passed; screenshots in', SHOTS);
} finally {
  await browser.close();
}
