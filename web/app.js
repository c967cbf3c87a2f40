// The page shell: login, navigation by permission, and a hash router over the page modules.
// Each page module exports `show(root, ctx, ...params)`, which draws into `root` and may return
// a function that stops its timers when the user leaves the page.
import { api, login, logout, loggedIn, whenLoggedOut } from './api.js';
import { h, put, notice, errorText, field } from './ui.js';
import * as devices from './devices.js';
import * as detail from './detail.js';
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
  { path: 'history', title: 'Exports', needs: 'DATA_EXPORT', mod: historyPage },
  { path: 'schedules', title: 'Schedules', needs: 'DATA_EXPORT', mod: schedules },
  { path: 'admin', title: 'Admin', needs: ['USER_MANAGE', 'AUDIT_READ', 'SYSTEM_CONFIG'], mod: admin },
];
const allowed = (p) => [].concat(p.needs).some(ctx.can);

function showLogin(message) {
  if (leave) { leave(); leave = null; }
  ctx.me = null;
  put(nav);
  put(who);
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

function drawNav(current) {
  put(nav, PAGES.filter(allowed).map((p) =>
    h('a', { href: `#/${p.path}`, 'aria-current': p.path === current ? 'page' : null }, p.title)));
  put(who,
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
