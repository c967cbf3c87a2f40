// The page shell: login, navigation by permission, and a hash router over the page modules.
// Each page module exports `show(root, ctx, ...params)`, which draws into `root` and may return
// a function that stops its timers when the user leaves the page.
import { api, login, logout, loggedIn, whenLoggedOut, setup, setupRequired } from './api.js';
import { h, put, notice, errorText, field } from './ui.js';
import * as devices from './devices.js';
import * as detail from './detail.js';
import * as insightsPage from './insights.js';
import * as alertsPage from './alerts.js';
import * as historyPage from './history.js';
import * as schedules from './schedules.js';
import * as admin from './admin.js';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let leave = null;

/** What pages get: the user, a permission test and navigation. */
const ctx = {
  me: null,
  can: (p) => !!ctx.me && ctx.me.permissions.includes(p),
  go: (hash) => { if (location.hash === hash) route(); else location.hash = hash; },
};

const PAGES = [
  { path: 'devices', title: 'Devices', needs: 'DEVICE_READ', mod: devices },
  { path: 'insights', title: 'Insights', needs: 'DEVICE_READ', mod: insightsPage },
  { path: 'alerts', title: 'Alerts', needs: 'DEVICE_READ', mod: alertsPage },
  { path: 'history', title: 'Exports', needs: 'DATA_EXPORT', mod: historyPage },
  { path: 'schedules', title: 'Schedules', needs: 'DATA_EXPORT', mod: schedules },
  { path: 'admin', title: 'Admin', needs: ['USER_MANAGE', 'AUDIT_READ', 'SYSTEM_CONFIG'], mod: admin },
];
const allowed = (p) => [].concat(p.needs).some(ctx.can);

/** The first visit of a new install: the first administrator, made with the setup code. */
function showSetup() {
  const code = h('input', { required: true, autocomplete: 'off', autocapitalize: 'characters', spellcheck: 'false' });
  const user = h('input', { required: true, maxlength: 64, autocomplete: 'username', autocapitalize: 'none', value: 'admin' });
  const pass = h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const again = h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const status = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Create administrator');
  const form = h('form', { class: 'login card', 'aria-labelledby': 'setup-title' },
    h('h1', { id: 'setup-title' }, 'Create the first administrator'),
    h('p', { class: 'muted' }, 'kasad has no users yet. Its one-time setup code is in the daemon\'s log and in the file setup-code of its data directory: sudo cat /var/lib/kasad/setup-code (or sudo kasad setup-code).'),
    field('Setup code', code), field('Username', user, 'letters, digits, . _ - @'),
    field('Password', pass, 'at least 8 characters'), field('Repeat the password', again), button, status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    put(status);
    if (pass.value !== again.value) { put(status, notice('The passwords differ.', 'error')); again.select(); return; }
    button.disabled = true;
    try {
      await setup({ setup_code: code.value, username: user.value.trim(), password: pass.value });
      await login(user.value.trim(), pass.value);
      await start();
    } catch (err) {
      if (err.status === 409) { showLogin('kasad is set up already: log in.'); return; }
      put(status, notice(errorText(err), 'error'));
    } finally {
      button.disabled = false;
    }
  });
  put(view, form);
  code.focus();
}

async function showLogin(message) {
  if (leave) { leave(); leave = null; }
  ctx.me = null;
  put(nav);
  put(who);
  if (!message) {
    try { if (await setupRequired()) { showSetup(); return; } } catch { /* the login form says the rest */ }
  }
  const user = h('input', { autocomplete: 'username', required: true, autocapitalize: 'none' });
  const pass = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const status = h('div', { 'aria-live': 'polite' }, message ? notice(message, 'error') : null);
  const button = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const form = h('form', { class: 'login card', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Log in to kasad'),
    field('Username', user), field('Password', pass), button, status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    put(status);
    try {
      await login(user.value.trim(), pass.value);
      await start();
    } catch (err) {
      put(status, notice(errorText(err), 'error'));
      pass.select();
    } finally {
      button.disabled = false;
    }
  });
  put(view, form);
  user.focus();
}

let theBell = null; // made once per login; refreshed at every navigation

function drawNav(current) {
  put(nav, PAGES.filter(allowed).map((p) =>
    h('a', { href: `#/${p.path}`, 'aria-current': p.path === current ? 'page' : null }, p.title)));
  if (!theBell && ctx.can('DEVICE_READ')) theBell = alertsPage.bell(ctx);
  else if (theBell) theBell.refresh();
  put(who,
    theBell ? theBell.el : null,
    h('span', { class: 'muted' }, `${ctx.me.username} · ${ctx.me.role}`),
    h('button', { type: 'button', onclick: () => logout() }, 'Log out'));
}

let navigation = 0;

async function route(moved = true) {
  if (!ctx.me) return;
  const mine = ++navigation;
  if (leave) { leave(); leave = null; }
  const [path, ...params] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  let page = PAGES.find((p) => p.path === path);
  let mod = page && page.mod;
  if (path === 'device' && ctx.can('DEVICE_READ')) { page = PAGES[0]; mod = detail; }
  if (!page || !allowed(page)) { page = PAGES.find(allowed); mod = page && page.mod; params.length = 0; }
  drawNav(page ? page.path : '');
  if (!mod) { put(view, notice('Your account has no permissions to show anything here. Ask an admin.', 'error')); return; }
  document.title = `${page.title} · kasad`;
  // Each visit draws into its own element: a page that finishes loading after the user moved
  // on draws into a detached one and is stopped at once.
  const root = h('div', { class: 'page' }, h('p', { class: 'muted' }, 'loading…'));
  put(view, root);
  let stop = null;
  try {
    stop = (await mod.show(root, ctx, ...params)) || null;
  } catch (err) {
    put(root, notice(errorText(err), 'error'));
  }
  if (mine !== navigation) { if (stop) stop(); return; }
  leave = stop;
  const title = root.querySelector('h1');
  if (moved && title) { title.tabIndex = -1; title.focus({ preventScroll: true }); }
}

async function start() {
  ctx.me = await api('/api/auth/me');
  if (!location.hash.startsWith('#/')) window.history.replaceState(null, '', '#/devices');
  await route(false);
}

whenLoggedOut(() => showLogin());
window.addEventListener('hashchange', () => { if (location.hash.startsWith('#/')) route(); });
if (loggedIn()) start().catch((e) => showLogin(errorText(e))); else showLogin();
